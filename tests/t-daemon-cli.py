#!/usr/bin/env python3
"""t-daemon-cli.py: running mistrald: options, configuration, the socket,
systemd's protocols, the demo model and SIGHUP.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import shutil
import signal
import socket
import subprocess
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

t = rpc.Tap()
signal.alarm(240)
tmp = rpc.tmpdir()
exe = os.path.join(rpc.builddir(), "daemon", "mistrald")
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "9")


def run(*args, env=None, timeout=30):
    e = dict(os.environ)
    if env:
        e.update(env)
    return subprocess.run([exe] + list(args), capture_output=True,
                          text=True, timeout=timeout, env=e)


def write(path, text):
    with open(path, "w") as f:
        f.write(text)
    return path


r = run("--version")
t.ok(r.returncode == 0 and r.stdout.startswith("mistrald "), "--version")
r = run("--help")
t.ok(r.returncode == 0 and "-m, --model=MODEL" in r.stdout
     and "--max-prompt-tokens=N" in r.stdout and "--kv-budget=SIZE"
     in r.stdout, "--help lists every setting as a long option")
r = run("--no-such-option")
t.ok(r.returncode == 1 and "unknown option" in r.stderr,
     "an unknown option is an error")

conf = write(os.path.join(tmp, "a.conf"),
             "# comment\n\nmax-tokens = 5\nfrobnicate = 1\n")
r = run("-c", conf, "-m", model, "-f")
t.ok(r.returncode == 1 and "a.conf:4: unknown key \"frobnicate\"" in
     r.stderr, "an unknown key names the file and line")
conf = write(os.path.join(tmp, "b.conf"), "kv-budget = lots\n")
r = run("-c", conf, "-m", model, "-f")
t.ok(r.returncode == 1 and "b.conf:1: kv-budget: bad value" in r.stderr,
     "a bad value names the file, line and key")
conf = write(os.path.join(tmp, "c.conf"), "chunk = 0\n")
r = run("-c", conf, "-m", model, "-f")
t.ok(r.returncode == 1 and "out of range" in r.stderr,
     "an out-of-range value is an error")
r = run("-c", os.path.join(tmp, "missing.conf"), "-m", model, "-f")
t.ok(r.returncode == 1 and "missing.conf" in r.stderr,
     "a named configuration file must exist")

long = os.path.join(tmp, "x" * 120, "s.sock")
r = run("-f", "-m", model, "-s", long, "-d", os.path.join(tmp, "st0"))
t.ok(r.returncode == 1 and "the limit is 107" in r.stderr,
     "a socket path over sun_path is refused, not truncated")

# A configuration file with the command line on top; SIGHUP reloads.
conf = write(os.path.join(tmp, "d.conf"),
             "max-tokens = 5\nlog-level = info\nmax-sessions-per-uid = 3\n")
d = rpc.Daemon(tmp, model, "-c", conf, "--max-tokens=7")
d.start()
c = d.client()
c.call("session.create", {"name": "x"})
try:
    c.call("chat", {"session": "x", "text": "hi",
                    "params": {"max_tokens": 8}})
    t.ok(False, "the command line overrides the file")
except rpc.RpcError as e:
    t.ok(e.code == 12 and "limit of 7" in e.message,
         "the command line overrides the file (%s)" % e.message)
t.ok("OpenBLAS kernels:" in d.logtext(), "the OpenBLAS core is logged")

# Another daemon on a live socket is refused.
r = run("-f", "-m", model, "-s", d.sock, "-d", os.path.join(tmp, "other"))
t.ok(r.returncode == 1 and "already listening" in r.stderr,
     "a second daemon on a live socket is refused")

write(conf, "max-tokens = 5\nmax-sessions-per-uid = 1\n")
d.proc.send_signal(signal.SIGHUP)
time.sleep(0.5)
try:
    c.call("session.create", {"name": "y"})
    t.ok(False, "SIGHUP reloads the limits")
except rpc.RpcError as e:
    t.ok(e.code == 12, "SIGHUP reloads the limits")
try:
    c.call("chat", {"session": "x", "text": "hi",
                    "params": {"max_tokens": 8}})
except rpc.RpcError as e:
    t.ok("limit of 7" in e.message,
         "after SIGHUP the command line still wins")
c.close()
rc, _ = d.stop()
t.ok(rc == 0 and not os.path.exists(d.sock),
     "a clean exit removes the socket it bound")

# A stale socket (a daemon killed with -9) is detected and replaced.
st = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
st.bind(d.sock)
st.close()
d = rpc.Daemon(tmp, model)
d.start()
t.ok(d.alive(), "a stale socket is replaced")
d.stop()

# Readiness through NOTIFY_SOCKET, path and abstract forms.
for kind in ("path", "abstract"):
    n = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    if kind == "path":
        addr = os.path.join(tmp, "notify")
        n.bind(addr)
        env_addr = addr
    else:
        addr = "\0mistrald-test-%d" % os.getpid()
        n.bind(addr)
        env_addr = "@" + addr[1:]
    n.settimeout(20)
    d = rpc.Daemon(tmp, model, env={"NOTIFY_SOCKET": env_addr})
    d.start()
    got = []
    try:
        while not any("READY=1" in g for g in got):
            got.append(n.recv(4096).decode())
    except socket.timeout:
        pass
    t.ok(any("READY=1" in g for g in got) and any("STATUS=" in g
                                                  for g in got),
         "NOTIFY_SOCKET (%s): READY=1 and STATUS" % kind)
    d.proc.send_signal(signal.SIGTERM)
    try:
        while not any("STOPPING=1" in g for g in got):
            got.append(n.recv(4096).decode())
    except socket.timeout:
        pass
    t.ok(any("STOPPING=1" in g for g in got),
         "NOTIFY_SOCKET (%s): STOPPING=1" % kind)
    d.stop()
    n.close()
    if kind == "path":
        os.unlink(addr)

# Socket activation: the listening socket comes as fd 3.
sa = shutil.which("systemd-socket-activate")
if sa is None:
    t.diag("systemd-socket-activate not installed; skipping")
else:
    path = os.path.join(tmp, "act.sock")
    log = open(os.path.join(tmp, "act.log"), "w")
    p = subprocess.Popen([sa, "-l", path, exe, "-f", "-m", model, "-d",
                          os.path.join(tmp, "act"), "-s",
                          os.path.join(tmp, "unused.sock")],
                         stdout=log, stderr=subprocess.STDOUT)
    ok = False
    end = time.time() + 30
    while time.time() < end and not ok:
        try:
            cl = rpc.Client(path, timeout=20)
            ok = cl.call("hello")["proto"][0] == 1
            cl.close()
        except (OSError, EOFError):
            time.sleep(0.1)
    t.ok(ok and not os.path.exists(os.path.join(tmp, "unused.sock")),
         "socket activation: serves on the socket passed as fd 3")
    p.send_signal(signal.SIGTERM)
    t.ok(p.wait(20) == 0, "socket activation: clean exit")
    log.close()

# No model: the demo model with random weights.
d = rpc.Daemon(tmp, None)
d.state = os.path.join(tmp, "demo")
d.start(timeout=120)
c = d.client()
h = c.call("hello")
t.ok(h["model"]["demo"] is True and os.path.exists(
    os.path.join(d.state, "demo-random-weights.gguf")),
     "no model: a demo model with random weights, marked demo")
t.ok("RANDOM WEIGHTS" in d.logtext(), "and the log says so loudly")
c.call("session.create", {"name": "demo"})
r, notes = c.stream("chat", {"session": "demo", "text": "hi",
                             "params": {"max_tokens": 5}})
t.ok(r["finish"] in ("length", "stop"), "the demo model chats")
c.close()
d.stop()

shutil.rmtree(tmp, ignore_errors=True)
t.done()
