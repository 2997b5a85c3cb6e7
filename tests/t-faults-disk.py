#!/usr/bin/env python3
"""t-faults-disk.py: a full disk under a running daemon, and a read-only
state directory.

The state directory is a small tmpfs of its own.  Filled up (a file
takes nearly all of it), the daemon's turns still complete, each reply
reports the failure to save (persist_error), the log says so, and the
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

try:
    import msgpack  # noqa: F401
except ImportError:
    if sys.executable != "/usr/bin/python3" and os.path.exists("/usr/bin/python3"):
        os.execv("/usr/bin/python3", ["/usr/bin/python3"] + sys.argv)
    print("1..0 # SKIP python3-msgpack is not installed")
    sys.exit(0)

import importlib.util
import shutil
import signal
import sqlite3
import subprocess
import time

spec = importlib.util.spec_from_file_location(
    "rpc", os.path.join(os.path.dirname(os.path.abspath(__file__)),
                        "t-daemon_rpc.py"))
rpc = importlib.util.module_from_spec(spec)
spec.loader.exec_module(rpc)

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
    d = rpc.Daemon(tmp, model)
    d.start()
    c = d.client()
    c.call("session.create", {"name": "full"})
    c.stream("chat", {"session": "full", "text": "Hello", "params": G})
    settle(c)
    filler = os.path.join(state, "filler")
    st = os.statvfs(state)
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, st.f_bavail * st.f_frsize - 16384))
    reported = None
    done = 1
    for i in range(40):
        r, _ = c.stream("chat", {"session": "full", "text": "Turn %d" % i,
                                 "params": G})
        if r["finish"] not in ("length", "stop"):
            break
        done += 1
        if "persist_error" in r:
            reported = r["persist_error"]
            if i >= 2:
                break
    lag = c.call("status")["disk"]["snapshot_lag"]
    t.ok(reported is not None and d.alive(),
         "disk full: the turns complete and report the failure to save (%s)"
         % reported)
    t.ok(lag > 0, "disk full: the saves are kept for a retry")
    t.ok("saving failed (will retry)" in d.logtext(),
         "disk full: and the log says so")
    os.unlink(filler)
    ok = settle(c)
    r, _ = c.stream("chat", {"session": "full", "text": "After",
                             "params": G})
    done += 1
    t.ok(ok and "persist_error" not in r,
         "space is back: the retries stored everything")
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
