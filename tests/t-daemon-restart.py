#!/usr/bin/env python3
"""t-daemon-restart.py: sessions survive the daemon.

A conversation continued after SIGTERM and restart, or after kill -9 and
restart, gives the same tokens as one that was never interrupted (greedy,
and sampled with a seed, so the sampler state must survive too), and the
turn after the restart prefills only the new message.  A model change
(fingerprint) rebuilds the cache from the transcript and says so.  More
sessions than the KV budget holds all stay usable.  A reply holding NUL
bytes is kept whole through session.get, export, the client, kill -9 and
a restart.  The database passes PRAGMA integrity_check after every stop.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import json
import resource
import shutil
import signal
import sqlite3
import subprocess
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

t = rpc.Tap()
signal.alarm(300)
tmp = rpc.tmpdir()
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "11")
other = rpc.mkmodel(os.path.join(tmp, "other.gguf"), "--seed", "12")

TURNS = ["Hello there", "Tell me more", "And then?", "Go on"]
PARAMS = [{"temperature": 0, "max_tokens": 20},
          {"temperature": 0.9, "seed": 42, "max_tokens": 20}]


def chat(c, name, text, p):
    r, notes = c.stream("chat", {"session": name, "text": text, "params": p})
    return r, [i for n in notes for i in n["ids"]]


def integrity(state):
    db = sqlite3.connect(os.path.join(state, "mistrald.db"))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def settle(c):
    """Wait until every save has been committed."""
    end = time.time() + 20
    while time.time() < end:
        if c.call("status")["disk"]["snapshot_lag"] == 0:
            return True
        time.sleep(0.05)
    return False


# Uninterrupted reference, one session per parameter set.
ref = rpc.Daemon(os.path.join(tmp), model)
os.makedirs(os.path.join(tmp, "ref"), exist_ok=True)
ref.sock = os.path.join(tmp, "ref", "s.sock")
ref.state = os.path.join(tmp, "ref", "state")
ref.start()
want = {}
c = ref.client()
for k, p in enumerate(PARAMS):
    c.call("session.create", {"name": "s%d" % k})
    # The per-request seed only matters on the first turn.
    want[k] = [chat(c, "s%d" % k, txt, p if i == 0 else
                    {kk: vv for kk, vv in p.items() if kk != "seed"})[1]
               for i, txt in enumerate(TURNS)]
c.close()
ref.stop()

for how, sig in (("SIGTERM", signal.SIGTERM), ("kill -9", signal.SIGKILL)):
    sub = os.path.join(tmp, how.replace(" ", ""))
    os.makedirs(sub)
    d = rpc.Daemon(sub, model)
    d.start()
    c = d.client()
    for k, p in enumerate(PARAMS):
        c.call("session.create", {"name": "s%d" % k})
        chat(c, "s%d" % k, TURNS[0], p)
        chat(c, "s%d" % k, TURNS[1], {kk: vv for kk, vv in p.items()
                                      if kk != "seed"})
    if sig == signal.SIGKILL:
        settle(c)
    c.close()
    rc, _ = d.stop(sig)
    t.ok(integrity(d.state) == "ok", "%s: database integrity ok" % how)
    d.start()
    c = d.client()
    lst = c.call("session.list")["sessions"]
    t.ok(len(lst) == 2 and all(s["state"] == "stored" for s in lst),
         "%s: sessions listed at once, caches not yet loaded" % how)
    for k, p in enumerate(PARAMS):
        r, ids = chat(c, "s%d" % k, TURNS[2], {kk: vv for kk, vv in
                                               p.items() if kk != "seed"})
        g = c.call("session.get", {"session": "s%d" % k})
        new = g["messages"][-2]["tokens"]
        t.ok(ids == want[k][2], "%s: turn 3 (%s) gives the tokens of an "
             "uninterrupted daemon" % (how, "greedy" if k == 0 else
                                       "sampled, seed 42"))
        t.ok(not r["rebuilt"] and r["usage"]["prompt_tokens"] == new + 1,
             "%s: it prefilled only the new message (%d tokens)"
             % (how, r["usage"]["prompt_tokens"]))
    c.close()
    d.stop()

# Every snapshot chunk of the kill -9 state corrupted (one byte flipped):
# the cache is rebuilt from the transcript, the reply says so, and the
# tokens are those of the uninterrupted daemon's fourth turn.
sub = os.path.join(tmp, "kill-9")
db = sqlite3.connect(os.path.join(sub, "state", "mistrald.db"))
rows = db.execute("SELECT stream, seq, data FROM kv_chunks").fetchall()
for stream, seq, data in rows:
    data = bytearray(data)
    data[len(data) // 2] ^= 0x5a
    db.execute("UPDATE kv_chunks SET data = ? WHERE stream = ? AND seq = ?",
               (bytes(data), stream, seq))
db.commit()
db.close()
d = rpc.Daemon(sub, model)
d.start()
c = d.client()
r, ids = chat(c, "s0", TURNS[3], PARAMS[0])
t.ok(len(rows) > 0 and r["rebuilt"],
     "a corrupted snapshot chunk: the cache is rebuilt, and the reply says "
     "so (%d chunks damaged)" % len(rows))
t.ok(ids == want[0][3], "and the rebuilt session replies as an "
     "uninterrupted daemon does")
t.ok(integrity(d.state) == "ok", "the database passes its integrity check")
c.close()
d.stop()

# The model changed: the cache is rebuilt from the transcript.
sub = os.path.join(tmp, "SIGTERM")
d = rpc.Daemon(sub, other)
d.start()
c = d.client()
r, _ = chat(c, "s0", "Again", PARAMS[0])
t.ok(r["rebuilt"] and r["usage"]["prompt_tokens"] > 40,
     "another model: the cache is rebuilt from the transcript (%d tokens)"
     % r["usage"]["prompt_tokens"])
r, _ = chat(c, "s0", "Once more", PARAMS[0])
t.ok(not r["rebuilt"], "and the next turn runs on the rebuilt cache")
c.close()
d.stop()

# More sessions than the budget holds (each cache here is 512 KiB).
sub = os.path.join(tmp, "budget")
os.makedirs(sub)
d = rpc.Daemon(sub, model, "--kv-budget=1M")
d.start()
c = d.client()
ok = True
replies = {}
for i in range(6):
    c.call("session.create", {"name": "b%d" % i})
    replies[i] = chat(c, "b%d" % i, "Hello", PARAMS[0])[1]
    settle(c)
for i in range(6):
    r, ids = chat(c, "b%d" % i, "Again", PARAMS[0])
    ok = ok and r["finish"] in ("length", "stop")
    settle(c)
st = c.call("status")
t.ok(ok and st["memory"]["kv_bytes"] <= 1 << 20,
     "6 sessions under a 2-session budget all resume (resident %d KiB)"
     % (st["memory"]["kv_bytes"] >> 10))
c.close()
rc, _ = d.stop()
t.ok(rc == 0 and integrity(d.state) == "ok", "budget: clean stop")

# A model can generate a NUL byte (a byte-fallback token <0x00>), and a
# reply holding one is part of the transcript like any other: session.get,
# session.export and the client give it back byte for byte, it survives
# kill -9 right after the result and a restart, and an exported document
# imports again unchanged.  session.import is the one way to put a chosen
# reply into a session; only what the model wrote (assistant, completion)
# may hold a NUL, as chat and generate refuse one in what a person writes.
def transcript(c, name):
    """The texts of session.get and of session.export, and the export."""
    g = c.call("session.get", {"session": name})["messages"]
    e = c.call("session.export", {"session": name})
    return [m["text"] for m in g], [m["text"] for m in e["messages"]], e


def nul_bytes(d):
    c = d.client()
    texts = ["Say something", "a\0b\0\0c", "And then?",
             "\0 starts with one"]
    doc = {"format": "mistrald-session", "version": 1, "name": "nul",
           "messages": [{"role": role, "text": text} for role, text in
                        zip(["user", "assistant"] * 2, texts)]}
    try:
        c.call("session.import", {"document": doc})
    except rpc.RpcError as e:
        t.ok(False, "session.import takes a reply holding NUL bytes (%s)"
             % e)
        return
    r, _ = chat(c, "nul", "Go on", PARAMS[0])
    want = texts + ["Go on", r["text"]]
    got, exported, _ = transcript(c, "nul")
    t.ok(got == want and exported == want,
         "a reply holding NUL bytes: session.get and session.export give "
         "the whole transcript back")
    if got != want:
        t.diag("want %r\ngot  %r" % (want, got))
    try:
        bad = dict(doc, messages=[{"role": "user", "text": "a\0b"}])
        c.call("session.import", {"document": bad, "name": "bad"})
        refused = False
    except rpc.RpcError as e:
        refused = e.code == 4
    t.ok(refused, "a NUL in what a person wrote (a user message) is "
         "refused")
    cli = os.path.join(rpc.builddir(), "client", "mistral")
    out = subprocess.run([cli, "-s", d.sock, "export", "nul"],
                         capture_output=True, timeout=30)
    show = subprocess.run([cli, "-s", d.sock, "show", "nul"],
                          capture_output=True, timeout=30)
    try:
        cli_texts = [m["text"] for m in json.loads(out.stdout)["messages"]]
    except ValueError:
        cli_texts = None
    t.ok(out.returncode == 0 and cli_texts == want
         and b"a\0b\0\0c" in show.stdout,
         "mistral export writes it as \\u0000 in JSON, mistral show "
         "prints the bytes")
    c.close()
    d.stop(signal.SIGKILL)      # the result came once the turn was stored
    db = sqlite3.connect(os.path.join(d.state, "mistrald.db"))
    rows = db.execute("SELECT typeof(text), text FROM messages WHERE "
                      "seq = 1").fetchall()
    db.close()
    t.ok(rows == [("blob", b"a\0b\0\0c")],
         "it is stored as a BLOB of its bytes (sqlite3's .dump keeps it "
         "whole)")
    d.start()
    c = d.client()
    got, exported, e = transcript(c, "nul")
    t.ok(got == want and exported == want,
         "after kill -9 and a restart it is all there, byte for byte")
    c.call("session.import", {"document": e, "name": "again"})
    got, _, _ = transcript(c, "again")
    r, _ = chat(c, "again", "More", PARAMS[0])
    t.ok(got == want and r["finish"] in ("length", "stop"),
         "the exported document imports again unchanged, and the session "
         "carries on")
    c.close()
    rc, _ = d.stop()
    t.ok(rc == 0 and integrity(d.state) == "ok", "NUL bytes: clean stop, "
         "integrity_check ok")


sub = os.path.join(tmp, "nul")
os.makedirs(sub)
d = rpc.Daemon(sub, model)
d.start()
nul_bytes(d)
if d.alive():
    d.stop()

# Disk full (a file-size limit): turns still complete, the failure is
# reported, and once space returns the retries store everything.
sub = os.path.join(tmp, "full")
os.makedirs(sub)
d = rpc.Daemon(sub, model, "--log-file=/dev/null", preexec=lambda:
               resource.setrlimit(resource.RLIMIT_FSIZE,
                                  (300 << 10, resource.RLIM_INFINITY)))
d.start()
c = d.client()
c.call("session.create", {"name": "full"})
reported = None
answers = []
for i in range(40):
    r, ids = chat(c, "full", "Turn %d" % i, {"temperature": 0,
                                             "max_tokens": 30})
    answers.append(ids)
    if "persist_error" in r:
        reported = r["persist_error"]
        break
t.ok(reported is not None, "disk full: the turn completes and the failure "
     "is reported (%s)" % reported)
t.ok(c.call("status")["disk"]["snapshot_lag"] > 0,
     "disk full: the save is kept for a retry")
subprocess.run(["prlimit", "--pid", str(d.proc.pid), "--fsize=unlimited"],
               check=True)
ok = settle(c)
r, _ = chat(c, "full", "After", {"temperature": 0, "max_tokens": 5})
t.ok(ok and "persist_error" not in r,
     "space is back: the retries stored everything")
turns = c.call("session.get", {"session": "full"})["turns"]
c.close()
rc, _ = d.stop()
d.start()
c = d.client()
g = c.call("session.get", {"session": "full"})
t.ok(rc == 0 and g["turns"] == turns and integrity(d.state) == "ok",
     "and after a restart nothing is lost (%d turns)" % g["turns"])
c.close()
d.stop()

if t.failed:
    t.diag(d.logtext()[-3000:])
shutil.rmtree(tmp, ignore_errors=True)
t.done()
