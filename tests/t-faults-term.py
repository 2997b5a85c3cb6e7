#!/usr/bin/env python3
"""t-faults-term.py: SIGTERM in the middle of a long prefill.

A long message is being prefilled (chunk 16, so it takes many steps)
when the daemon gets SIGTERM: the turn is answered with finish
"cancelled", the daemon exits 0 well within shutdown-timeout, and the
part of the prompt already prefilled is persisted: after a restart the
session's next turn prefills only what was missing (not the whole
message again), from the stored cache, and gives the same tokens as a
daemon on which the same turn was cancelled (with the cancel method)
and that was never stopped.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import shutil
import signal
import sqlite3
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

t = rpc.Tap()
signal.alarm(300)
tmp = rpc.tmpdir()
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "61", "--dim",
                    "256", "--layers", "4", "--ffn", "512", "--ctx", "8192")
TIMEOUT = 5
ARGS = ["--chunk=16", "--shutdown-timeout=%d" % TIMEOUT]
LONGTEXT = " ".join("paragraph %d of a very long pasted report" % i
                    for i in range(50))
G = {"temperature": 0, "max_tokens": 16}


def chat(c, text, p=G):
    r, notes = c.stream("chat", {"session": "a", "text": text, "params": p})
    return r, [i for n in notes for i in n["ids"]]


def start_long(c):
    """Send the long message; return (msgid, prefilled so far) after a
    few progress notifications."""
    mid = c.send("chat", {"session": "a", "text": LONGTEXT, "params": G})
    seen = []
    while len(seen) < 3:
        m = c.read()
        if m[0] == 2 and m[1] == "progress":
            seen.append(m[2][0])
    return mid, seen[-1]["done"], seen[-1]["total"]


def last_done(c, mid):
    done = [0]

    def note(m, a):
        if m == "progress":
            done[0] = a["done"]
    return c.wait(mid, note), done


# The reference: the same turn cancelled with the cancel method.
sub = os.path.join(tmp, "ref")
os.makedirs(sub)
d = rpc.Daemon(sub, model, *ARGS)
d.start()
c = d.client()
c.call("session.create", {"name": "a"})
chat(c, "Hello")
mid, _, _ = start_long(c)
c.call("cancel", {"request": mid})
(err, res), _ = last_done(c, mid)
want = chat(c, "Go on")[1]
c.close()
d.stop()
t.ok(err is None and res["finish"] == "cancelled",
     "reference: a long prefill cancelled with the cancel method")

# SIGTERM instead.
sub = os.path.join(tmp, "term")
os.makedirs(sub)
d = rpc.Daemon(sub, model, *ARGS)
d.start()
c = d.client()
c.call("session.create", {"name": "a"})
chat(c, "Hello")
mid, done, total = start_long(c)
t0 = time.time()
d.proc.send_signal(signal.SIGTERM)
try:
    (err, res), more = last_done(c, mid)
except (EOFError, OSError) as e:
    err, res, more = str(e), None, [done]
rc = d.proc.wait(TIMEOUT * 3)
secs = time.time() - t0
d.proc = None
d.logf.close()
t.ok(err is None and res["finish"] == "cancelled"
     and res["usage"]["completion_tokens"] == 0,
     "SIGTERM mid-prefill (%d of %d prompt tokens done): the turn is "
     "answered, finish cancelled" % (done, total))
t.ok(rc == 0 and secs < TIMEOUT,
     "the daemon exits 0 in %.2f s (shutdown-timeout %d s)" % (secs, TIMEOUT))
db = sqlite3.connect(os.path.join(d.state, "mistrald.db"))
ic = db.execute("PRAGMA integrity_check").fetchone()[0]
db.close()
t.ok(ic == "ok", "integrity_check: %s" % ic)

d.start()
c = d.client()
g = c.call("session.get", {"session": "a"})
msgs = g["messages"]
t.ok(len(msgs) == 4 and msgs[2]["text"] == LONGTEXT
     and msgs[3]["tokens"] == 0,
     "after a restart the transcript holds the long message, and an empty "
     "reply")
r, ids = chat(c, "Go on")
new = c.call("session.get", {"session": "a", "messages": 2})["messages"][0]
prefilled = r["usage"]["prompt_tokens"]
# Without the stored partial prefill this would be total + new + 1.
t.ok(not r["rebuilt"] and prefilled <= total - more[0] + new["tokens"] + 1,
     "the next turn prefills only what was missing: %d tokens, not %d"
     % (prefilled, total + new["tokens"] + 1))
t.ok(ids == want, "and gives the tokens of the daemon that was never stopped")
c.close()
rc, _ = d.stop()
t.ok(rc == 0, "clean stop")
if t.failed:
    t.diag(d.logtext()[-3000:])
shutil.rmtree(tmp, ignore_errors=True)
t.done()
