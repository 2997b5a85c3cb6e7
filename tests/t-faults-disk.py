#!/usr/bin/env python3
"""t-faults-disk.py: a full disk under a running daemon, and a read-only
state directory.

The state directory is a small tmpfs of its own.  A turn's result comes
only once the turn is committed: read with sqlite3 the moment the result
arrives, the database already holds its messages (the snapshot write is
slowed down so that a result sent before the commit would be caught).
Filled up (a file takes nearly all of it), the daemon's turns still
complete, and their results report that they are not stored
(persist_error) without waiting for the retries, even another session's
turn queued behind a fork that waits for them; the log says so, and the
saves are kept and retried; once the space is back they all land, and
PRAGMA integrity_check passes.  Remounted read-only (which the kernel
only allows with no file open for writing, so with the daemon stopped),
the daemon refuses to start with a message naming the directory; made
writable again, every turn is there.  (tests/t-daemon-restart.py covers
a file-size limit, which needs no privileges.)  Needs root and mount(8);
skipped otherwise.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import shutil
import signal
import sqlite3
import subprocess
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

t = rpc.Tap()
signal.alarm(300)
if os.getuid() != 0 or shutil.which("mount") is None:
    t.skip_all("needs root and mount(8) for a small tmpfs")
tmp = rpc.tmpdir()
state = os.path.join(tmp, "state")
os.makedirs(state)
r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700",
                    "tmpfs", state], capture_output=True, text=True)
if r.returncode != 0:
    shutil.rmtree(tmp, ignore_errors=True)
    t.skip_all("cannot mount a tmpfs here: %s" % r.stderr.strip())


def remount(opt):
    subprocess.run(["mount", "-o", "remount," + opt, state], check=True)


def integrity():
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state,
                                                          "mistrald.db"),
                         uri=True)
    try:
        return db.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        db.close()


def stored(sid, text, reply):
    """Is the turn (user text, reply) in the database right now, whole?
    The random model can emit a NUL byte; such a text is stored as a BLOB
    of its UTF-8 bytes."""
    db = sqlite3.connect("file:%s?mode=ro" % os.path.join(state,
                                                          "mistrald.db"),
                         uri=True)
    try:
        rows = [(seq, role, body.decode() if isinstance(body, bytes)
                 else body)
                for seq, role, body in db.execute(
                    "SELECT seq, role, text FROM messages WHERE "
                    "session = ? ORDER BY seq", (sid,))]
    finally:
        db.close()
    return any(rows[j][1:] == ("user", text)
               and rows[j + 1][1:] == ("assistant", reply)
               and rows[j + 1][0] == rows[j][0] + 1
               for j in range(len(rows) - 1))


def turn(c, sid, text):
    """A chat turn: (result, seconds from the end of its generation to
    its result, stored the moment it came)."""
    t0 = time.time()
    r, _ = c.stream("chat", {"session": sid, "text": text, "params": G})
    dt = time.time() - t0
    dt -= (r["usage"]["prefill_ms"] + r["usage"]["decode_ms"]) / 1e3
    return r, dt, stored(sid, text, r["text"])


def settle(c, secs=90):
    end = time.time() + secs
    while time.time() < end:
        if c.call("status")["disk"]["snapshot_lag"] == 0:
            return True
        time.sleep(0.1)
    return False


G = {"temperature": 0, "max_tokens": 40}
d = None
try:
    model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "81",
                        "--dim", "256", "--layers", "4", "--ffn", "512")
    # 150 ms per snapshot chunk written: a result sent before the commit
    # would reach the client well before the turn is in the database.
    d = rpc.Daemon(tmp, model, env={"MISTRALD_TEST_SNAPSHOT_DELAY_MS": "150"})
    d.start()
    c = d.client()
    sid = c.call("session.create", {"name": "full"})["id"]
    ok = True
    for i in range(3):
        r, dt, there = turn(c, sid, "Hello %d" % i)
        ok = ok and there and "persist_error" not in r
    t.ok(ok, "a turn's result arrives once the turn is in the database "
         "(the last %.2f s after its generation ended)" % dt)
    other = c.call("session.create", {"name": "other"})["id"]
    turn(c, other, "Hi")
    settle(c)
    filler = os.path.join(state, "filler")
    st = os.statvfs(state)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 16384))
    reported = []       # (persist_error, seconds, stored at the result)
    unreported = []     # the others: stored at the result and none
                        # after a reported one
    done = 3
    for i in range(40):
        r, dt, there = turn(c, sid, "Turn %d" % i)
        if r["finish"] not in ("length", "stop"):
            break
        done += 1
        if "persist_error" in r:
            reported.append((r["persist_error"], dt, there))
            if len(reported) >= 3:
                break
        else:
            unreported.append(there and not reported)
    lag = c.call("status")["disk"]["snapshot_lag"]
    t.ok(reported and d.alive(),
         "disk full: the turns complete and report the failure to save (%s)"
         % (reported[0][0] if reported else None))
    t.ok(len(reported) == 3 and all(unreported)
         and not any(x[2] for x in reported),
         "disk full: a turn reported not stored is not in the database, "
         "every later turn is reported too, and every turn not reported "
         "was stored")
    t.ok(reported and max(x[1] for x in reported) < 5
         and all("retried" in x[0] for x in reported),
         "disk full: the results do not wait for the retries (the slowest "
         "%.2f s after its generation) and say the save is being retried"
         % max([x[1] for x in reported] or [0]))
    t.ok(lag > 0, "disk full: the saves are kept for a retry")
    # A fork waits for every earlier job (here the retried saves) and
    # every later job waits for it, other sessions' saves included: their
    # results must not wait for it.
    c.call("session.fork", {"session": "full", "name": "copy"})
    c.sock.settimeout(20)
    try:
        r, dt, there = turn(c, other, "Behind the fork")
    except OSError:
        r, dt, there = {}, None, None
    c.sock.settimeout(60)
    t.ok(dt is not None and dt < 5 and not there
         and "retried" in r.get("persist_error", ""),
         "disk full: behind a fork that waits for those retries, another "
         "session's result does not wait either (%s s: %s)"
         % (dt and round(dt, 2), r.get("persist_error")))
    t.ok("saving failed (will retry)" in d.logtext(),
         "disk full: and the log says so")
    os.unlink(filler)
    ok = settle(c)
    r, _, there = turn(c, sid, "After")
    done += 1
    t.ok(ok and "persist_error" not in r and there,
         "space is back: the retries stored everything, and a new turn's "
         "result comes once it is stored")
    c.close()
    rc, _ = d.stop()
    t.ok(rc == 0 and integrity() == "ok", "clean stop, integrity_check ok")

    # Read-only: a file system cannot be remounted read-only under open
    # files, so this is the state directory being read-only at start.
    remount("ro")
    try:
        d.start(timeout=20)
        started = True
    except RuntimeError:
        started = False
    t.ok(not started and "read-only" in d.logtext().lower()
         and state in d.logtext(),
         "a read-only state directory: the daemon refuses to start, saying "
         "why and where")
    if started:
        d.stop()
    remount("rw")
    d.proc = None
    d.start()
    c = d.client()
    g = c.call("session.get", {"session": "full"})
    c.close()
    d.stop()
    t.ok(g["turns"] == done and integrity() == "ok",
         "writable again: every turn is there (%d of %d)"
         % (g["turns"], done))
finally:
    if d is not None and d.alive():
        d.stop()
    subprocess.run(["umount", "-l", state])
    if t.failed and d is not None:
        t.diag(d.logtext()[-3000:])
    shutil.rmtree(tmp, ignore_errors=True)
t.done()
