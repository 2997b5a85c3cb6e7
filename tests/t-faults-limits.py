#!/usr/bin/env python3
"""t-faults-limits.py: every limit of mistrald.conf(5), exceeded, gives a
clear error and affects nobody else.

One check per limit, on one daemon with small limits:
  max-message                  TOO_LARGE with the msgid, that connection
                               closed; a stream on another one carries on
  max-prompt-tokens            LIMIT_EXCEEDED (chat and one-off generate);
                               the session and connection are untouched
  max-tokens                   LIMIT_EXCEEDED (per request and session.set)
  max-sessions-per-uid         LIMIT_EXCEEDED (create, fork, import);
                               another uid still creates sessions
  max-requests-per-connection  LIMIT_EXCEEDED for the extra request; the
                               others complete
  max-requests-per-uid         LIMIT_EXCEEDED across connections; another
                               uid still chats meanwhile
  kv-budget                    NO_MEMORY when busy caches fill it; the
                               same turn runs once they finish
  max-connections              LIMIT_EXCEEDED to the first request of a
                               connection over the limit
Every error message names the setting.  Text that is not UTF-8 is
refused where it would be stored (chat, generate, system prompts), and
errors that quote a client's bytes stay UTF-8.  The parts with another uid run
a client as nobody through setpriv(1) and need root; they are skipped
otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import msgpack  # noqa: E402

import grp
import json
import pwd
import shutil
import signal
import socket
import subprocess
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

t = rpc.Tap()
signal.alarm(300)
TOO_LARGE, LIMIT, NO_MEMORY = 5, 12, 13

other = None
if os.getuid() == 0 and shutil.which("setpriv") is not None:
    try:
        other = pwd.getpwnam("nobody")
        group = grp.getgrgid(other.pw_gid).gr_name
    except KeyError:
        other = None

# A client run as nobody: runs calls in order and prints each
# [error, result] as JSON.
AS_OTHER = r'''
import json, socket, sys, msgpack
calls = json.loads(sys.argv[2])
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(60)
s.connect(sys.argv[1])
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
PYTHON = "/usr/bin/python3" if os.path.exists("/usr/bin/python3") \
    else sys.executable


def as_other(calls):
    r = subprocess.run(["setpriv", "--reuid=%d" % other.pw_uid,
                        "--regid=%d" % other.pw_gid, "--clear-groups",
                        PYTHON, "-c", AS_OTHER, d.sock, json.dumps(calls)],
                       capture_output=True, text=True, cwd="/")
    if r.returncode != 0:
        t.diag(r.stderr)
        return None
    return json.loads(r.stdout)


tmp = rpc.tmpdir()
os.chmod(tmp, 0o755)
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "71")
os.chmod(model, 0o644)
args = ["--max-message=64K", "--max-prompt-tokens=100",
        "--max-sessions-per-uid=6", "--max-requests-per-connection=2",
        "--max-requests-per-uid=3", "--max-tokens=5000",
        "--max-connections=10"]
if other is not None:
    args.append("--socket-group=" + group)
d = rpc.Daemon(tmp, model, *args)
d.start()
LONG = {"temperature": 0, "max_tokens": 1000}
SHORT = {"temperature": 0, "max_tokens": 8}


def err_of(c, method, a):
    try:
        c.call(method, a)
        return None
    except rpc.RpcError as e:
        return e


def is_limit(e, code, setting):
    return e is not None and e.code == code and setting in e.message


c = d.client()
for name in ("by", "s1", "s2", "s3"):
    c.call("session.create", {"name": name})

# max-message
by = d.client()
byid = by.send("chat", {"session": "by", "text": "Tell a long story",
                        "params": LONG})
x = d.client()
msgid = x.send("chat", {"session": "s1", "text": "y" * (100 << 10)})
reply = x.read()
try:
    eof = x.read()
except ConnectionResetError:    # it closed with our bytes unread
    eof = None
by_err, by_res = by.wait(byid)
t.ok(reply is not None and reply[0] == 1 and reply[1] == msgid
     and reply[2]["code"] == TOO_LARGE
     and "max-message" in reply[2]["message"] and eof is None,
     "max-message: a 100 KiB message gets TOO_LARGE with its msgid, then "
     "the connection is closed (%s)" % (reply and reply[2],))
t.ok(by_err is None and by_res["usage"]["completion_tokens"] == 1000,
     "max-message: a stream on another connection carried on to the end")
x.close()

# max-prompt-tokens
e1 = err_of(c, "chat", {"session": "s1", "text": "z" * 300})
e2 = err_of(c, "generate", {"prompt": "z" * 300})
g = c.call("session.get", {"session": "s1"})
r, _ = c.stream("chat", {"session": "s1", "text": "hi", "params": SHORT})
t.ok(is_limit(e1, LIMIT, "max-prompt-tokens")
     and is_limit(e2, LIMIT, "max-prompt-tokens"),
     "max-prompt-tokens: chat and generate get LIMIT_EXCEEDED (%s)" % e1)
t.ok(g["tokens"] == 0 and r["finish"] == "length",
     "max-prompt-tokens: the session was not touched and still chats")

# max-tokens
e1 = err_of(c, "chat", {"session": "s1", "text": "hi",
                        "params": {"max_tokens": 5001}})
e2 = err_of(c, "session.set", {"session": "s1",
                               "params": {"max_tokens": 5001}})
t.ok(is_limit(e1, LIMIT, "max-tokens") and e2 is not None
     and e2.code == LIMIT,
     "max-tokens: a request or a session setting over it gets "
     "LIMIT_EXCEEDED (%s; %s)" % (e1, e2))

# max-sessions-per-uid
c.call("session.create", {"name": "s4"})
c.call("session.create", {"name": "s5"})
e1 = err_of(c, "session.create", {"name": "s6"})
e2 = err_of(c, "session.fork", {"session": "s1"})
doc = c.call("session.export", {"session": "s1"})
e3 = err_of(c, "session.import", {"document": doc, "name": "imp"})
t.ok(all(is_limit(e, LIMIT, "max-sessions-per-uid") for e in (e1, e2, e3)),
     "max-sessions-per-uid: the 7th session (create, fork, import) gets "
     "LIMIT_EXCEEDED (%s)" % e1)
if other is not None:
    out = as_other([["session.create", {"name": "mine"}]])
    t.ok(out is not None and out[0][0] is None,
         "max-sessions-per-uid: another uid still creates sessions")
else:
    t.ok(True, "# SKIP another uid needs root and setpriv")
c.call("session.delete", {"session": "s5"})
t.ok(c.call("session.create", {"name": "s5"})["name"] == "s5",
     "max-sessions-per-uid: after a delete, create works again")

# max-requests-per-connection
ids = [c.send("chat", {"session": s, "text": "go", "params": p})
       for s, p in (("s1", LONG), ("s2", LONG), ("s3", SHORT))]
res = [c.wait(i) for i in ids]
t.ok(res[0][0] is None and res[1][0] is None
     and is_limit(rpc.RpcError(res[2][0]) if res[2][0] else None, LIMIT,
                  "max-requests-per-connection"),
     "max-requests-per-connection: the 3rd concurrent request gets "
     "LIMIT_EXCEEDED, the other two complete (%s)" % (res[2][0],))

# max-requests-per-uid (3), across connections.
c2 = d.client()
a = c.send("chat", {"session": "s1", "text": "go", "params": LONG})
b = c.send("chat", {"session": "s2", "text": "go", "params": LONG})
extra = c2.send("chat", {"session": "s4", "text": "go", "params": LONG})
e_uid = err_of(c2, "chat", {"session": "s5", "text": "go", "params": SHORT})
if other is not None:
    out = as_other([["session.create", {"name": "o1"}],
                    ["generate", {"prompt": "Once",
                                  "params": {"temperature": 0,
                                             "max_tokens": 4}}]])
    other_ok = out is not None and out[1][0] is None
else:
    other_ok = None
ra, rb, rx = c.wait(a), c.wait(b), c2.wait(extra)
t.ok(is_limit(e_uid, LIMIT, "max-requests-per-uid"),
     "max-requests-per-uid: a 4th request on another connection gets "
     "LIMIT_EXCEEDED (%s)" % e_uid)
if other_ok is None:
    t.ok(True, "# SKIP another uid needs root and setpriv")
else:
    t.ok(other_ok, "max-requests-per-uid: another uid still runs a "
         "request meanwhile")
t.ok(ra[0] is None and rb[0] is None and rx[0] is None,
     "max-requests-per-uid: the running turns completed undisturbed")

# max-connections (10; c, c2 and by are open)
extra = [d.client() for _ in range(7)]
s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
s.settimeout(10)
s.connect(d.sock)
s.sendall(msgpack.packb([0, 5, "hello", []]))
up = msgpack.Unpacker(raw=False, strict_map_key=False)
got = []
while True:
    data = s.recv(65536)
    if not data:
        break
    up.feed(data)
    got.extend(up)
t.ok(len(got) == 1 and got[0][1] == 5 and got[0][2]["code"] == LIMIT
     and "max-connections" in got[0][2]["message"],
     "max-connections: the 11th connection's first request gets "
     "LIMIT_EXCEEDED, then it is closed (%s)" % (got and got[0][2],))
t.ok(all(e.call("hello")["server"] for e in extra[:2]) and
     c.call("hello")["server"], "the open connections still work")
for e in extra:
    e.close()
s.close()
by.close()
c2.close()
c.close()
rc, _ = d.stop()
t.ok(rc == 0, "clean stop")

# Text that is not UTF-8 is refused where it would be stored, and an
# error quoting a client's bytes is still UTF-8 (the python decoder here
# would raise otherwise).
d.start()
c = d.client()


def raw_request(method, args):
    """[0, 1, method, [args]] with str values given as bytes, sent as
    msgpack str whatever they hold."""
    def s(b):
        return bytes([0xa0 | len(b)]) + b if len(b) < 32 else \
            b"\xd9" + bytes([len(b)]) + b
    out = b"\x94\x00\x01" + s(method) + b"\x91" + bytes([0x80 | len(args)])
    for k, v in args.items():
        out += s(k.encode()) + s(v)
    return out


bad = b"caf\xc3 \xff\xfe"
c.call("session.delete", {"session": "s5"})     # room for one more
codes = []
for method, args in (
        (b"chat", {"session": b"by", "text": bad}),
        (b"session.create", {"name": b"ok1", "system": bad}),
        (b"session.set", {"session": b"by", "system": bad}),
        (b"generate", {"prompt": bad})):
    c.send_raw(raw_request(method, args))
    m = c.read()
    codes.append(m[2]["code"] if m[2] else None)
c.send_raw(raw_request(b"no\xffsuch", {}))
m1 = c.read()
c.send_raw(raw_request(b"chat", {"session": b"x\xff\xfey", "text": b"hi"}))
m2 = c.read()
t.ok(codes == [4, 4, 4, 4],
     "text that is not UTF-8 is refused with INVALID_PARAMS (%s)" % codes)
t.ok(m1[2]["code"] == 3 and m2[2]["code"] == 7,
     "errors quoting a client's invalid bytes are valid UTF-8 (%r, %r)"
     % (m1[2]["message"], m2[2]["message"]))
c.close()
d.stop()

# kv-budget (1 MiB: two of these caches), on a daemon of its own.
sub = os.path.join(tmp, "kv")
os.makedirs(sub)
d = rpc.Daemon(sub, model, "--kv-budget=1M")
d.start()
c = d.client()
c2 = d.client()
for name in ("k1", "k2", "k3"):
    c.call("session.create", {"name": name})
a = c.send("chat", {"session": "k1", "text": "go", "params": LONG})
b = c.send("chat", {"session": "k2", "text": "go", "params": LONG})
c.read()        # a first token: both are running
e_kv = err_of(c2, "chat", {"session": "k3", "text": "go", "params": SHORT})
e_gen = err_of(c2, "generate", {"prompt": "Once", "params": SHORT})
ra, rb = c.wait(a), c.wait(b)
t.ok(is_limit(e_kv, NO_MEMORY, "kv-budget")
     and is_limit(e_gen, NO_MEMORY, "kv-budget"),
     "kv-budget: a turn (or a one-off generate) that needs a cache while "
     "busy ones fill the budget gets NO_MEMORY (%s)" % e_kv)
t.ok(ra[0] is None and rb[0] is None
     and ra[1]["usage"]["completion_tokens"] == 1000,
     "kv-budget: the running turns completed undisturbed")
# Their caches can be dropped once they are saved ("try again shortly").
end = time.time() + 30
while time.time() < end and c2.call("status")["disk"]["snapshot_lag"] > 0:
    time.sleep(0.05)
r, _ = c2.stream("chat", {"session": "k3", "text": "go", "params": SHORT})
t.ok(r["finish"] == "length", "kv-budget: once they finish and are saved, "
     "the refused turn runs")
c.close()
c2.close()
rc, _ = d.stop()
t.ok(rc == 0, "clean stop")
if t.failed:
    t.diag(d.logtext()[-3000:])
shutil.rmtree(tmp, ignore_errors=True)
t.done()
