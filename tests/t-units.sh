#!/bin/sh
# t-units.sh: the systemd units, the sysusers.d file and the example
# configuration, checked offline (no systemd as PID 1 is needed).
#
# systemd-analyze verify exits 0 even for unknown keys and values it cannot
# parse (PLATFORM.md 3), so any output at all is a failure here; a planted
# bogus key proves the check can fail on this systemd.  The exposure score
# of systemd-analyze security is printed and must stay at or below
# MAX_EXPOSURE.  The units must agree with each other, with the sysusers
# file and with the protocol's system socket path, and the example
# configuration must list exactly the daemon's settings and parse.

: "${top_builddir:=.}"
: "${top_srcdir:=.}"
MAX_EXPOSURE=2.0
SERVICE="$top_builddir/systemd/mistrald.service"
SERVICE_IN="$top_srcdir/systemd/mistrald.service.in"
SOCKET="$top_srcdir/systemd/mistrald.socket"
SYSUSERS="$top_srcdir/systemd/mistrald.sysusers"
EXAMPLE="$top_srcdir/etc/mistrald.conf"
DAEMON="$top_builddir/daemon/mistrald"
n=0
fail=0

ok() {	# ok STATUS DESCRIPTION
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

diag() {	# diag TEXT: every line prefixed with "# "
	printf '%s\n' "$1" | sed 's/^/# /'
}

# The value of KEY= in a unit file (the last one, as systemd would take).
unit_get() {
	sed -n "s/^$2=//p" "$1" | tail -n 1
}

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-analyze is not installed (package systemd)"
	exit 0
fi
if [ ! -f "$SERVICE" ]; then
	echo "Bail out! $SERVICE was not generated (make check builds it)"
	exit 1
fi

T=$(mktemp -d /tmp/t-units.XXXXXX) || exit 1
trap 'rm -rf "$T"' EXIT

# --- the generated service ---------------------------------------------
grep -n '@[A-Za-z_]*@' "$SERVICE" >"$T/left" 2>&1
ok $((! $?)) "every @variable@ of mistrald.service.in was substituted"
[ -s "$T/left" ] && diag "$(cat "$T/left")"

exec_start=$(unit_get "$SERVICE" ExecStart)
case "$exec_start" in
/*/mistrald\ *--foreground*) r=0 ;;
*) r=1 ;;
esac
ok $r "ExecStart runs an absolute path to mistrald in the foreground"
diag "ExecStart=$exec_start"

# Verify copies side by side (Requires= names the socket unit), with
# ExecStart pointing at the built daemon: verify checks that it exists.
mkdir "$T/units" "$T/bad"
bin="$(cd "$top_builddir" && pwd)/daemon/mistrald"
if [ ! -x "$bin" ]; then
	diag "daemon/mistrald is not built: verifying with ExecStart=/bin/true"
	bin=/bin/true
fi
sed "s|^ExecStart=[^ ]*|ExecStart=$bin|" "$SERVICE" >"$T/units/mistrald.service"
cp "$SOCKET" "$T/units/mistrald.socket"
out=$(cd "$T/units" && systemd-analyze verify --man=no \
    ./mistrald.socket ./mistrald.service 2>&1)
r=$?
[ $r -eq 0 ] && [ -z "$out" ]
ok $? "systemd-analyze verify accepts both units without a word"
[ -n "$out" ] && diag "$out"

# The same check must notice a key systemd does not know.
cp "$T/units/mistrald.socket" "$T/bad/mistrald.socket"
sed 's/^\[Service\]$/[Service]\nNotAKnownKey=yes/' \
    "$T/units/mistrald.service" >"$T/bad/mistrald.service"
out=$(cd "$T/bad" && systemd-analyze verify --man=no \
    ./mistrald.socket ./mistrald.service 2>&1)
[ -n "$out" ]
ok $? "verify's output reveals an unknown key (so the check above can fail)"

# --- hardening ------------------------------------------------------------
out=$(cd "$T/units" && systemd-analyze security --offline=true --no-pager \
    ./mistrald.service 2>&1)
score=$(printf '%s\n' "$out" |
    sed -n 's/.*Overall exposure level for mistrald.service: \([0-9.]*\).*/\1/p')
if [ -z "$score" ]; then
	ok 1 "systemd-analyze security --offline scores the service"
	diag "$out"
else
	diag "systemd-analyze security --offline: exposure $score (0 is best, 10 worst)"
	awk -v s="$score" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(s <= m) }'
	ok $? "exposure $score is at most $MAX_EXPOSURE"
fi

# Each hardening directive has its own comment on the line above.
awk '
	/^(UMask|NoNewPrivileges|CapabilityBoundingSet|AmbientCapabilities|Protect[A-Za-z]+|Private[A-Za-z]+|Restrict[A-Za-z]+|IPAddressDeny|RemoveIPC|LockPersonality|MemoryDenyWriteExecute|SystemCall[A-Za-z]+|ProcSubset|ReadOnlyPaths|BindReadOnlyPaths)=/ {
		if (prev !~ /^#/) { print FILENAME ":" NR ": " $0; bad = 1 }
	}
	{ prev = $0 }
	END { exit bad }' "$SERVICE_IN" >"$T/nocomment"
ok $? "every hardening line of the service is commented"
[ -s "$T/nocomment" ] && diag "$(cat "$T/nocomment")"

for kv in NoNewPrivileges=yes ProtectSystem=strict ProtectHome=yes \
    PrivateTmp=yes PrivateDevices=yes PrivateNetwork=yes \
    RestrictAddressFamilies=AF_UNIX MemoryDenyWriteExecute=yes \
    SystemCallFilter=@system-service CapabilityBoundingSet=; do
	key=${kv%%=*}
	grep -qx "$kv" "$SERVICE"
	ok $? "the service sets $kv"
done

# A private user namespace would map every client uid to "nobody", and
# sessions belong to the uid the kernel reports for a connection.
v=$(unit_get "$SERVICE" PrivateUsers)
case "$v" in
yes|true|on|1) r=1 ;;
*) r=0 ;;
esac
ok $r "PrivateUsers= stays off (client uids must stay distinct)"

# --- the units agree with each other --------------------------------------
[ "$(unit_get "$SERVICE" Type)" = notify ] &&
    [ "$(unit_get "$SERVICE" NotifyAccess)" = main ]
ok $? "Type=notify with NotifyAccess=main"
case "$(unit_get "$SERVICE" ExecReload)" in
*kill\ -HUP\ \$MAINPID*) r=0 ;;
*) r=1 ;;
esac
ok $r "ExecReload sends SIGHUP to the main process"
[ "$(unit_get "$SERVICE" Restart)" = on-failure ]
ok $? "Restart=on-failure"
[ "$(unit_get "$SERVICE" StateDirectory)" = mistrald ]
ok $? "StateDirectory=mistrald"
grep -qx 'Environment=OPENBLAS_NUM_THREADS=1' "$SERVICE"
ok $? "OpenBLAS is kept to one thread per call"
grep -q '^Requires=mistrald.socket' "$SERVICE" &&
    grep -q '^After=mistrald.socket' "$SERVICE"
ok $? "the service requires and follows mistrald.socket"

listen=$(unit_get "$SOCKET" ListenStream)
proto=$(sed -n 's/^#define[	 ]*PROTO_SOCKET_SYSTEM[	 ]*"\([^"]*\)".*/\1/p' \
    "$top_srcdir/proto/protocol.h")
[ -n "$listen" ] && [ "$listen" = "$proto" ]
ok $? "the socket unit listens where clients look ($proto)"
[ "$(unit_get "$SOCKET" SocketMode)" = 0660 ]
ok $? "the socket is mode 0660"
[ "$(unit_get "$SOCKET" RemoveOnStop)" = yes ] &&
    [ "$(unit_get "$SOCKET" DirectoryMode)" = 0755 ]
ok $? "RemoveOnStop=yes and DirectoryMode=0755"

# The RuntimeDirectory= trap: a service RuntimeDirectory= naming the
# socket's directory deletes the socket whenever the service stops.
sockdir=$(basename "$(dirname "$listen")")
rtdir=$(unit_get "$SERVICE" RuntimeDirectory)
preserve=$(unit_get "$SERVICE" RuntimeDirectoryPreserve)
case " $rtdir " in
*" $sockdir "*) [ "$preserve" = yes ] ;;
*) true ;;
esac
ok $? "the service's RuntimeDirectory= cannot remove the socket's directory"

user=$(awk '$1 == "u" { print $2; exit }' "$SYSUSERS")
[ -n "$user" ] && [ "$(unit_get "$SERVICE" User)" = "$user" ] &&
    [ "$(unit_get "$SERVICE" Group)" = "$user" ] &&
    [ "$(unit_get "$SOCKET" SocketGroup)" = "$user" ]
ok $? "User=, Group= and SocketGroup= are the sysusers user and group ($user)"

# --- sysusers.d -----------------------------------------------------------
if command -v systemd-sysusers >/dev/null 2>&1; then
	mkdir "$T/root"
	out=$(systemd-sysusers --root="$T/root" --dry-run "$SYSUSERS" 2>&1)
	r=$?
	diag "$out"
	[ $r -eq 0 ] &&
	    printf '%s\n' "$out" | grep -q "Creating group '$user'" &&
	    printf '%s\n' "$out" | grep -q "Creating user '$user'" &&
	    ! printf '%s\n' "$out" | grep -qi 'warn\|fail\|error\|ignor'
	ok $? "systemd-sysusers --dry-run creates user and group $user cleanly"
else
	skip "systemd-sysusers is not installed"
fi

# --- the example configuration -------------------------------------------
if [ ! -x "$DAEMON" ]; then
	skip "daemon/mistrald is not built: example keys not compared"
	skip "daemon/mistrald is not built: example not parsed"
	skip "daemon/mistrald is not built: error positions not checked"
else
	"$DAEMON" --help >"$T/help" 2>&1
	sed -n 's/.*--\([a-z][a-z0-9-]*\).*/\1/p' "$T/help" |
	    grep -v -x -e config -e foreground -e help -e version |
	    sort -u >"$T/keys.daemon"
	sed -n 's/^#\([a-z][a-z0-9-]*\) = .*/\1/p' "$EXAMPLE" |
	    sort >"$T/keys.example"
	diff "$T/keys.daemon" "$T/keys.example" >"$T/keys.diff"
	r=$?
	[ -s "$T/keys.daemon" ] && [ $r -eq 0 ] &&
	    [ -z "$(uniq -d "$T/keys.example")" ]
	ok $? "etc/mistrald.conf shows every setting of mistrald --help once"
	[ -s "$T/keys.diff" ] && diag "< daemon, > example:
$(cat "$T/keys.diff")"

	# Uncommented, the example must parse.  The file is read before
	# the command line is applied, so an out-of-range --chunk stops
	# the daemon right after a successful parse, before it starts.
	sed 's/^#\([a-z][a-z0-9-]*\) = /\1 = /' "$EXAMPLE" >"$T/example.conf"
	out=$(timeout 20 "$DAEMON" -f -c "$T/example.conf" --chunk=0 2>&1)
	r=$?
	[ $r -eq 1 ] && printf '%s\n' "$out" | grep -q 'chunk' &&
	    ! printf '%s\n' "$out" | grep -q 'example.conf:'
	ok $? "the example configuration, uncommented, parses"
	[ $r -ne 1 ] && diag "$out"

	printf 'window = 8192\nwindw = 5\n' >"$T/typo.conf"
	out=$(timeout 20 "$DAEMON" -f -c "$T/typo.conf" 2>&1)
	r=$?
	printf 'kv-budget = lots\n' >"$T/bad.conf"
	out2=$(timeout 20 "$DAEMON" -f -c "$T/bad.conf" 2>&1)
	r2=$?
	[ $r -eq 1 ] && printf '%s\n' "$out" | grep -q 'typo.conf:2:.*windw' &&
	    [ $r2 -eq 1 ] && printf '%s\n' "$out2" | grep -q 'bad.conf:1:.*kv-budget'
	ok $? "an unknown key or a bad value stops the daemon, naming file and line"
	diag "$(printf '%s\n%s\n' "$out" "$out2" | grep 'conf:')"
fi

echo "1..$n"
exit $fail
