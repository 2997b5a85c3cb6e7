#!/usr/bin/env python3
"""t-daemon-uid.py: another uid cannot reach a user's sessions.

Run as root: the daemon's socket is 0660, so a uid outside its group
cannot even connect; with socket-group set to that uid's group it can
connect, but the first uid's sessions do not exist for it (list, get,
chat, set, delete, fork, cancel), it cannot list everyone's, and its own
sessions are its own.  Root (the admin) sees everything.  Then two
ordinary members of the group (nobody and an unused uid): the second
cannot see, read, change, cancel or delete the first's sessions, even
while the first runs a turn.  Session ids are 128 random bits, and the
state directory and database are private (0700, 0600).  The other uids
run through setpriv(1).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import grp
import json
import pwd
import shutil
import signal
import stat
import subprocess
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

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


def other_cmd(sock, calls, uid=None):
    return ["setpriv", "--reuid=%d" % (nobody.pw_uid if uid is None
                                       else uid),
            "--regid=%d" % nobody.pw_gid, "--clear-groups",
            PYTHON, "-s", "-c", AS_OTHER, sock, json.dumps(calls)]


def as_other(sock, calls, uid=None):
    r = subprocess.run(other_cmd(sock, calls, uid), capture_output=True,
                       text=True, cwd="/")
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

# 3. Two ordinary members of the socket's group: the second cannot see,
# read, change, cancel or delete the first's sessions, even while one of
# them is running a turn.
used = {p.pw_uid for p in pwd.getpwall()}
second = next(u for u in range(54321, 60000) if u not in used)
out = as_other(d.sock, [["session.create", {"name": "mine"}],
                        ["chat", {"session": "mine", "text": "hello",
                                  "params": {"temperature": 0,
                                             "max_tokens": 4}}]])
t.ok(out is not None and out[1][0] is None,
     "nobody, a member of the group, has a session of its own")
oid = out[0][1]["id"] if out else "0" * 32
# nobody starts a long turn on it and, meanwhile, the second uid tries.
runner = subprocess.Popen(other_cmd(d.sock, [
    ["chat", {"session": "mine", "text": "go on",
              "params": {"temperature": 0, "max_tokens": 3000}}],
    ["session.get", {"session": "mine"}]]), stdout=subprocess.PIPE,
    text=True, cwd="/")
end = time.time() + 10
while time.time() < end and c.call("status")["sessions"]["active"] == 0:
    time.sleep(0.01)
out = as_other(d.sock, [
    ["session.list", None],
    ["session.get", {"session": oid}],
    ["session.get", {"session": "mine"}],
    ["session.get", {"session": oid[:8]}],
    ["chat", {"session": oid, "text": "hi"}],
    ["generate", {"session": oid, "prompt": "hi"}],
    ["session.set", {"session": oid, "system": "be evil"}],
    ["session.fork", {"session": oid}],
    ["session.export", {"session": oid}],
    ["cancel", {"session": oid}],
    ["session.delete", {"session": oid}],
    ["cancel", {"request": 1}],
    ["session.list", {"all": True}],
], uid=second)
res = json.loads(runner.communicate(timeout=120)[0])
t.ok(out is not None and len(out) == 13, "a second non-root uid's client "
     "ran while the first's turn was running")
if out is not None and len(out) == 13:
    t.ok(out[0][1] == {"sessions": []}, "it lists none of the first's")
    t.ok(all(code(out[i]) == 7 for i in range(1, 11)),
         "get by id, name and prefix, chat, generate, set, fork, export, "
         "cancel and delete: NO_SUCH_SESSION (%s)"
         % [code(out[i]) for i in range(1, 11)])
    t.ok(code(out[11]) == 15 and code(out[12]) == 10,
         "it cannot cancel by request id (requests are per connection) "
         "nor list everyone's")
t.ok(res[0][0] is None and res[0][1]["finish"] == "length"
     and res[1][1]["system"] == "" and len(res[1][1]["messages"]) == 4,
     "the first uid's turn ran to its end, its session unchanged")

# 4. Session ids are 128 random bits: 32 lowercase hex digits, distinct,
# with about as many 1 bits as 0 bits.
ids = [c.call("session.create")["id"] for _ in range(200)]
ones = sum(bin(int(i, 16)).count("1") for i in ids)
t.ok(all(len(i) == 32 and all(ch in "0123456789abcdef" for ch in i)
         for i in ids) and len(set(ids)) == 200
     and len({i[:8] for i in ids}) == 200,
     "session ids are 32 hex digits (128 bits), all distinct")
t.ok(abs(ones - 200 * 64) < 600, "and look random: %d of %d bits set"
     % (ones, 200 * 128))
mode_dir = stat.S_IMODE(os.stat(d.state).st_mode)
mode_db = stat.S_IMODE(os.stat(os.path.join(d.state, "mistrald.db")).st_mode)
t.ok(mode_dir == 0o700 and mode_db == 0o600,
     "the state directory is 0700 and the database 0600 (%o, %o)"
     % (mode_dir, mode_db))
c.close()
rc, _ = d.stop()
t.ok(rc == 0, "clean stop")
shutil.rmtree(tmp, ignore_errors=True)
t.done()
