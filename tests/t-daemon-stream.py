#!/usr/bin/env python3
"""t-daemon-stream.py: streams that end early, and hostile input.

cancel mid-stream; a client that disconnects mid-stream; a client that
never reads; oversized, truncated, garbage and too deeply nested messages
(each answered with an error when a msgid can be read, the connection
closed, and every other client served meanwhile); per-request limits;
SIGTERM during generation exits 0 in bounded time and keeps what was
accepted.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import msgpack  # noqa: E402

import shutil
import signal
import socket
import struct
import threading
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

t = rpc.Tap()
signal.alarm(300)
tmp = rpc.tmpdir()
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "3")
d = rpc.Daemon(tmp, model, "--write-buffer=4096", "--max-tokens=20000",
               "--max-requests-per-connection=4")
d.start()
LONG = {"temperature": 0, "max_tokens": 20000}


def consistent(c, name):
    """History = sum of the messages' tokens, and a new turn prefills
    exactly its own tokens plus the one pending sampled token."""
    g = c.call("session.get", {"session": name})
    total = sum(m["tokens"] for m in g["messages"])
    r, _ = c.stream("chat", {"session": name, "text": "ok",
                             "params": {"temperature": 0, "max_tokens": 3}})
    g2 = c.call("session.get", {"session": name})
    new = g2["messages"][-2]["tokens"]
    return (total == g["tokens"] and g["state"] != "busy"
            and r["usage"]["prompt_tokens"] == new + 1)


try:
    c = d.client()
    # cancel mid-stream
    c.call("session.create", {"name": "cx"})
    mid = c.send("chat", {"session": "cx", "text": "go on", "params": LONG})
    seen = []
    while len(seen) < 5:
        m = c.read()
        if m[0] == 2 and m[1] == "token":
            seen.append(m[2][0])
    cid = c.send("cancel", {"request": mid})
    streamed = [n["text"] for n in seen]
    err, res = c.wait(mid, lambda m, a: streamed.append(a["text"])
                      if m == "token" else None)
    err2, res2 = c.wait(cid)
    t.ok(err is None and res["finish"] == "cancelled"
         and res["usage"]["completion_tokens"] < 20000,
         "cancel mid-stream: finish cancelled after %s tokens"
         % (res or {}).get("usage", {}).get("completion_tokens"))
    t.ok(err2 is None and res2["cancelled"], "cancel is acknowledged")
    t.ok("".join(streamed) == res["text"],
         "the response text is what was streamed")
    g = c.call("session.get", {"session": "cx"})
    t.ok(g["messages"][-1]["text"] == res["text"]
         and g["messages"][-1]["tokens"] == res["usage"]["completion_tokens"],
         "the transcript holds exactly the accepted reply")
    t.ok(consistent(c, "cx"), "a cancelled session stays consistent")

    # a client that disconnects mid-stream
    c.call("session.create", {"name": "gone"})
    c2 = d.client()
    c2.send("chat", {"session": "gone", "text": "go on", "params": LONG})
    n = 0
    while n < 5:
        m = c2.read()
        if m[0] == 2:
            n += 1
    c2.close()
    end = time.time() + 20
    while time.time() < end:
        if c.call("session.get", {"session": "gone"})["state"] != "busy":
            break
        time.sleep(0.05)
    t.ok(d.alive() and consistent(c, "gone"),
         "a client gone mid-stream: its turn stops, the session is "
         "consistent")

    # a client that never reads: others are still served
    c.call("session.create", {"name": "slow"})
    c3 = d.client()
    c3.send("chat", {"session": "slow", "text": "go on", "params": LONG})
    time.sleep(0.5)
    t0 = time.time()
    c.call("session.create", {"name": "fast"})
    r, _ = c.stream("chat", {"session": "fast", "text": "hi",
                             "params": {"temperature": 0, "max_tokens": 8}})
    t.ok(r["finish"] == "length" and time.time() - t0 < 10,
         "a client that does not read does not hold up others (%.2f s)"
         % (time.time() - t0))
    st = c.call("status")
    t.ok(st["memory"]["rss"] < 512 << 20,
         "memory stays bounded (rss %d MiB)" % (st["memory"]["rss"] >> 20))
    c3.close()

    # hostile input, while a stream runs on another connection
    c.call("session.create", {"name": "bg"})
    bg = d.client()
    bgid = bg.send("chat", {"session": "bg", "text": "go",
                            "params": {"temperature": 0, "max_tokens": 400}})

    def hostile(data, close_write=False):
        """Send raw bytes; return the decoded replies until EOF."""
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(10)
        s.connect(d.sock)
        s.sendall(data)
        if close_write:
            s.shutdown(socket.SHUT_WR)
        up = msgpack.Unpacker(raw=False, strict_map_key=False)
        out = []
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                up.feed(b)
                out.extend(up)
        except socket.timeout:
            out.append("timeout")
        s.close()
        return out

    # header of a request with msgid 77 whose text claims 100 MB
    big = (b"\x94\x00\x4d" + msgpack.packb("chat") + b"\x91\x81"
           + msgpack.packb("text") + b"\xdb" + struct.pack(">I", 100 << 20)
           + b"x" * 100)
    out = hostile(big)
    t.ok(len(out) == 1 and out[0][0] == 1 and out[0][1] == 77
         and out[0][2]["code"] == 5,
         "oversized message: TOO_LARGE with its msgid, then closed")
    out = hostile(b"\x94\x00\x4e" + msgpack.packb("hello") + b"\x91\xc1")
    t.ok(len(out) == 1 and out[0][1] == 78 and out[0][2]["code"] == 1,
         "garbage inside a request: PARSE error with its msgid")
    out = hostile(b"\xc1\xc1\xc1garbage")
    t.ok(out == [], "garbage without a msgid: closed")
    out = hostile(b"\x91" * 40 + b"\x00")
    t.ok(all(isinstance(o, list) and o[2]["code"] in (1, 2, 5) for o in out),
         "40 levels of nesting: refused")
    out = hostile(b"\xdd\x00\xff\xff\xff")
    t.ok(all(o != "timeout" for o in out),
         "an array header announcing 16 M elements: refused at once")
    out = hostile(msgpack.packb([0, 79, "hello", [{}]])[:-3], True)
    t.ok(out == [], "a truncated message then EOF: closed quietly")
    out = hostile(msgpack.packb([5, 80, "hello", []]))
    t.ok(len(out) == 1 and out[0][2]["code"] == 2,
         "not a request: INVALID_REQUEST")
    err, res = bg.wait(bgid)
    t.ok(err is None and res["usage"]["completion_tokens"] == 400,
         "a stream on another connection was not disturbed")
    bg.close()

    # limits give clear errors
    try:
        c.call("chat", {"session": "fast", "text": "x",
                        "params": {"max_tokens": 10 ** 6}})
        t.ok(False, "max_tokens over the limit is refused")
    except rpc.RpcError as e:
        t.ok(e.code == 12, "max_tokens over max-tokens: LIMIT_EXCEEDED")
    ids = []
    for i in range(5):
        c.call("session.create", {"name": "l%d" % i})
    for i in range(5):
        ids.append(c.send("chat", {"session": "l%d" % i, "text": "x",
                                   "params": {"temperature": 0,
                                              "max_tokens": 200}}))
    codes = [c.wait(i)[0] for i in ids]
    t.ok(sum(1 for e in codes if e and e["code"] == 12) >= 1
         and sum(1 for e in codes if e is None) >= 4,
         "more concurrent requests than max-requests-per-connection: "
         "LIMIT_EXCEEDED for the extra ones")
    try:
        c.call("session.create", {"name": "fast"})
        t.ok(False, "a duplicate name is refused")
    except rpc.RpcError as e:
        t.ok(e.code == 9, "a duplicate name: EXISTS")

    # SIGTERM during generation
    c.call("session.create", {"name": "term"})
    tid = c.send("chat", {"session": "term", "text": "go on", "params": LONG})
    n = 0
    while n < 5:
        m = c.read()
        if m[0] == 2 and m[2][0].get("request") == tid:
            n += 1
    t0 = time.time()
    d.proc.send_signal(signal.SIGTERM)
    try:
        err, res = c.wait(tid)
    except (EOFError, OSError):
        err, res = "eof", None
    t.ok(err is None and res["finish"] == "cancelled",
         "SIGTERM: the running turn is answered with finish cancelled")
    rc = d.proc.wait(30)
    secs = time.time() - t0
    t.ok(rc == 0 and secs < 10, "SIGTERM during generation: exit %s in "
         "%.2f s" % (rc, secs))
    d.proc = None
    d.logf.close()
    d.start()
    c = d.client()
    g = c.call("session.get", {"session": "term"})
    t.ok(res is not None and g["messages"][-1]["tokens"]
         == res["usage"]["completion_tokens"],
         "after restart the interrupted turn is there, as accepted")
    t.ok(consistent(c, "term"), "and the session continues")
    c.close()
finally:
    if d.alive():
        rc, _ = d.stop()
    if t.failed:
        t.diag(d.logtext()[-3000:])
shutil.rmtree(tmp, ignore_errors=True)
t.done()
