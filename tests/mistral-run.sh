#!/bin/sh
# mistral-run.sh: the offline runner's fixed interface, end to end.
#
# Runs the built client/mistral-run on the shared fixtures and on random
# models from tests/mkmodel, and checks what a user or a script relies on:
# tokenizer output, greedy ids, --logits against llama.cpp's, chunked and
# windowed runs, --info/--json, and one-line errors with exit status 1 or 2.

: "${top_builddir:=.}"
: "${MISTRAL_FIXTURES:=../shared/fixtures}"
RUN="$top_builddir/client/mistral-run"
MK="$top_builddir/tests/mkmodel"
FX="$MISTRAL_FIXTURES"
T=$(mktemp -d /tmp/mistral-run.XXXXXX)
trap 'rm -rf "$T"' EXIT
n=0
fail=0

ok() {	# ok COND-EXIT-STATUS DESCRIPTION
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		fail=1
	fi
}

skip() {
	n=$((n + 1))
	echo "ok $n # SKIP $1"
}

# Compare two float32 files: rows x vocab, max abs diff <= tol.
cmp_logits() {
	python3 - "$1" "$2" "$3" <<'EOF'
import struct, sys
a = open(sys.argv[1], 'rb').read()
b = open(sys.argv[2], 'rb').read()
tol = float(sys.argv[3])
if len(a) != len(b) or len(a) == 0:
    print("# sizes differ: %d vs %d" % (len(a), len(b)))
    sys.exit(1)
fa = struct.unpack('<%df' % (len(a) // 4), a)
fb = struct.unpack('<%df' % (len(b) // 4), b)
m = max(abs(x - y) for x, y in zip(fa, fb))
print("# max abs diff %.3g" % m)
sys.exit(0 if m <= tol else 1)
EOF
}

# ---- errors: one line on stderr, status 1 or 2 ----
"$RUN" >/dev/null 2>"$T/err"; rc=$?
ok $([ $rc -eq 2 ] && [ "$(wc -l <"$T/err")" -eq 1 ]; echo $?) "no model: exit 2, one line ($(cat "$T/err"))"
"$RUN" -m /nonexistent.gguf -p hi >/dev/null 2>"$T/err"; rc=$?
ok $([ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ] && grep -q nonexistent "$T/err"; echo $?) "missing model file: exit 1, names the path"
"$RUN" -m x --bogus >/dev/null 2>"$T/err"; rc=$?
ok $([ $rc -eq 2 ]; echo $?) "unknown option: exit 2"
"$RUN" -m x --temp abc >/dev/null 2>"$T/err"; rc=$?
ok $([ $rc -eq 2 ]; echo $?) "nonsense value: exit 2 ($(cat "$T/err"))"
printf 'GGUF\003\000\000\000garbage' >"$T/bad.gguf"
"$RUN" -m "$T/bad.gguf" -p hi >/dev/null 2>"$T/err"; rc=$?
ok $([ $rc -eq 1 ] && [ "$(wc -l <"$T/err")" -eq 1 ]; echo $?) "corrupt model: exit 1, one line ($(cat "$T/err"))"

# ---- random models ----
"$MK" -o "$T/dense.gguf" --dim 64 --layers 2 --heads 4 --kv-heads 2 --ffn 128 --vocab 400 --seed 7 >/dev/null 2>&1
ok $? "mkmodel writes a random dense model"
"$RUN" -m "$T/dense.gguf" -p "" >/dev/null 2>"$T/err"; rc=$?
ok $([ $rc -eq 2 ]; echo $?) "empty prompt: exit 2 ($(cat "$T/err"))"
"$RUN" -m "$T/dense.gguf" --info >"$T/info" 2>&1
ok $? "--info prints the model summary"
grep -q "window:" "$T/info" && grep -q "layers" "$T/info"; ok $? "summary names the window and the shape"
"$RUN" -m "$T/dense.gguf" --info --json | python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["layers"]==2 and d["vocab"]==400 and d["mode"] in ("exact","evicting") else 1)'
ok $? "--info --json is JSON with the shape"
"$RUN" -m "$T/dense.gguf" --ids 1,5,9,12 -n 16 --temp 0 --print-ids -q >"$T/g1" 2>/dev/null
"$RUN" -m "$T/dense.gguf" --ids 1,5,9,12 -n 16 --temp 0 --print-ids -q --chunk 1 -t 1 >"$T/g2" 2>/dev/null
ok $([ -s "$T/g1" ] && [ "$(wc -w <"$T/g1")" -eq 16 ] && cmp -s "$T/g1" "$T/g2"; echo $?) "greedy ids do not depend on chunk size or threads"
"$RUN" -m "$T/dense.gguf" --ids 1,5,9,12 -n 16 --temp 0.9 --seed 42 --print-ids -q >"$T/s1" 2>/dev/null
"$RUN" -m "$T/dense.gguf" --ids 1,5,9,12 -n 16 --temp 0.9 --seed 42 --print-ids -q >"$T/s2" 2>/dev/null
ok $(cmp -s "$T/s1" "$T/s2"; echo $?) "same seed, same sampled output"
ids=$(python3 -c 'import random; r=random.Random(3); print(",".join(["1"]+[str(r.randrange(3,400)) for _ in range(150)]))')
"$RUN" -m "$T/dense.gguf" --ids "$ids" --logits "$T/l1" --kv-type f32 --chunk 150 -q 2>/dev/null
"$RUN" -m "$T/dense.gguf" --ids "$ids" --logits "$T/l2" --kv-type f32 --chunk 7 -q 2>/dev/null
cmp_logits "$T/l1" "$T/l2" 1e-3; ok $? "--logits: chunk 7 equals chunk 150"
"$RUN" -m "$T/dense.gguf" --ids "$ids" --logits "$T/l3" --kv-type f32 --chunk 9 --window 16 --global 2 -q 2>/dev/null
"$RUN" -m "$T/dense.gguf" --ids "$ids" --logits "$T/l4" --kv-type f32 --chunk 64 --window 16 --global 2 -q 2>/dev/null
cmp_logits "$T/l3" "$T/l4" 1e-3; ok $? "--window 16 --global 2: chunked logits agree"
cmp_logits "$T/l1" "$T/l3" 1e-3 >/dev/null; ok $([ $? -ne 0 ]; echo $?) "a 16-token window changes late logits (the window is applied)"
"$RUN" -m "$T/dense.gguf" -p "hello world, hello" -n 8 --temp 0 -q >"$T/text" 2>/dev/null
ok $? "text prompt generates"
printf 'the cat sat on the mat. the dog sat on the log. ' >"$T/ppl.txt"
"$RUN" -m "$T/dense.gguf" --perplexity "$T/ppl.txt" --ctx 16 -q >"$T/ppl" 2>/dev/null
grep -q "^perplexity: [0-9]" "$T/ppl"; ok $? "--perplexity prints a perplexity ($(cat "$T/ppl"))"

# ---- fixtures ----
if [ -f "$FX/stories260K/stories260K.gguf" ]; then
	"$RUN" -m "$FX/stories260K/stories260K.gguf" --ids 1 -n 256 --temp 0 --kv-type f32 --print-ids -q >"$T/st" 2>/dev/null
	ok $([ -s "$T/st" ] && [ "$(cat "$T/st")" = "$(cat "$FX/stories260K/stories260K.greedy256.txt")" ]; echo $?) "stories260K: 256 greedy ids equal llama2.c's"
	seq=$(tr ' ' ',' <"$FX/seq64.txt" | tr -d '\n')
	"$RUN" -m "$FX/dense/dense-f32.gguf" --ids "$seq" --logits "$T/d" --kv-type f32 -q 2>/dev/null
	cmp_logits "$T/d" "$FX/dense/dense-f32.logits.bin" 1e-3; ok $? "dense-f32 --logits equal llama.cpp's within 1e-3"
	v="$FX/vocab/ggml-vocab-llama-spm.gguf"
	python3 - "$v.inp" "$T" <<'EOF'
import sys
data = open(sys.argv[1], 'rb').read().split(b'\n__ggml_vocab_test__\n')
for i, s in enumerate(data[:-1] if data[-1] == b'' else data):
    open('%s/inp.%d' % (sys.argv[2], i), 'wb').write(s)
EOF
	bad=0; i=0
	while [ -f "$T/inp.$i" ]; do
		line=$(sed -n "$((i + 1))p" "$v.out")
		got=$("$RUN" -m "$v" --tokenize --no-bos -f "$T/inp.$i" 2>/dev/null)
		[ "$(echo $got)" = "$(echo $line)" ] || { bad=$((bad + 1)); echo "# vector $i: got '$got' want '$line'"; }
		i=$((i + 1))
	done
	ok $([ $i -gt 40 ] && [ $bad -eq 0 ]; echo $?) "--tokenize -f on a vocabulary-only GGUF reproduces all $i test vectors"
	got=$("$RUN" -m "$v" --tokenize -p "Hello" 2>/dev/null)
	ok $([ "$got" = "1 15043" ]; echo $?) "--tokenize adds BOS unless --no-bos ($got)"
else
	skip "../shared/fixtures is absent"
fi

echo "1..$n"
exit $fail
