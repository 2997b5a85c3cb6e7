#!/bin/sh
# bench-llamacpp.sh: llama.cpp's llama-bench on the very model files that
# `make bench` writes, so that mistrald's figures and llama.cpp's are
# measured side by side on the same machine in the same session.
#
# For each model it runs one llama-bench process (512-token prefill,
# 128-token decode) and prints the median tokens per second of each, with
# the llama.cpp build that produced them; the load average is printed
# before and after, since a busy machine moves every figure.  Medians
# rather than llama-bench's own means, as tests/bench reports medians.
#
# Then, if tests/bench's JSON is there too, a side-by-side table: per
# model, mistrald's prefill and decode against llama.cpp's, with the ratio
# and both runs' load averages.  Both decode figures start from an empty
# context (llama-bench's tg128, tests/bench's "decode_tok_s").
#
# Environment:
#   LLAMA_BENCH          path of llama-bench; unset or not executable: the
#                        comparison is skipped (exit 0)
#   BENCH_DIR            where the models are, default /var/tmp/mistrald-bench
#   BENCH_MODELS         comma list of model names (file names without
#                        .gguf), default every *.gguf in BENCH_DIR; names
#                        without a file are reported and skipped
#   BENCH_THREADS        threads, default the number of online CPUs
#   BENCH_QUICK          set: 1 repetition instead of 3
#   BENCH_LLAMACPP_JSON  output file, default bench-llamacpp.json
#   BENCH_JSON           tests/bench's output, read for the side-by-side
#                        table, default bench.json; absent: no table
#
# Exit status: 0, or 1 if llama-bench failed on a model: the loader's
# reason (its first error lines, which name the key or tensor) is printed
# and kept in that model's JSON row as "error".
#
# JSON parsing needs python3 (standard library only); Debian's
# /usr/bin/python3 is preferred when present.

if [ -z "${LLAMA_BENCH:-}" ]; then
	echo "bench-llamacpp: LLAMA_BENCH not set, llama.cpp side-by-side skipped"
	exit 0
fi
if [ ! -f "$LLAMA_BENCH" ] || [ ! -x "$LLAMA_BENCH" ]; then
	echo "bench-llamacpp: LLAMA_BENCH=$LLAMA_BENCH is not executable," \
	    "llama.cpp side-by-side skipped"
	exit 0
fi
if [ -x /usr/bin/python3 ]; then
	py=/usr/bin/python3
elif command -v python3 >/dev/null 2>&1; then
	py=python3
else
	echo "bench-llamacpp: python3 not found, llama.cpp side-by-side skipped"
	exit 0
fi

dir=${BENCH_DIR:-/var/tmp/mistrald-bench}
out=${BENCH_LLAMACPP_JSON:-bench-llamacpp.json}
threads=${BENCH_THREADS:-$(nproc 2>/dev/null || getconf _NPROCESSORS_ONLN)}
if [ -n "${BENCH_QUICK:-}" ]; then
	reps=1
else
	reps=3
fi
case $threads in
''|*[!0-9]*|0)
	echo "bench-llamacpp: BENCH_THREADS=$threads is not a positive number" >&2
	exit 1
	;;
esac

if [ -n "${BENCH_MODELS:-}" ]; then
	models=$(printf '%s\n' "$BENCH_MODELS" | tr ',' ' ')
else
	models=
	for f in "$dir"/*.gguf; do
		[ -f "$f" ] || continue
		f=${f##*/}
		models="$models ${f%.gguf}"
	done
fi
set -f	# model names are words from here on, never patterns

tmp=$(mktemp -d "${TMPDIR:-/tmp}/bench-llamacpp.XXXXXX") || exit 1
trap 'rm -rf "$tmp"' EXIT
trap 'exit 130' INT TERM
: >"$tmp/rows.jsonl"

bench_llamacpp_loadavg() {
	cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || echo unknown
}

# bench_llamacpp_row name file rc: the table line and the JSON row of one
# model from llama-bench's JSON ($tmp/run.json) and messages ($tmp/run.log).
# Returns 1 if the run failed or did not report both tests.
bench_llamacpp_row() {
	"$py" - "$1" "$2" "$3" "$tmp/run.json" "$tmp/run.log" \
	    "$tmp/rows.jsonl" <<'EOF'
import json
import re
import statistics
import sys

name, path, rc, jpath, lpath, rows = sys.argv[1:7]
row = {"model": name, "file": path}
err = None
try:
    with open(jpath) as fp:
        tests = json.load(fp) if rc == "0" else []
except (OSError, ValueError) as e:
    tests, err = [], "unreadable JSON from llama-bench: %s" % e
for t in tests:
    if t.get("n_prompt", 0) > 0 and t.get("n_gen", 0) == 0:
        key = "prefill"
    elif t.get("n_gen", 0) > 0 and t.get("n_prompt", 0) == 0:
        key = "decode"
    else:
        continue
    samples = t.get("samples_ts") or [t.get("avg_ts", 0.0)]
    row[key + "_tok_s"] = round(statistics.median(samples), 3)
    row[key + "_samples"] = samples
    row[key + "_mean"] = t.get("avg_ts")
    row[key + "_stddev"] = t.get("stddev_ts")
    for k in ("build_commit", "build_number", "cpu_info", "model_type",
              "model_size", "n_threads"):
        if k in t:
            row[k] = t[k]
if "prefill_tok_s" not in row or "decode_tok_s" not in row:
    if err is None:
        try:
            with open(lpath, errors="replace") as fp:
                lines = [l.strip() for l in fp if l.strip()]
        except OSError:
            lines = []
        # llama.cpp names the cause (a key, a tensor) in an earlier line
        # than its final "failed to load model": keep the first two,
        # leaving out the metadata dump.
        why = [l for l in lines
               if re.search(r"error|fail|invalid|wrong|mismatch", l, re.I)
               and not re.match(r"(llama_model_loader: - |print_info:)", l)]
        err = "llama-bench exit %s: %s" % (
            rc, " / ".join(why[:2]) or (lines[-1] if lines else "no message"))
    row["error"] = err
    print("%-18s FAILED  %s" % (name, err))
else:
    print("%-18s %-24s %14.2f %13.2f   %s (%s)" % (
        name, row.get("model_type", "?"), row["prefill_tok_s"],
        row["decode_tok_s"], row.get("build_commit", "?"),
        row.get("build_number", "?")))
with open(rows, "a") as fp:
    fp.write(json.dumps(row) + "\n")
sys.exit(1 if "error" in row else 0)
EOF
}

la0=$(bench_llamacpp_loadavg)
echo "llama.cpp bench: $LLAMA_BENCH, $threads threads, $reps repetitions," \
    "load average $la0"
printf '%-18s %-24s %14s %13s   %s\n' model "llama.cpp type" \
    "prefill tok/s" "decode tok/s" "llama.cpp build"
status=0
found=0
for name in $models; do
	name=${name%.gguf}
	f=$dir/$name.gguf
	if [ ! -f "$f" ]; then
		printf '%-18s skipped: %s not found (run make bench first)\n' \
		    "$name" "$f"
		continue
	fi
	found=$((found + 1))
	# -v: without it llama-bench drops the loader's messages, and with
	# them the reason a file is refused (a missing key or tensor).
	"$LLAMA_BENCH" -m "$f" -p 512 -n 128 -t "$threads" -r "$reps" \
	    -o json -v >"$tmp/run.json" 2>"$tmp/run.log"
	bench_llamacpp_row "$name" "$f" "$?" || status=1
done
la1=$(bench_llamacpp_loadavg)
if [ "$found" -eq 0 ]; then
	echo "bench-llamacpp: no model files in $dir, nothing measured"
fi

"$py" - "$tmp/rows.jsonl" "$out.tmp" "$LLAMA_BENCH" "$threads" "$reps" \
    "$la0" "$la1" <<'EOF' || exit 1
import json
import sys

rows_path, out, tool, threads, reps, la0, la1 = sys.argv[1:8]
with open(rows_path) as fp:
    rows = [json.loads(l) for l in fp if l.strip()]
doc = {"llama_bench": tool, "threads": int(threads),
       "repetitions": int(reps), "n_prompt": 512, "n_gen": 128,
       "load_before": la0, "load_after": la1, "rows": rows}
for k in ("build_commit", "build_number", "cpu_info"):
    for r in rows:
        if k in r:
            doc[k] = r[k]
            break
with open(out, "w") as fp:
    json.dump(doc, fp, indent=1)
    fp.write("\n")
EOF
mv -f "$out.tmp" "$out" || exit 1
echo "load average after: $la1; JSON in $out"

# The side-by-side table.  A missing or unreadable tests/bench JSON (a run
# cut short leaves it unterminated) costs only the table, not the status.
ours=${BENCH_JSON:-bench.json}
if [ ! -f "$ours" ]; then
	echo "bench-llamacpp: no $ours (tests/bench's JSON)," \
	    "side-by-side table skipped"
	exit $status
fi
"$py" - "$ours" "$out" <<'EOF'
import json
import os
import sys
import time

ours_path, theirs_path = sys.argv[1:3]
try:
    with open(ours_path) as fp:
        ours = json.load(fp)
    with open(theirs_path) as fp:
        theirs = json.load(fp)
except (OSError, ValueError) as e:
    print("bench-llamacpp: side-by-side table skipped: %s" % e)
    sys.exit(0)
mine = {r.get("model"): r for r in ours.get("rows", [])}
age = (time.time() - os.path.getmtime(ours_path)) / 60


def load(doc, key):
    """The three load averages; tests/bench also keeps /proc/loadavg's
    process counts."""
    return " ".join(str(doc.get(key, "?")).split()[:3])


def cell(a, b, fmt):
    """'ours / theirs (ratio)', a dash for a missing figure."""
    s = " / ".join("-" if v is None else fmt % v for v in (a, b))
    if a is not None and b:
        s += " (%.2f)" % (a / b)
    return s


print()
print("side by side, tok/s, mistrald / llama.cpp (ratio):")
print("  mistrald  %s: %s threads, load average %s .. %s, %.0f min ago" % (
    ours_path, ours.get("threads", "?"), load(ours, "load_before"),
    load(ours, "load_after"), age))
print("  llama.cpp %s: %s threads, load average %s .. %s" % (
    theirs_path, theirs.get("threads", "?"), load(theirs, "load_before"),
    load(theirs, "load_after")))
if ours.get("threads") != theirs.get("threads"):
    print("  note: the two runs used different thread counts")
print("%-18s %-26s %s" % ("model", "prefill pp512",
                          "decode tg128 (empty context)"))
for t in theirs.get("rows", []):
    name = t.get("model")
    m = mine.get(name)
    if m is None:
        print("%-18s not in %s" % (name, ours_path))
    elif "decode_after_prefill_tok_s" not in m:
        # an older tests/bench, whose decode followed a 512-token prefill
        print("%-18s %s predates the empty-context decode, rerun "
              "tests/bench" % (name, ours_path))
    else:
        print("%-18s %-26s %s%s" % (
            name,
            cell(m.get("prefill_tok_s"), t.get("prefill_tok_s"), "%.1f"),
            cell(m.get("decode_tok_s"), t.get("decode_tok_s"), "%.2f"),
            "  (llama.cpp failed)" if "error" in t else ""))
EOF
exit $status
