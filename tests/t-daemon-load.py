#!/usr/bin/env python3
"""t-daemon-load.py: 16 concurrent clients, several turns each, through
tests/loadgen.py: zero errors, and every reply equal to the same
conversation replayed alone (no lost or mixed-up tokens).  The opt-in
long run is `tests/loadgen.py -s SOCKET -n 64` against any daemon.
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

here = os.path.dirname(os.path.abspath(__file__))


def load(name, file):
    spec = importlib.util.spec_from_file_location(name,
                                                  os.path.join(here, file))
    m = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(m)
    return m


rpc = load("rpc", "t-daemon_rpc.py")
loadgen = load("loadgen", "loadgen.py")

t = rpc.Tap()
signal.alarm(300)
tmp = rpc.tmpdir()
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--seed", "21")
d = rpc.Daemon(tmp, model, "--max-sessions-per-uid=100",
               "--max-requests-per-uid=100")
d.start()
try:
    errors, mismatches, rep = loadgen.run(d.sock, 16, 3, 24)
    for e in errors[:3]:
        t.diag("error: %s" % e)
    t.ok(not errors, "16 clients x 3 turns: no errors")
    t.ok(mismatches == 0, "every reply equals the conversation replayed "
         "alone (%d differ)" % mismatches)
    t.diag(" ".join("%s=%s" % (k, ("%.1f" % v) if isinstance(v, float)
                               else v) for k, v in rep.items()))
    c = d.client()
    st = c.call("status")
    t.ok(st["sessions"]["active"] == 0 and st["queue"]["running"] == 0,
         "nothing left running")
    c.close()
finally:
    rc, _ = d.stop()
t.ok(rc == 0, "clean stop after the load")
shutil.rmtree(tmp, ignore_errors=True)
t.done()
