#!/bin/sh
# t-activation.sh: the daemon as systemd runs it, without systemd as PID 1.
#
# systemd-socket-activate plays mistrald.socket: it listens on a private
# path and starts daemon/mistrald on the first connection, passing the
# socket (LISTEN_FDS) and the environment the unit would give
# (NOTIFY_SOCKET, STATE_DIRECTORY, OPENBLAS_NUM_THREADS), with the same
# arguments as the unit's ExecStart.  A datagram socket bound here plays
# the service manager's notify socket.  Checked:
#
#  1. a connection made before the daemon is ready is answered once the
#     model is loaded; READY=1 comes after STATUS= lines (and
#     EXTEND_TIMEOUT_USEC=) sent while loading; hello and the built client
#     work through the passed socket; the state goes to $STATE_DIRECTORY;
#  2. SIGTERM (systemctl stop) gives STOPPING=1 and exit status 0, leaves
#     the socket file that the daemon did not create, and loses nothing:
#     after a new activation the session and its turn are still there;
#  3. SIGHUP (systemctl reload) gives RELOADING=1 then READY=1 and applies
#     a changed setting; a broken file is refused and the daemon serves on;
#  4. without --foreground it still does not fork away from its activator:
#     the process the service manager started (LISTEN_PID) is the one that
#     serves and sends READY=1 (the sender's pid comes with SO_PASSCRED),
#     it logs to standard error, and once it exits nothing serves the
#     socket any more.
#
# A feature the daemon lacks entirely is reported as SKIP naming it.  The
# protocol is spoken with a small msgpack codec below, so the test needs
# nothing but python3.

: "${top_builddir:=.}"
export top_builddir
if ! command -v python3 >/dev/null 2>&1; then
	echo "1..0 # SKIP python3 is not installed"
	exit 0
fi
if ! command -v systemd-socket-activate >/dev/null 2>&1; then
	echo "1..0 # SKIP systemd-socket-activate is not installed (package systemd)"
	exit 0
fi
if [ ! -x "$top_builddir/daemon/mistrald" ]; then
	echo "1..0 # SKIP daemon/mistrald is not built"
	exit 0
fi
exec python3 - <<'EOF'
import atexit
import os
import select
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

build = os.path.abspath(os.environ["top_builddir"])
DAEMON = os.path.join(build, "daemon", "mistrald")
CLIENT = os.path.join(build, "client", "mistral")
MKMODEL = os.path.join(build, "tests", "mkmodel")
SSA = shutil.which("systemd-socket-activate")
T = tempfile.mkdtemp(prefix="t-act.", dir="/tmp")	# short socket paths
SOCK = os.path.join(T, "mistrald.sock")
NOTIFY = os.path.join(T, "notify")
STATE = os.path.join(T, "state")
CONF = os.path.join(T, "mistrald.conf")
MODEL = os.path.join(T, "model.gguf")
n = 0
failed = False
procs = []


def ok(cond, desc, detail=None):
    global n, failed
    n += 1
    print("%sok %d - %s" % ("" if cond else "not ", n, desc), flush=True)
    if not cond:
        failed = True
        if detail:
            diag(detail)
    return cond


def skip(why):
    global n
    n += 1
    print("ok %d # SKIP %s" % (n, why), flush=True)


def diag(text):
    for line in str(text).splitlines():
        print("# " + line, flush=True)


def cleanup():
    """No daemon outlives the test, however it ends."""
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
    shutil.rmtree(T, ignore_errors=True)


def finish():
    cleanup()
    print("1..%d" % n)
    sys.exit(1 if failed else 0)


atexit.register(cleanup)


# ---- msgpack, the subset the protocol uses ------------------------------

def pack(o):
    if o is None:
        return b"\xc0"
    if o is True:
        return b"\xc3"
    if o is False:
        return b"\xc2"
    if isinstance(o, int):
        if 0 <= o < 128:
            return bytes([o])
        if 0 <= o < 2 ** 64:
            return b"\xcf" + struct.pack(">Q", o)
        return b"\xd3" + struct.pack(">q", o)
    if isinstance(o, float):
        return b"\xcb" + struct.pack(">d", o)
    if isinstance(o, str):
        b = o.encode("utf-8")
        return b"\xdb" + struct.pack(">I", len(b)) + b
    if isinstance(o, (list, tuple)):
        return (b"\xdd" + struct.pack(">I", len(o)) +
                b"".join(pack(x) for x in o))
    if isinstance(o, dict):
        return (b"\xdf" + struct.pack(">I", len(o)) +
                b"".join(pack(k) + pack(v) for k, v in o.items()))
    raise TypeError(type(o))


class Incomplete(Exception):
    pass


class Reader:
    FIXED = {0xcc: "B", 0xcd: "H", 0xce: "I", 0xcf: "Q", 0xd0: "b",
             0xd1: "h", 0xd2: "i", 0xd3: "q", 0xca: "f", 0xcb: "d"}

    def __init__(self, buf):
        self.buf = buf
        self.pos = 0

    def take(self, k):
        if self.pos + k > len(self.buf):
            raise Incomplete()
        r = self.buf[self.pos:self.pos + k]
        self.pos += k
        return r

    def num(self, fmt):
        return struct.unpack(">" + fmt, self.take(struct.calcsize(fmt)))[0]

    def obj(self):
        c = self.take(1)[0]
        if c <= 0x7f:
            return c
        if c >= 0xe0:
            return c - 256
        if c & 0xf0 == 0x80:
            return self.map(c & 0x0f)
        if c & 0xf0 == 0x90:
            return [self.obj() for _ in range(c & 0x0f)]
        if c & 0xe0 == 0xa0:
            return self.take(c & 0x1f).decode("utf-8")
        if c in (0xc0, 0xc2, 0xc3):
            return {0xc0: None, 0xc2: False, 0xc3: True}[c]
        if c in self.FIXED:
            return self.num(self.FIXED[c])
        if c in (0xd9, 0xda, 0xdb):
            return self.take(self.num("BHI"[c - 0xd9])).decode("utf-8")
        if c in (0xc4, 0xc5, 0xc6):
            return self.take(self.num("BHI"[c - 0xc4]))
        if c in (0xdc, 0xdd):
            return [self.obj() for _ in range(self.num("HI"[c - 0xdc]))]
        if c in (0xde, 0xdf):
            return self.map(self.num("HI"[c - 0xde]))
        raise ValueError("unexpected msgpack byte 0x%02x" % c)

    def map(self, count):
        out = {}
        for _ in range(count):
            k = self.obj()
            out[k] = self.obj()
        return out


class Conn:
    """A msgpack-RPC connection; call() returns (error, result, notes)."""

    def __init__(self, path, timeout=30):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.buf = b""
        self.msgid = 0

    def send(self, method, args=None):
        self.msgid += 1
        self.sock.sendall(pack([0, self.msgid, method,
                                [args] if args is not None else []]))
        return self.msgid

    def next(self):
        while True:
            r = Reader(self.buf)
            try:
                o = r.obj()
                self.buf = self.buf[r.pos:]
                return o
            except Incomplete:
                pass
            d = self.sock.recv(65536)
            if not d:
                raise EOFError("the daemon closed the connection")
            self.buf += d

    def wait(self, msgid):
        notes = []
        while True:
            m = self.next()
            if m[0] == 1 and m[1] == msgid:
                return m[2], m[3], notes
            if m[0] == 2:
                notes.append(m)

    def call(self, method, args=None):
        """A lost or silent daemon gives a string error instead."""
        try:
            return self.wait(self.send(method, args))
        except (OSError, EOFError) as e:
            return "%s: %s" % (method, e or "timed out"), None, []

    def close(self):
        self.sock.close()


# ---- the service manager's side -----------------------------------------

notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
notify.bind(NOTIFY)
notify.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
seen = []	# every notify line, in order
sender = {}	# line -> pid of the process that last sent it


def notify_until(line, proc, timeout):
    """Read datagrams until one holds `line` (a whole KEY=VALUE, or a
    KEY= prefix); True if it came, False on timeout or exit."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        r, _, _ = select.select([notify], [], [], 0.1)
        if r:
            data, anc, _, _ = notify.recvmsg(65536, socket.CMSG_SPACE(12))
            lines = data.decode("utf-8", "replace").split("\n")
            seen.extend(lines)
            for level, kind, cred in anc:
                if (level == socket.SOL_SOCKET and
                        kind == socket.SCM_CREDENTIALS and len(cred) >= 12):
                    pid = struct.unpack("iII", cred[:12])[0]
                    sender.update((l, pid) for l in lines)
            if any(l == line or (line.endswith("=") and l.startswith(line))
                   for l in lines):
                return True
        elif proc.poll() is not None:
            return False
    return False


def start(tag, foreground=True):
    """Listen on SOCK and start the daemon on the first connection, as
    mistrald.socket and mistrald.service do."""
    log = open(os.path.join(T, "daemon-%s.log" % tag), "wb")
    if os.path.exists(SOCK):
        os.unlink(SOCK)
    p = subprocess.Popen(
        [SSA, "-l", SOCK, "-E", "NOTIFY_SOCKET=" + NOTIFY,
         "-E", "STATE_DIRECTORY=" + STATE, "-E", "OPENBLAS_NUM_THREADS=1",
         DAEMON] + (["--foreground"] if foreground else []) +
        ["--config=" + CONF],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
    procs.append(p)
    end = time.monotonic() + 10
    while not os.path.exists(SOCK) and time.monotonic() < end:
        time.sleep(0.02)
    return p


def log_of(tag):
    with open(os.path.join(T, "daemon-%s.log" % tag), "rb") as f:
        return f.read().decode("utf-8", "replace")[-3000:]


def stop(p, tag):
    """SIGTERM; returns (STOPPING=1 seen, exit status or None)."""
    p.send_signal(signal.SIGTERM)
    stopping = notify_until("STOPPING=1", p, 30)
    try:
        rc = p.wait(40)
    except subprocess.TimeoutExpired:
        rc = None
    return stopping, rc


if subprocess.run([MKMODEL, "-o", MODEL], stdout=subprocess.DEVNULL,
                  stderr=subprocess.STDOUT).returncode != 0:
    print("Bail out! tests/mkmodel could not write a model")
    sys.exit(1)
with open(CONF, "w") as f:
    f.write("# written by t-activation.sh\nmodel = %s\nlog-level = debug\n"
            % MODEL)

# ---- 1. activation and readiness -----------------------------------------
p = start("1")
if not os.path.exists(SOCK):
    print("Bail out! systemd-socket-activate did not create %s" % SOCK)
    finish()
c = Conn(SOCK)
early = c.send("hello", {"proto": [1, 0], "client": "t-activation"})
ready = notify_until("READY=1", p, 60)
before = seen[:seen.index("READY=1")] if "READY=1" in seen else seen[:]
diag("notify before READY=1: %s" % " | ".join(l for l in before if l))
if not seen and p.poll() is None:
    skip("the daemon sends nothing to NOTIFY_SOCKET (no sd_notify)")
    skip("the daemon sends nothing to NOTIFY_SOCKET: no STATUS=")
    skip("the daemon sends nothing to NOTIFY_SOCKET: no EXTEND_TIMEOUT_USEC=")
else:
    ok(ready, "READY=1 arrives once the model is loaded", log_of("1"))
    if any(l.startswith("STATUS=") for l in before):
        ok(True, "STATUS= lines are sent while loading")
    else:
        skip("the daemon sends no STATUS= line before READY=1")
    if any(l.startswith("EXTEND_TIMEOUT_USEC=") for l in before):
        ok(True, "EXTEND_TIMEOUT_USEC= is sent while loading")
    else:
        skip("the daemon sends no EXTEND_TIMEOUT_USEC= while loading")
if p.poll() is not None:
    ok(False, "the daemon runs under systemd-socket-activate", log_of("1"))
    finish()

try:
    err, res, _ = c.wait(early)
except (socket.timeout, EOFError) as e:
    err, res = str(e), None
if isinstance(err, str) and p.poll() is None:
    skip("the daemon does not serve the socket passed in LISTEN_FDS "
         "(%s)" % err)
    p.kill()
    finish()
ok(err is None and res["proto"][0] == 1 and res["model"]["demo"] is False,
   "a connection made while loading is answered: hello through the "
   "passed socket, with the model named in the configuration",
   "%r %r" % (err, res))

if os.access(CLIENT, os.X_OK):
    r = subprocess.run([CLIENT, "-s", SOCK, "status"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                       timeout=30)
    out = r.stdout.decode("utf-8", "replace")
    ok(r.returncode == 0 and "model" in out,
       "mistral status works through the activated socket", out)
else:
    skip("client/mistral is not built")

err, info, _ = c.call("session.create", {"name": "kept"})
ok(err is None and info.get("name") == "kept", "session.create", err)
err, turn, notes = c.call("chat", {"session": "kept", "text": "Hello there",
                                   "params": {"max_tokens": 4}})
ok(err is None and turn.get("finish") in ("stop", "length"),
   "a chat turn completes", "%r\n%s" % (err, log_of("1")))
ok(os.path.exists(os.path.join(STATE, "mistrald.db")),
   "the database is in $STATE_DIRECTORY (StateDirectory=)",
   "state dir holds: %s" % (os.listdir(STATE) if os.path.isdir(STATE)
                            else "nothing"))

# ---- 2. stop -----------------------------------------------------------
stopping, rc = stop(p, "1")
c.close()
if rc == -signal.SIGTERM:
    skip("the daemon has no SIGTERM handler (killed by the signal)")
else:
    ok(stopping, "SIGTERM gives STOPPING=1", log_of("1"))
    ok(rc == 0, "SIGTERM gives exit status 0 (got %s)" % rc, log_of("1"))
ok(os.path.exists(SOCK),
   "the daemon leaves the socket it was passed in place")

p = start("2")
c = Conn(SOCK)
c.send("hello")
if not notify_until("READY=1", p, 60) and p.poll() is not None:
    ok(False, "the daemon starts again on the same state", log_of("2"))
    finish()
err, res, _ = c.call("session.get", {"session": "kept"})
roles = [m["role"] for m in res["messages"]] if err is None else []
ok(err is None and roles == ["user", "assistant"] and res["turns"] == 1,
   "after stop and a new activation the session and its turn are there",
   "%r %r" % (err, roles))
err, turn, _ = c.call("chat", {"session": "kept", "text": "Again",
                               "params": {"max_tokens": 3}})
ok(err is None and turn.get("finish") in ("stop", "length"),
   "the session carries on after the restart", "%r\n%s" % (err, log_of("2")))
if err is None:
    diag("cache after the restart: %s" % ("rebuilt from the transcript"
                                          if turn.get("rebuilt")
                                          else "read back from disk"))

# ---- 3. reload -----------------------------------------------------------
with open(CONF, "a") as f:
    f.write("max-tokens = 2\n")
del seen[:]
p.send_signal(signal.SIGHUP)
reloaded = notify_until("READY=1", p, 20)
if p.poll() == -signal.SIGHUP:
    skip("the daemon has no SIGHUP handler (killed by SIGHUP)")
    finish()
ok(reloaded and "RELOADING=1" in seen and
   seen.index("RELOADING=1") < seen.index("READY=1"),
   "SIGHUP gives RELOADING=1, then READY=1", " | ".join(seen))
err, turn, _ = c.call("chat", {"session": "kept", "text": "Once more",
                               "params": {"max_tokens": 3}})
ok(isinstance(err, dict) and err.get("code") == 12,
   "the reloaded max-tokens = 2 refuses max_tokens 3 (LIMIT_EXCEEDED)",
   "%r %r" % (err, turn))

with open(CONF, "a") as f:
    f.write("max-tokens = lots\n")
del seen[:]
p.send_signal(signal.SIGHUP)
notify_until("READY=1", p, 20)
alive = p.poll() is None
err, res, _ = c.call("hello") if alive else ("daemon exited", None, None)
ok(alive and err is None,
   "a broken configuration on reload leaves the daemon serving", log_of("2"))
err, turn, _ = c.call("chat", {"session": "kept", "text": "Still there?",
                               "params": {"max_tokens": 3}})
ok(isinstance(err, dict) and err.get("code") == 12,
   "... with the settings it had", "%r" % (err,))

stopping, rc = stop(p, "2")
c.close()
ok(stopping and rc == 0, "the second run stops cleanly too (exit %s)" % rc,
   log_of("2"))

# ---- 4. without --foreground -------------------------------------------
# The unit passes --foreground, but a socket-activated daemon must not
# detach even without it: a forked child would not be LISTEN_PID, and the
# service manager would lose track of the process that serves.
with open(CONF, "w") as f:
    f.write("# written by t-activation.sh\nmodel = %s\nlog-level = debug\n"
            % MODEL)
del seen[:]
sender.clear()
p = start("3", foreground=False)
c = Conn(SOCK)
c.send("hello")
ready = notify_until("READY=1", p, 60)
ok(ready and p.poll() is None and sender.get("READY=1") == p.pid,
   "without --foreground the activated process itself serves: READY=1 "
   "comes from the pid started (%d), which is still running"
   % p.pid, "READY=1 from pid %s, process %s\n%s"
   % (sender.get("READY=1"), "running" if p.poll() is None else
      "exited with %s" % p.returncode, log_of("3")))
err, res, _ = c.call("session.get", {"session": "kept"})
ok(err is None and res["turns"] == 2 and "sessions stored in" in log_of("3"),
   "it serves the same state and logs to standard error",
   "%r\n%s" % (err, log_of("3")))
stopping, rc = stop(p, "3")
c.close()
ok(stopping and rc == 0, "SIGTERM stops it (exit %s)" % rc, log_of("3"))
try:
    Conn(SOCK, timeout=2).close()
    left = True
except OSError:
    left = False
ok(not left, "and nothing is left serving the socket")
finish()
EOF
