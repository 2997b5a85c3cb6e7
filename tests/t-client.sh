#!/bin/sh
# t-client.sh: every mistral command against a real mistrald on a private
# socket and state directory: output, --json parsed, exit statuses, pipes,
# the daemon dying mid-reply, Ctrl-C on a script, and resuming after a
# restart.  Skips when daemon/mistrald has not been built.

top_builddir=${top_builddir:-.}
M=$top_builddir/client/mistral
D=$top_builddir/daemon/mistrald
PY=${PYTHON3:-python3}

if [ ! -x "$D" ] || [ ! -x "$M" ]; then
	echo "1..0 # SKIP daemon/mistrald or client/mistral is not built"
	exit 0
fi

tmp=$(mktemp -d /tmp/t-client.XXXXXX)
sock=$tmp/d.sock
dpid=
n=0
failed=0

cleanup() {
	[ -n "$wpid" ] && kill "$wpid" 2>/dev/null
	[ -n "$dpid" ] && kill -9 "$dpid" 2>/dev/null
	rm -rf "$tmp"
}
trap cleanup EXIT
trap 'exit 1' INT TERM
# A watchdog: a hung daemon fails the test instead of stalling the suite
# (killing it ends whatever client waits on it, then the trap reports).
trap 'echo "not ok - timed out after 300 s"; echo "1..$((n + 1))"; exit 1' ALRM
watchdog() {
	sleep 300
	kill -ALRM $$
	kill -9 "$(cat "$tmp/dpid")"
}
watchdog >/dev/null 2>&1 &
wpid=$!

ok() {
	n=$((n + 1))
	if [ "$1" -eq 0 ]; then
		echo "ok $n - $2"
	else
		echo "not ok $n - $2"
		failed=1
	fi
}

# check DESCRIPTION COMMAND...: ok if the command succeeds.
check() {
	what=$1
	shift
	if "$@"; then ok 0 "$what"; else ok 1 "$what"; fi
}

start_daemon() {
	"$D" --foreground -s "$sock" -d "$tmp/state" -c "$tmp/test.conf" \
	    -m "$tmp/model.gguf" >>"$tmp/mistrald.log" 2>&1 &
	dpid=$!
	echo "$dpid" >"$tmp/dpid"
	i=0
	while [ $i -lt 300 ]; do
		"$M" -s "$sock" status >/dev/null 2>&1 && return 0
		kill -0 "$dpid" 2>/dev/null || break
		sleep 0.1
		i=$((i + 1))
	done
	echo "# mistrald did not start:"
	sed 's/^/# /' "$tmp/mistrald.log" | tail -20
	return 1
}

stop_daemon() {
	kill -"${1:-TERM}" "$dpid" 2>/dev/null
	wait "$dpid" 2>/dev/null
	dpid=
}

# json FILE EXPR: evaluate a Python expression over the JSON lines of FILE
# (bound to L, a list); ok when it is true.
json() {
	$PY -c 'import json, sys
L = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
sys.exit(0 if eval("(" + sys.argv[2] + ")") else 1)' "$1" "$2"
}

# replies long enough (at several thousand tokens a second on the small
# model) to be interrupted a second in
echo "max-tokens = 200000" >"$tmp/test.conf"
"$top_builddir/tests/mkmodel" -o "$tmp/model.gguf" --seed 11 >/dev/null ||
	{ echo "1..0 # SKIP tests/mkmodel failed"; exit 0; }
start_daemon || { echo "1..1"; echo "not ok 1 - mistrald starts"; exit 1; }
MISTRALD_SOCKET=$sock
export MISTRALD_SOCKET
out=$tmp/out
err=$tmp/err

# version, help, usage errors
"$M" --version >"$out"; ok $? "--version"
grep -q "^mistral .*protocol 1\." "$out"; ok $? "--version names the protocol"
"$M" --help >"$out"; ok $? "--help"
grep -q "mistral send" "$out"; ok $? "--help lists the commands"
"$M" >/dev/null 2>&1; test $? -eq 2; ok $? "no command: exit 2"
"$M" frobnicate 2>"$err"; test $? -eq 2; ok $? "unknown command: exit 2"
"$M" rename onlyone 2>/dev/null; test $? -eq 2; ok $? "missing argument: exit 2"
"$M" new --set warmth=3 2>"$err"; test $? -eq 2; ok $? "unknown parameter: exit 2"
test "$(wc -l <"$err")" -eq 1; ok $? "... with one line on stderr"

# status
"$M" status >"$out"; ok $? "status"
grep -q "^server *mistrald" "$out"; ok $? "status names the server"
"$M" --json status >"$out"; ok $? "--json status"
json "$out" 'len(L) == 1 and "model" in L[0] and "sessions" in L[0]'
ok $? "--json status parses, with model and sessions"

# new, sessions
S=$("$M" new alpha --system "Be brief." --set max_tokens=6 --set temperature=0)
ok $? "new alpha"
echo "$S" | grep -Eq '^[0-9a-f]{16,64}$'; ok $? "new prints the id alone ($S)"
"$M" new alpha 2>"$err"; test $? -eq 1; ok $? "a second 'alpha': exit 1"
test "$(wc -l <"$err")" -eq 1 && grep -q "^mistral: " "$err"
ok $? "... one 'mistral: ' line on stderr"
"$M" sessions >"$out"; ok $? "sessions"
grep -q "^$S	alpha	" "$out"; ok $? "sessions (not a tty): tab-separated, no header"
"$M" --json sessions >"$out"; ok $? "--json sessions"
json "$out" "any(s['id'] == '$S' and s['name'] == 'alpha' and
    s['params']['max_tokens'] == 6 and s['system'] == 'Be brief.' for s in L)"
ok $? "--json sessions: id, name, params, system"

# send: arguments, stdin, pipes
"$M" send alpha Hello there >"$out" 2>"$err"; ok $? "send alpha TEXT"
test -s "$out" && test "$(tail -c1 "$out" | od -An -c | tr -d ' ')" = '\n'
ok $? "the reply is on stdout and ends with a newline"
test ! -s "$err"; ok $? "nothing on stderr"
echo "piped in" | "$M" send alpha >"$out"; ok $? "echo TEXT | send alpha"
"$M" send "$S" via pipe | cat >"$out"; ok $? "send ... | cat"
test -s "$out"; ok $? "... the reply came through the pipe"
P=$(echo "$S" | cut -c1-6)
"$M" send "$P" by prefix >/dev/null; ok $? "send to an id prefix"
"$M" --json send alpha as json >"$out"; ok $? "--json send"
json "$out" 'len(L) == 1 and L[0]["finish"] in ("stop", "length") and
    L[0]["usage"]["completion_tokens"] <= 6 and isinstance(L[0]["text"], str)'
ok $? "--json send: finish, text, usage"
"$M" --json send --set max_tokens=2 alpha short >"$out"
json "$out" 'L[0]["usage"]["completion_tokens"] <= 2'
ok $? "send --set max_tokens=2 overrides for one turn"
"$M" send nosuchsession hi 2>"$err"; test $? -eq 1
ok $? "send to an unknown session: exit 1"
"$M" send alpha </dev/null 2>/dev/null; test $? -eq 2
ok $? "send with nothing to send: exit 2"

# show
"$M" show alpha >"$out"; ok $? "show alpha"
grep -q "^>>> Hello there" "$out" && grep -q "^>>> piped in" "$out"
ok $? "show prints the transcript"
"$M" --json show alpha >"$out"; ok $? "--json show"
json "$out" '[m["role"] for m in L[0]["messages"]][:2] == ["user", "assistant"] and
    L[0]["messages"][0]["text"] == "Hello there" and L[0]["turns"] >= 6'
ok $? "--json show: messages with roles and texts, turns"

# rename, fork
"$M" rename alpha beta; ok $? "rename alpha beta"
"$M" show beta >/dev/null; ok $? "... it answers to its new name"
"$M" show alpha 2>/dev/null; test $? -eq 1; ok $? "... and not to the old one"
F=$("$M" fork beta gamma); ok $? "fork beta gamma"
test -n "$F" && test "$F" != "$S"; ok $? "fork prints a new id"
"$M" --json show gamma >"$out.g"
"$M" --json show beta >"$out.b"
$PY -c 'import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
sys.exit(0 if a["messages"] == b["messages"] else 1)' "$out.g" "$out.b"
ok $? "the fork has the same transcript"
"$M" send gamma only in the fork >/dev/null; ok $? "the fork takes a turn"
"$M" --json show beta >"$out"
json "$out" 'not any(m["text"] == "only in the fork" for m in L[0]["messages"])'
ok $? "... which the original does not see"

# export, import
"$M" export beta "$tmp/beta.json"; ok $? "export beta FILE"
$PY -c 'import json, sys
d = json.load(open(sys.argv[1]))
sys.exit(0 if d["format"] == "mistrald-session" and len(d["messages"]) >= 2 else 1)' "$tmp/beta.json"
ok $? "the export is a JSON mistrald-session document"
"$M" export beta >"$out"; ok $? "export to stdout"
I=$("$M" import --name delta "$tmp/beta.json"); ok $? "import --name delta FILE"
"$M" --json show delta >"$out.d"
$PY -c 'import json, sys
a, b = (json.load(open(f)) for f in sys.argv[1:])
t = lambda d: [(m["role"], m["text"]) for m in d["messages"]]
sys.exit(0 if t(a) == t(b) else 1)' "$out.d" "$out.b"
ok $? "the import has the exported transcript"
echo '{"format": "mistrald-session", "messages": [' >"$tmp/bad.json"
"$M" import "$tmp/bad.json" 2>"$err"; test $? -eq 1; ok $? "a broken JSON file: exit 1"
grep -q "JSON" "$err"; ok $? "... saying it is the JSON"

# generate, tokenize
"$M" generate -s gamma --set max_tokens=4 "Once upon a time" >"$out"
ok $? "generate -s SESSION PROMPT"
"$M" --json generate --set max_tokens=4 "Once upon a time" >"$out"
ok $? "generate PROMPT (one-off)"
json "$out" 'L[0]["usage"]["completion_tokens"] <= 4'; ok $? "... max_tokens honoured"
"$M" tokenize "Hello world" >"$out"; ok $? "tokenize"
test "$(wc -l <"$out")" -ge 2 && grep -Eq '^[0-9]+	' "$out"
ok $? "tokenize prints one 'ID<tab>PIECE' per token"
"$M" --json tokenize "Hello world" >"$out"
json "$out" 'len(L[0]["ids"]) >= 2'; ok $? "--json tokenize"

# rm
"$M" rm gamma delta; ok $? "rm gamma delta"
"$M" show gamma 2>/dev/null; test $? -eq 1; ok $? "... gone"
"$M" rm beta nosuchsession 2>"$err"; test $? -eq 1
ok $? "rm with one unknown session: exit 1"
"$M" show beta 2>/dev/null; test $? -eq 1; ok $? "... the known one was removed"

# Ctrl-C (SIGINT) on a long reply: cancelled, exit 130, session usable
L=$("$M" new long --set max_tokens=200000)
"$M" send long "go on and on" >"$out" 2>"$err" &
cpid=$!
sleep 1
kill -INT $cpid
wait $cpid
test $? -eq 130; ok $? "SIGINT during send: exit 130"
"$M" send --set max_tokens=3 long again >/dev/null; ok $? "... and the session takes the next turn"

# the daemon goes away mid-reply
"$M" send long "and on and on" >"$out" 2>"$err" &
cpid=$!
sleep 1
stop_daemon KILL
wait $cpid
test $? -eq 3; ok $? "daemon killed mid-reply: exit 3"
test ! -s "$out"; ok $? "... nothing half-written on stdout (not a tty)"
test "$(wc -l <"$err")" -eq 1 && grep -q "$sock" "$err"
ok $? "... one line on stderr naming the socket"

# unreachable
"$M" status 2>"$err"; test $? -eq 3; ok $? "no daemon: exit 3"
grep -q "$sock" "$err" && grep -q "mistrald" "$err"
ok $? "... the message names the socket and how to start mistrald"
"$M" -s "$tmp/elsewhere.sock" status 2>"$err"; test $? -eq 3
ok $? "-s names another socket"
grep -q "elsewhere.sock" "$err"; ok $? "... which the message names"

# restart: the sessions are still there
start_daemon; ok $? "mistrald restarts on the same state directory"
"$M" --json show long >"$out"; ok $? "show after a restart"
json "$out" 'any(m["text"] == "again" for m in L[0]["messages"])'
ok $? "... the transcript survived"
"$M" send --set max_tokens=3 long "after the restart" >/dev/null
ok $? "... and the chat continues"

stop_daemon TERM
echo "1..$n"
exit $failed
