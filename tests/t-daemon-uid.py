#!/usr/bin/env python3
"""t-daemon-uid.py: another uid cannot reach a user's sessions.

Run as root: the daemon's socket is 0660, so a uid outside its group
cannot even connect; with socket-group set to that uid's group it can
connect, but the first uid's sessions do not exist for it (list, get,
chat, set, delete, fork, cancel), it cannot list everyone's, and its own
sessions are its own.  Root (the admin) sees everything.  The second uid
runs as nobody through setpriv(1).
"""
import os
import sys

try:
    import msgpack  # noqa: F401
except ImportError:
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("1..0 # SKIP python3-msgpack is not installed")
    sys.exit(0)

import grp
import importlib.util
import json
import pwd
import shutil
import signal
import stat
import subprocess

spec = importlib.util.spec_from_file_location(
    "rpc", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "t-daemon_rpc.py"))
rpc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rpc)

t = rpc.Tap()
signal.alarm(120)
if os.getuid() != 0:
    t.skip_all("needs root to run a client as another uid")
if shutil.which("setpriv") is None:
    t.skip_all("setpriv(1) is not installed")
try:
    nobody = pwd.getpwnam("nobody")
    group = grp.getgrgid(nobody.pw_gid).gr_name
except KeyError:
    t.skip_all("no user nobody")

# The client run as nobody: executes a list of calls and prints, as JSON,
# each call's [error, result] (or ["connect", errno] if it cannot connect).
AS_OTHER = r'''
import json, socket, sys, msgpack
calls = json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(30)
try:
    s.connect(sys.argv[1])
except OSError as e:
    print(json.dumps([["connect", e.errno]]))
    sys.exit(0)
up = msgpack.Unpacker(raw=False, strict_map_key=False)
out = []
for i, (method, args) in enumerate(calls):
    s.sendall(msgpack.packb([0, i + 1, method, [args] if args else []]))
    while True:
        msg = None
        for m in up:
            msg = m
            break
        if msg is None:
            up.feed(s.recv(65536))
            continue
        if msg[0] == 1 and msg[1] == i + 1:
            out.append([msg[2], msg[3]])
            break
print(json.dumps(out))
'''


# nobody may not be able to read a python under root's home (pyenv).
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") \
    else sys.executable


def as_other(sock, calls):
    r = subprocess.run(["setpriv", "--reuid=%d" % nobody.pw_uid,
                        "--regid=%d" % nobody.pw_gid, "--clear-groups",
                        PYTHON, "-c", AS_OTHER, sock,
                        json.dumps(calls)], capture_output=True, text=True,
                       cwd="/")
    if r.returncode != 0:
        t.diag(r.stderr)
        return None
    return json.loads(r.stdout)


def code(reply):
    return reply[0]["code"] if reply and reply[0] else None


tmp = rpc.tmpdir()
os.chmod(tmp, 0o755)
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "5")
os.chmod(model, 0o644)

# 1. Without the group, the socket itself keeps nobody out.
d = rpc.Daemon(tmp, model)
d.start()
mode = stat.S_IMODE(os.stat(d.sock).st_mode)
t.ok(mode == 0o660, "the socket is created 0660 (%o)" % mode)
out = as_other(d.sock, [["hello", None]])
t.ok(out is not None and out[0][0] == "connect",
     "a uid outside the socket's group cannot connect")
d.stop()

# 2. socket-group lets nobody connect; root's sessions stay invisible.
d = rpc.Daemon(tmp, model, "--socket-group=" + group)
d.start()
t.ok(os.stat(d.sock).st_gid == nobody.pw_gid, "the socket has socket-group")
c = d.client()
mine = c.call("session.create", {"name": "private"})
c.stream("chat", {"session": "private", "text": "secret",
                  "params": {"temperature": 0, "max_tokens": 4}})
sid = mine["id"]
out = as_other(d.sock, [
    ["session.list", None],
    ["session.get", {"session": sid}],
    ["session.get", {"session": "private"}],
    ["session.get", {"session": sid[:6]}],
    ["chat", {"session": sid, "text": "hi"}],
    ["session.set", {"session": sid, "name": "stolen"}],
    ["session.fork", {"session": sid}],
    ["session.export", {"session": sid}],
    ["session.delete", {"session": sid}],
    ["cancel", {"session": sid}],
    ["session.list", {"all": True}],
    ["session.create", {"name": "private"}],
    ["session.list", None],
])
t.ok(out is not None and len(out) == 13, "the other uid's client ran")
if out is not None and len(out) == 13:
    t.ok(out[0][1] == {"sessions": []}, "list: sees none of root's")
    t.ok(all(code(out[i]) == 7 for i in range(1, 10)),
         "get by id, name and prefix, chat, set, fork, export, delete, "
         "cancel: NO_SUCH_SESSION (%s)" % [code(out[i]) for i in range(1, 10)])
    t.ok(code(out[10]) == 10, "list all: PERMISSION_DENIED")
    t.ok(out[11][0] is None and out[11][1]["owner"] == nobody.pw_uid,
         "it may create a session of its own with the same name")
    t.ok(len(out[12][1]["sessions"]) == 1, "and sees only that one")
g = c.call("session.get", {"session": "private"})
t.ok(g["id"] == sid and g["name"] == "private" and len(g["messages"]) == 2,
     "root's session is untouched")
al = c.call("session.list", {"all": True})["sessions"]
t.ok(len(al) == 2, "root (admin) lists every uid's sessions")
c.close()
rc, _ = d.stop()
t.ok(rc == 0, "clean stop")
shutil.rmtree(tmp, ignore_errors=True)
t.done()
