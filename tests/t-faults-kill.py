#!/usr/bin/env python3
"""t-faults-kill.py: kill -9 at random points loses nothing committed.

Three sessions chat at once on one daemon, which is killed with SIGKILL
at a random moment, in turn:

  gen       while tokens stream (after a random number of them);
  prefill   while a long prompt is being prefilled (after its first
            progress notification, before any of its tokens);
  snapshot  while a turn's snapshot is being written
            (MISTRALD_TEST_SNAPSHOT_DELAY_MS widens that window, and the
            kill comes a random 0-250 ms after a reply).

After every kill the database passes PRAGMA integrity_check, and after
every restart each session's transcript is exactly the first k turns of
the same conversation on a daemon that was never killed (never half a
turn), with k at least the turns known to be committed before the kill
and at most the turns sent.  Continuing each session gives the tokens of
the uninterrupted daemon (greedy), from its stored cache (not rebuilt;
only the new message is prefilled).

A reply reaches the client before its turn is committed (the save runs
on the persistence thread afterwards), so a turn answered just before a
kill may be lost, whole; the snapshot iterations must see that happen at
least once, which shows they did hit the write window.

make check runs 2 iterations of each kind; MISTRALD_LONG=1 runs 20 of
each (60 kills) and prints the figures.
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

import importlib.util
import random
import shutil
import signal
import sqlite3
import time

spec = importlib.util.spec_from_file_location(
    "rpc", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "t-daemon_rpc.py"))
rpc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rpc)

LONG = os.environ.get("MISTRALD_LONG", "") not in ("", "0")
PER_MODE = 20 if LONG else 2
MODES = ["gen", "prefill", "snapshot"]
TURNS = 4
SEED = int(os.environ.get("MISTRALD_TEST_SEED", str(int(time.time()))))
rng = random.Random(SEED)

t = rpc.Tap()
signal.alarm(3000 if LONG else 400)
t.diag("random seed %d (set MISTRALD_TEST_SEED to repeat)" % SEED)
tmp = rpc.tmpdir()
# Big enough that a step takes a few ms (so a kill lands inside a
# prefill), and a context that holds every conversation whole.
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "31", "--dim",
                    "256", "--layers", "4", "--ffn", "512", "--ctx", "8192")
# Small steps: a prefill takes many (so a kill lands inside one), and no
# step feeds over 16 tokens, which keeps every product in lib/matmul.c's
# per-row regimes: results then do not depend on what else is batched.
ARGS = ["--chunk=16"]

LONGTEXT = " ".join("line %d of a long pasted document about boats" % i
                    for i in range(12))
# Each slot's conversation: its user texts and per-turn max_tokens.
SCHEDULE = [
    [("Hello there", 24), ("What happened next?", 24), ("Why?", 24),
     ("Go on", 24)],
    [("Tell me about the sea", 24), ("And the little dog?", 24),
     ("Then what?", 24), ("The end", 24)],
    [(LONGTEXT + " (%d)" % k, 6) for k in range(TURNS)],
]


def params(n):
    return {"temperature": 0, "max_tokens": n}


def integrity(state):
    db = sqlite3.connect(os.path.join(state, "mistrald.db"))
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def settle(c):
    end = time.time() + 60
    while time.time() < end:
        if c.call("status")["disk"]["snapshot_lag"] == 0:
            return True
        time.sleep(0.02)
    return False


# The never-killed reference: each slot's conversation, turn by turn.
ref = [[] for _ in SCHEDULE]
sub = os.path.join(tmp, "ref")
os.makedirs(sub)
d = rpc.Daemon(sub, model, *ARGS)
d.start()
c = d.client()
for i, sched in enumerate(SCHEDULE):
    c.call("session.create", {"name": "r%d" % i})
    for text, n in sched:
        r, notes = c.stream("chat", {"session": "r%d" % i, "text": text,
                                     "params": params(n)})
        ref[i].append((text, r["text"], [x for a in notes for x in a["ids"]]))
c.close()
d.stop()


class Slot:
    def __init__(self, i):
        self.i = i
        self.gen = 0
        self.name = None
        self.k = 0          # turns in the transcript after the restart
        self.durable = 0    # turns known committed
        self.sent = 0       # turns sent (k plus those in flight)
        self.acked = 0      # turns answered


slots = [Slot(i) for i in range(len(SCHEDULE))]
sub = os.path.join(tmp, "kill")
os.makedirs(sub)
figures = {m: {"kills": 0, "lost": 0, "turns": 0} for m in MODES}
bad = []        # descriptions of failures, reported once per check


def fail(what):
    bad.append(what)
    t.diag(what)


def new_session(c, s):
    s.gen += 1
    s.name = "slot%d-%d" % (s.i, s.gen)
    c.call("session.create", {"name": s.name})
    s.k = s.durable = s.sent = s.acked = 0


def verify(c, s, mode, killed_in=None):
    """After a restart: the transcript is a whole-turn prefix of the
    reference; the next turn continues it exactly."""
    g = c.call("session.get", {"session": s.name})
    msgs = g["messages"]
    if len(msgs) % 2 != 0:
        fail("%s: %s has half a turn (%d messages)" % (mode, s.name,
                                                       len(msgs)))
        return False
    k = len(msgs) // 2
    for j in range(k):
        text, reply, _ = ref[s.i][j]
        if msgs[2 * j]["text"] != text or msgs[2 * j + 1]["text"] != reply:
            fail("%s: %s turn %d differs from the reference"
                 % (mode, s.name, j))
            return False
    if not s.durable <= k <= s.sent:
        fail("%s: %s resumed at turn %d; committed %d, sent %d"
             % (mode, s.name, k, s.durable, s.sent))
        return False
    if killed_in is not None:
        figures[killed_in]["lost"] += max(0, s.acked - k)
    s.k = k
    if k == TURNS:
        new_session(c, s)
        return True
    text, n = SCHEDULE[s.i][k]
    r, notes = c.stream("chat", {"session": s.name, "text": text,
                                 "params": params(n)})
    ids = [x for a in notes for x in a["ids"]]
    g = c.call("session.get", {"session": s.name, "messages": 2})
    new = g["messages"][0]["tokens"]
    if ids != ref[s.i][k][2]:
        fail("%s: %s turn %d after the restart differs from the "
             "uninterrupted daemon" % (mode, s.name, k))
        return False
    # Plus the last reply's final token, which the cache does not hold
    # yet (engine.c DESIGN 2).
    want = new + (1 if k > 0 else 0)
    if r["rebuilt"] or r["usage"]["prompt_tokens"] != want:
        fail("%s: %s turn %d after the restart prefilled %d tokens "
             "(rebuilt %s), not just the new %d"
             % (mode, s.name, k, r["usage"]["prompt_tokens"], r["rebuilt"],
                want))
        return False
    s.k = s.sent = s.acked = k + 1
    if s.k >= TURNS:
        new_session(c, s)
    return True


def drive(c, d, mode):
    """Run every slot's remaining turns at once until the kill."""
    inflight = {}
    cur = {}

    def send(s):
        if s.sent >= TURNS:
            return
        text, n = SCHEDULE[s.i][s.sent]
        mid = c.send("chat", {"session": s.name, "text": text,
                              "params": params(n)})
        inflight[mid] = (s, s.sent)
        cur[mid] = {"ids": [], "progress": 0}
        s.sent += 1

    for s in slots:
        send(s)
    notes = 0
    replies = 0
    goal_notes = rng.randint(1, 120)
    goal_replies = rng.randint(1, 3)
    goal_progress = rng.randint(1, 4)
    long_slot = slots[2]
    while inflight:
        m = c.read()
        if m is None:
            fail("%s: the daemon closed the connection" % mode)
            return
        if m[0] == 2:
            a = m[2][0]
            st = cur.get(a.get("request"))
            if st is None:
                continue
            if m[1] == "token":
                st["ids"] += a["ids"]
                notes += 1
                if mode == "gen" and notes >= goal_notes:
                    return
            elif m[1] == "progress":
                st["progress"] += 1
                s, _ = inflight[a["request"]]
                if (mode == "prefill" and s is long_slot
                        and st["progress"] >= goal_progress):
                    if st["ids"]:
                        fail("prefill: tokens before the prefill ended")
                    return
            continue
        s, turn = inflight.pop(m[1])
        st = cur.pop(m[1])
        if m[2] is not None:
            fail("%s: %s turn %d failed: %s" % (mode, s.name, turn, m[2]))
            return
        if st["ids"] != ref[s.i][turn][2]:
            fail("%s: %s turn %d differs from the reference while others "
                 "ran" % (mode, s.name, turn))
        s.acked = turn + 1
        figures[mode]["turns"] += 1
        replies += 1
        if mode == "snapshot" and replies >= goal_replies:
            time.sleep(rng.uniform(0, 0.25))
            return
        send(s)


iterations = [m for m in MODES for _ in range(PER_MODE)]
rng.shuffle(iterations)
started = False
prev = None
t0 = time.time()
for it, mode in enumerate(iterations):
    env = {"MISTRALD_TEST_SNAPSHOT_DELAY_MS":
           "300" if mode == "snapshot" else "0"}
    d = rpc.Daemon(sub, model, *ARGS, env=env)
    d.start()
    c = d.client(timeout=120)
    if not started:
        for s in slots:
            new_session(c, s)
        started = True
    else:
        for s in slots:
            if not verify(c, s, mode, prev):
                break
        if bad:
            break
    prev = mode
    # Everything so far is committed: the lower bound for the next check.
    if not settle(c):
        fail("%s: saves did not settle" % mode)
        break
    for s in slots:
        s.durable = s.k = s.acked = s.sent
    drive(c, d, mode)
    if bad:
        break
    d.stop(signal.SIGKILL)
    c.close()
    figures[mode]["kills"] += 1
    res = integrity(d.state)
    if res != "ok":
        fail("%s: integrity_check after kill %d: %s" % (mode, it + 1, res))
        break

if not bad:
    # The last restart, checked like the others.
    d = rpc.Daemon(sub, model, *ARGS)
    d.start()
    c = d.client()
    for s in slots:
        if not verify(c, s, "final", prev):
            break
    c.close()
    rc, _ = d.stop()
    if rc != 0 or integrity(d.state) != "ok":
        fail("final: stop rc %s" % rc)

kills = sum(f["kills"] for f in figures.values())
t.ok(not bad and kills == len(iterations),
     "%d kill -9 (%s): every restart passed integrity_check, every session "
     "resumed at a whole committed turn and continued exactly"
     % (kills, ", ".join("%s %d" % (m, figures[m]["kills"]) for m in MODES)))
for m in MODES:
    t.diag("%s: %d kills, %d turns answered, %d answered turns not yet "
           "committed at the kill (lost whole)" % (m, figures[m]["kills"],
                                                   figures[m]["turns"],
                                                   figures[m]["lost"]))
t.ok(bad or figures["snapshot"]["lost"] > 0,
     "the snapshot kills landed inside snapshot writes (%d answered turns "
     "rolled back whole)" % figures["snapshot"]["lost"])
t.diag("%.1f s for %d iterations" % (time.time() - t0, len(iterations)))
if bad:
    t.diag(d.logtext()[-3000:])
else:
    shutil.rmtree(tmp, ignore_errors=True)
t.done()
