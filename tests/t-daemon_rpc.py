"""t-daemon_rpc.py: helpers shared by the end-to-end daemon tests.

A msgpack-RPC client written from the msgpack-RPC specification with
Debian's python3-msgpack, independent of the daemon's C code, so the wire
format is checked against the standard rather than against itself; a TAP
producer; and a way to run a private mistrald (own socket, own state
directory in a temporary directory) and stop it.

Imported by tests/t-daemon*.py through importlib (the name has a dash).
"""

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

import msgpack


class RpcError(Exception):
    def __init__(self, err):
        self.code = err.get("code") if isinstance(err, dict) else None
        self.message = err.get("message") if isinstance(err, dict) else err
        super().__init__("%s: %s" % (self.code, self.message))


class Client:
    """One connection.  Requests are [0, msgid, method, [args]]."""

    def __init__(self, path, timeout=60):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(path)
        self.unpacker = msgpack.Unpacker(raw=False, strict_map_key=False)
        self.next_id = 1
        self.pending = []          # messages read but not yet consumed

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def send_raw(self, data):
        self.sock.sendall(data)

    def send(self, method, args=None):
        msgid = self.next_id
        self.next_id += 1
        params = [args] if args is not None else []
        self.sock.sendall(msgpack.packb([0, msgid, method, params],
                                        use_bin_type=True))
        return msgid

    def read(self):
        """The next message from the daemon, or None at end of file."""
        if self.pending:
            return self.pending.pop(0)
        while True:
            for msg in self.unpacker:
                return msg
            data = self.sock.recv(65536)
            if not data:
                return None
            self.unpacker.feed(data)

    def wait(self, msgid, on_note=None):
        """Read until the response to msgid; notifications about it go to
        on_note, others are kept for later.  Returns (error, result)."""
        kept = []
        while True:
            msg = self.read()
            if msg is None:
                self.pending = kept + self.pending
                raise EOFError("connection closed before response %d"
                               % msgid)
            if msg[0] == 1 and msg[1] == msgid:
                self.pending = kept + self.pending
                return msg[2], msg[3]
            if (msg[0] == 2 and on_note is not None and msg[2]
                    and msg[2][0].get("request") == msgid):
                on_note(msg[1], msg[2][0])
                continue
            kept.append(msg)

    def call(self, method, args=None, on_note=None):
        err, res = self.wait(self.send(method, args), on_note)
        if err is not None:
            raise RpcError(err)
        return res

    def stream(self, method, args):
        """Run a streaming request: returns (result, [token notes])."""
        notes = []
        res = self.call(method, args,
                        lambda m, a: notes.append(a) if m == "token" else None)
        return res, notes


class Tap:
    def __init__(self):
        self.n = 0
        self.failed = 0

    def ok(self, cond, what):
        self.n += 1
        if not cond:
            self.failed += 1
        print("%sok %d - %s" % ("" if cond else "not ", self.n, what),
              flush=True)
        return cond

    def diag(self, what):
        for line in str(what).splitlines():
            print("# " + line, flush=True)

    def skip_all(self, why):
        print("1..0 # SKIP " + why, flush=True)
        sys.exit(0)

    def done(self):
        print("1..%d" % self.n, flush=True)
        sys.exit(1 if self.failed else 0)


def builddir():
    return os.environ.get("top_builddir", os.getcwd())


def fixture(rel):
    d = os.environ.get("MISTRAL_FIXTURES", "")
    if not d:
        src = os.environ.get("top_srcdir", ".")
        d = os.path.join(src, "..", "shared", "fixtures")
    p = os.path.join(d, rel)
    return p if os.access(p, os.R_OK) else None


def mkmodel(path, *args):
    """A random model from tests/mkmodel."""
    exe = os.path.join(builddir(), "tests", "mkmodel")
    subprocess.run([exe, "-o", path] + list(args), check=True,
                   stdout=subprocess.DEVNULL)
    return path


class Daemon:
    """A private mistrald in dir (socket dir/s.sock, state dir/state).
    One compute thread by default: the test models are tiny, and on a
    busy machine every pool barrier can cost a scheduler time slice."""

    def __init__(self, dir, model, *extra, env=None, threads=1,
                 preexec=None):
        self.dir = dir
        self.sock = os.path.join(dir, "s.sock")
        self.state = os.path.join(dir, "state")
        self.log = os.path.join(dir, "mistrald.log")
        self.model = model
        self.extra = list(extra)
        self.env = env
        self.threads = threads
        self.preexec = preexec
        self.proc = None

    def start(self, timeout=60):
        exe = os.path.join(builddir(), "daemon", "mistrald")
        args = [exe, "--foreground", "-s", self.sock, "-d", self.state,
                "-c", os.path.join(self.dir, "none.conf"),
                "--log-level=debug", "-t", str(self.threads)]
        if self.model is not None:
            args += ["-m", self.model]
        open(os.path.join(self.dir, "none.conf"), "a").close()
        env = dict(os.environ)
        if self.env:
            env.update(self.env)
        self.logf = open(self.log, "a")
        self.proc = subprocess.Popen(args + self.extra, stdout=self.logf,
                                     stderr=subprocess.STDOUT, env=env,
                                     preexec_fn=self.preexec)
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError("mistrald exited with %d:\n%s"
                                   % (self.proc.returncode, self.logtext()))
            try:
                c = Client(self.sock, timeout=5)
                c.close()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("mistrald did not start:\n" + self.logtext())

    def client(self, timeout=60):
        return Client(self.sock, timeout)

    def logtext(self):
        try:
            with open(self.log) as f:
                return f.read()
        except OSError:
            return ""

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def stop(self, sig=signal.SIGTERM, timeout=30):
        """Signal the daemon; returns (exit code, seconds) or (None, t)."""
        if self.proc is None:
            return None, 0
        t0 = time.time()
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            rc = None
        self.logf.close()
        self.proc = None
        return rc, time.time() - t0


def tmpdir():
    return tempfile.mkdtemp(prefix="t-daemon.")
