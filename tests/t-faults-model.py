#!/usr/bin/env python3
"""t-faults-model.py: the model file changes on disk while the daemon runs.

With the weights copied to memory at start (the default; daemon/watch.c):
- truncated in place during a generation: the turn completes with the
  tokens of a daemon that never saw the change, the log says once that
  the file changed and that the model loaded at start is still served,
  status shows no error, and further turns (new sessions too) give the
  undisturbed tokens;
- rewritten in place while idle: the same;
- restarted on the damaged file: the daemon refuses to start, naming the
  file; once the file is whole again, a session saved before continues
  with the undisturbed tokens.

With the weights read from the file mapping (MISTRAL_REPACK=0):
- replaced by rename (a new file moved over the path): harmless, the
  daemon keeps serving the model it loaded, with the same tokens, logs
  the replacement once, and loads the new file at the next start;
- truncated in place during a generation: the SIGBUS is caught, the
  running turn fails with UNAVAILABLE naming the file, the daemon stays
  up, refuses further turns with the same clear error (status says why,
  and so does `mistral status`), still lists, reads and exports
  sessions, and stops cleanly; once the file is whole again and the
  daemon restarted, a session saved before continues with the tokens of
  a daemon that never saw the damage, and so does the interrupted one,
  from its last good snapshot plus its transcript;
- truncated, or rewritten in place, while idle: the poll notices before
  anything faults, with the same effect.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import shutil
import signal
import subprocess
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

t = rpc.Tap()
signal.alarm(240)
tmp = rpc.tmpdir()
SHAPE = ["--dim", "256", "--layers", "4", "--ffn", "512"]
pristine = rpc.mkmodel(os.path.join(tmp, "a.gguf"), "--seed", "41", *SHAPE)
other = rpc.mkmodel(os.path.join(tmp, "b.gguf"), "--seed", "42", *SHAPE)
model = os.path.join(tmp, "model.gguf")
G = {"temperature": 0, "max_tokens": 12}
LONG = {"temperature": 0, "max_tokens": 400}
UNAVAILABLE = 16
# The weights: read from the file mapping, or (the default) copied to
# memory at start.
MAPPED = {"MISTRAL_REPACK": "0"}
os.environ.pop("MISTRAL_REPACK", None)
CHANGED = ("the model file %s was %s on disk; still serving the model as "
           "loaded at start")


def install(src):
    """Put src at the model path the safe way: copy, then rename."""
    shutil.copyfile(src, model + ".new")
    os.rename(model + ".new", model)


def chat(c, name, text, p=G):
    r, notes = c.stream("chat", {"session": name, "text": text, "params": p})
    return r, [i for n in notes for i in n["ids"]]


def settle(c):
    end = time.time() + 20
    while time.time() < end:
        if c.call("status")["disk"]["snapshot_lag"] == 0:
            return True
        time.sleep(0.05)
    return False

def saved_and_victim(c, victim):
    """Session "saved" with two stored turns, session victim with one."""
    c.call("session.create", {"name": "saved"})
    chat(c, "saved", "Hello")
    chat(c, "saved", "Go on")
    c.call("session.create", {"name": victim})
    chat(c, victim, "Hello")
    settle(c)


def truncate_under_generation(c, name):
    """Start a long turn on session name, cut the model file to half its
    size once 5 tokens have streamed, and wait for the turn: returns
    (error, result, every token id streamed)."""
    mid = c.send("chat", {"session": name, "text": "Go on", "params": LONG})
    got = []
    while len(got) < 5:
        m = c.read()
        if m[0] == 2 and m[1] == "token":
            got += m[2][0]["ids"]
    os.truncate(model, os.path.getsize(model) // 2)
    try:
        err, res = c.wait(mid, lambda m, a: got.extend(a["ids"])
                          if m == "token" else None)
    except (EOFError, OSError) as e:
        err, res = str(e), None
    return err, res, got



def refused(c, what):
    try:
        c.call("chat", {"session": what, "text": "more", "params": G})
        return None
    except rpc.RpcError as e:
        return e


def cli_errors(d):
    """The "error" lines of `mistral status` (the human output)."""
    r = subprocess.run([os.path.join(rpc.builddir(), "client", "mistral"),
                        "-s", d.sock, "status"], capture_output=True,
                       text=True, timeout=30)
    if r.returncode != 0 or not r.stdout.startswith("server"):
        return None
    return [x for x in r.stdout.splitlines() if x.startswith("error")]


def wait_log(d, text, secs=5):
    end = time.time() + secs
    while time.time() < end:
        if text in d.logtext():
            return True
        time.sleep(0.05)
    return False


def daemon(name, *extra, env=None, mapped=False):
    sub = os.path.join(tmp, name)
    os.makedirs(sub, exist_ok=True)
    env = dict(env or {}, **(MAPPED if mapped else {}))
    # --chunk=16 keeps every product in lib/matmul.c's per-row regimes,
    # so a re-prefilled cache equals one built token by token.
    return rpc.Daemon(sub, model, "--max-tokens=100000", "--chunk=16",
                      *extra, env=env)


def weights_in(d):
    """Where the log's model summary says the weights are read from."""
    log = d.logtext()
    return ("mapped" if "(mapped from the file)" in log else
            "memory" if "(copied to memory" in log else None)


def refuses_start(d):
    """The line of the log that says why the daemon will not start, or
    None when it starts (it is stopped again)."""
    n = len(d.logtext())
    try:
        d.start(timeout=30)
    except RuntimeError:
        lines = [x for x in d.logtext()[n:].splitlines() if "fatal" in x]
        return lines[-1] if lines else "(exited without a word)"
    d.stop()
    return None

def refused_then_whole(d, damage, name):
    """In memory mode, after the damage: a restart is refused naming the
    file; once the file is whole again, session name continues with the
    undisturbed tokens from its stored cache."""
    why = refuses_start(d)
    t.ok(why is not None and model in why,
         "restarted on the %s file, it refuses to start, naming the "
         "file (%s)" % (damage, why))
    install(pristine)
    d.start()
    c = d.client()
    r, ids = chat(c, name, "And then?")
    t.ok(ids == want_mem[2] and not r["rebuilt"],
         "once the file is whole again, session %s continues with the "
         "undisturbed tokens, from its stored cache" % name)
    c.close()
    d.stop()


def reference(name, mapped):
    """Tokens of a daemon on the pristine model that nothing disturbs:
    three short turns of one session, and of another a short turn then a
    long one then a short one."""
    d = daemon(name, mapped=mapped)
    d.start()
    c = d.client()
    c.call("session.create", {"name": "x"})
    w = [chat(c, "x", txt)[1] for txt in ("Hello", "Go on", "And then?")]
    c.call("session.create", {"name": "v"})
    chat(c, "v", "Hello")
    r, long_ids = chat(c, "v", "Go on", LONG)
    after = chat(c, "v", "And then?")[1]
    where = weights_in(d)
    c.close()
    d.stop()
    return w, long_ids, r["finish"], after, where


install(pristine)
want_mem, want_long, long_finish, want_after, where = reference("ref", False)
t.ok(where == "memory" and long_finish == "length",
     "reference: by default the weights are in memory (%s), and the long "
     "reply runs to its length (%s, %d tokens)"
     % (where, long_finish, len(want_long)))
want, _, _, _, where = reference("ref-mapped", True)
t.ok(where == "mapped", "with MISTRAL_REPACK=0 they are read from the "
     "mapping (%s)" % where)

# A. In memory: truncated in place during a generation.
d = daemon("mem", env={"MISTRALD_TEST_MODEL_POLL_MS": "20"})
d.start()
c = d.client()
saved_and_victim(c, "v")
answered = d.logtext().count("turn answered")
err, res, got = truncate_under_generation(c, "v")
t.ok(d.alive() and err is None and res is not None
     and res["finish"] == long_finish and got == want_long,
     "in memory, truncated under a generation: the turn completes with "
     "the undisturbed daemon's %d tokens (%s, %d tokens)"
     % (len(want_long), (res or {}).get("finish", err), len(got)))
seen = wait_log(d, CHANGED % (model, "truncated"))
log = d.logtext()
pos = log.find(CHANGED % (model, "truncated"))
t.ok(seen and "still serving" in log[pos:pos + 400] and "next start loads "
     "the file as it is then" in log[pos:pos + 400]
     and log[:pos].count("turn answered") == answered
     and "SIGBUS" not in log and "MODEL FILE DAMAGED" not in log,
     "the log says, while the turn ran, that the file was truncated, that "
     "the model loaded at start is served and the next start loads the file")
st = c.call("status")
t.ok("model_error" not in st and cli_errors(d) == [],
     "status shows no error, nor does mistral status")
ids_new = ids_v = None
try:
    c.call("session.create", {"name": "new"})
    ids_new = chat(c, "new", "Hello")[1]
    ids_v = chat(c, "v", "And then?")[1]
except rpc.RpcError as e:
    t.diag("turns after the change: %s" % e)
t.ok(ids_new == want_mem[0] and ids_v == want_after,
     "further turns work and give the undisturbed tokens, in a new "
     "session and in the one that was generating")
with open(model, "r+b") as f:
    f.write(b"\xff" * 64)
time.sleep(0.3)
n = d.logtext().count("on disk; still serving the model as loaded")
t.ok(n == 1, "the change is logged once, not again for a further one "
     "(%d times)" % n)
settle(c)
c.close()
rc, _ = d.stop()
t.ok(rc == 0, "and the daemon stops cleanly (exit %s)" % rc)
d.env = {}
refused_then_whole(d, "damaged", "saved")

# B. In memory: rewritten in place while idle, by a cp of another model
# onto the file that stops halfway (killed, disk full): the file is empty
# for a while, then holds half of the other model.
d = daemon("mem-idle", env={"MISTRALD_TEST_MODEL_POLL_MS": "20"})
d.start()
c = d.client()
c.call("session.create", {"name": "r"})
chat(c, "r", "Hello")
settle(c)
with open(other, "rb") as f:
    half = f.read(os.path.getsize(other) // 2)
ids1 = ids2 = None
with open(model, "r+b") as f:
    f.truncate(0)
    f.flush()
    seen = wait_log(d, CHANGED % (model, "truncated"))
    try:
        c.call("session.create", {"name": "r2"})
        ids2 = chat(c, "r2", "Hello")[1]
    except rpc.RpcError as e:
        t.diag("new session on the emptied file: %s" % e)
    f.write(half)
time.sleep(0.1)
try:
    ids1 = chat(c, "r", "Go on")[1]
except rpc.RpcError as e:
    t.diag("old session on the rewritten file: %s" % e)
t.ok(seen and ids1 == want_mem[1] and ids2 == want_mem[0]
     and "model_error" not in c.call("status")
     and "SIGBUS" not in d.logtext(),
     "in memory, rewritten in place while idle: logged, and turns go on "
     "with the undisturbed tokens, in new sessions too")
settle(c)
c.close()
d.stop()
refused_then_whole(d, "rewritten", "r")

# C. Mapped: replaced by rename while serving.
d = daemon("rename", env={"MISTRALD_TEST_MODEL_POLL_MS": "100"},
           mapped=True)
d.start()
c = d.client()
fp = c.call("status")["model"]["fingerprint"]
c.call("session.create", {"name": "x"})
ids1 = chat(c, "x", "Hello")[1]
install(other)
logged = wait_log(d, "was replaced or removed on disk")
r, ids2 = chat(c, "x", "Go on")
st = c.call("status")
t.ok(ids1 == want[0] and ids2 == want[1] and "model_error" not in st
     and st["model"]["fingerprint"] == fp and cli_errors(d) == [],
     "replaced by rename: the daemon keeps serving the model it loaded, "
     "with the same tokens (and mistral status shows no error)")
t.ok(logged, "and logs the replacement once")
c.close()
rc, _ = d.stop()
d.start()
c = d.client()
r, _ = chat(c, "x", "And then?")
t.ok(rc == 0 and c.call("status")["model"]["fingerprint"] != fp
     and r["rebuilt"], "the next start loads the new file (the session's "
     "cache is rebuilt for it)")
c.close()
d.stop()

# D. Mapped: truncated in place during a generation (the poll is off, so
# the SIGBUS handler is what notices).
install(pristine)
d = daemon("sigbus", env={"MISTRALD_TEST_MODEL_POLL_MS": "0"}, mapped=True)
d.start()
c = d.client()
saved_and_victim(c, "victim")
err, res, got = truncate_under_generation(c, "victim")
alive = d.alive()
t.ok(alive, "truncated under a generation: the daemon did not die")
t.ok(res is not None and res["finish"] == "error"
     and res["error"]["code"] == UNAVAILABLE
     and model in res["error"]["message"]
     and "truncated" in res["error"]["message"],
     "the running turn ends with finish error, UNAVAILABLE, naming the "
     "file (%s)" % ((res or {}).get("error"),))
t.ok(wait_log(d, "SIGBUS reading the model file " + model)
     and wait_log(d, "MODEL FILE DAMAGED"),
     "the log says what happened and names the file")
e = refused(c, "saved") if alive else None
t.ok(e is not None and e.code == UNAVAILABLE and model in e.message,
     "further turns are refused with a clear error (%s)" % e)
st = c.call("status") if alive else {}
t.ok(model in st.get("model_error", ""), "status says why")
lines = cli_errors(d) if alive else None
t.ok(lines is not None and len(lines) == 1 and model in lines[0]
     and "truncated" in lines[0],
     "and mistral status prints it (%s)" % lines)
n_victim = None
try:
    lst = c.call("session.list")["sessions"]
    g = c.call("session.get", {"session": "victim"})
    c.call("session.export", {"session": "saved"})
    n_victim = g["messages"][-1]["tokens"]
    ok = len(lst) == 2 and g["messages"][-1]["tokens"] == len(got) > 0
except (rpc.RpcError, EOFError, OSError) as ex:
    t.diag(str(ex))
    ok = False
t.ok(ok, "sessions can still be listed, read and exported; the interrupted "
     "reply holds the %s tokens streamed" % n_victim)
c.close()
rc, secs = d.stop()
t.ok(rc == 0, "and the daemon stops cleanly (exit %s in %.2f s)" % (rc, secs))

# Whole again: the saved session continues as if nothing happened, and
# so does the interrupted one (compared with a reference that ran the
# same turns undisturbed, the reply cut at the same length).
install(pristine)
d.env = MAPPED
d.start()
c = d.client()
r, ids = chat(c, "saved", "And then?")
t.ok(ids == want[2] and not r["rebuilt"],
     "after a restart a session saved before the damage continues with "
     "the undisturbed daemon's tokens, from its stored cache")
r, ids = chat(c, "victim", "And then?")
c.close()
d.stop()
ref = daemon("ref2", mapped=True)
ref.start()
rc_ = ref.client()
rc_.call("session.create", {"name": "v"})
chat(rc_, "v", "Hello")
chat(rc_, "v", "Go on", {"temperature": 0, "max_tokens": len(got)})
want_v = chat(rc_, "v", "And then?")[1]
rc_.close()
ref.stop()
t.ok(ids == want_v and not r["rebuilt"],
     "and the interrupted session continues from its last good snapshot "
     "plus its transcript, with the same tokens (prefilled %d)"
     % r["usage"]["prompt_tokens"])

# E. Mapped: damage while idle, seen by the poll before anything faults.
for what, damage in (
        ("truncated", lambda: os.truncate(model, os.path.getsize(model) - 4096)),
        ("modified in place", lambda: open(model, "r+b").write(b"\0" * 64))):
    install(pristine)
    d = daemon("poll", env={"MISTRALD_TEST_MODEL_POLL_MS": "100"},
               mapped=True)
    d.start()
    c = d.client()
    c.call("session.create", {"name": "p%d" % len(what)})
    chat(c, "p%d" % len(what), "Hello")
    time.sleep(0.05)
    damage()
    seen = wait_log(d, "MODEL FILE DAMAGED: the model file %s was %s"
                    % (model, what))
    e = refused(c, "p%d" % len(what))
    t.ok(seen and e is not None and e.code == UNAVAILABLE and what in e.message,
         "%s while idle: noticed by the poll, turns refused (%s)" % (what, e))
    c.close()
    rc, _ = d.stop()
    t.ok(rc == 0 and d.alive() is False, "%s: clean stop" % what)

if t.failed:
    t.diag(d.logtext()[-3000:])
shutil.rmtree(tmp, ignore_errors=True)
t.done()
