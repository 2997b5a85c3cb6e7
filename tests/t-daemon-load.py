#!/usr/bin/env python3
"""t-daemon-load.py: 16 concurrent clients, several turns each, through
tests/loadgen.py: zero errors, every reply equal to the same conversation
replayed alone (no lost or mixed-up tokens), latencies within generous
bounds (the machine is shared: the figures are printed), and the
daemon's RSS back near where it was.  MISTRALD_LONG=1 runs the opt-in
size, 64 clients x 5 turns; `tests/loadgen.py -s SOCKET -n 64` does the
same against any running daemon.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack()

import shutil
import signal

rpc = testboot.load("rpc", "t-daemon_rpc.py")
loadgen = testboot.load("loadgen", "loadgen.py")

LONG = os.environ.get("MISTRALD_LONG", "") not in ("", "0")
CLIENTS, TURNS, TOKENS = (64, 5, 32) if LONG else (16, 3, 24)
t = rpc.Tap()
signal.alarm(1200 if LONG else 300)
tmp = rpc.tmpdir()
# A quantized model: its products take int8 activations, which make every
# token's logits independent of the rest of the batch (lib/quant-internal.h,
# DESIGN 6-7), so each reply must equal its replay alone bit for bit, at
# the default chunk, near-ties of random weights included.  A difference
# is a lost or mixed-up token.
model = rpc.mkmodel(os.path.join(tmp, "m.gguf"), "--type", "q8_0",
                    "--seed", "21")
t.diag("model: %s" % model)
LIMITS = ["--max-sessions-per-uid=%d" % (3 * CLIENTS),
          "--max-requests-per-uid=%d" % (2 * CLIENTS)]
d = rpc.Daemon(tmp, model, *LIMITS)
d.start()


def rss():
    with open("/proc/%d/status" % d.proc.pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) << 10
    return 0


try:
    rss0 = rss()
    errors, diffs, rep = loadgen.run(d.sock, CLIENTS, TURNS, TOKENS)
    mismatches = len(diffs)
    for x in diffs[:5]:
        t.diag("differs: %s" % x)
    rss1 = rss()
    for e in errors[:3]:
        t.diag("error: %s" % e)
    t.ok(not errors, "%d clients x %d turns: no errors" % (CLIENTS, TURNS))
    t.ok(mismatches == 0, "every reply equals the conversation replayed "
         "alone (%d differ)" % mismatches)
    t.diag(" ".join("%s=%s" % (k, ("%.1f" % v) if isinstance(v, float)
                               else v) for k, v in rep.items()))
    t.diag("rss_before_mib=%.1f rss_after_mib=%.1f" % (rss0 / 2**20,
                                                       rss1 / 2**20))
    t.ok(rep["tokens"] > CLIENTS * TURNS and rep["tokens_per_s"] > 0,
         "throughput: %d tokens in %.1f s, %.0f tokens/s"
         % (rep["tokens"], rep["seconds"], rep["tokens_per_s"]))
    # Bounds loose enough for a loaded 2-core machine; the figures above
    # are what to look at.
    t.ok(rep["ttft_p99_ms"] < 30000 and rep["token_p99_ms"] < 10000,
         "p99 time to first token %.0f ms, p99 per token %.0f ms"
         % (rep["ttft_p99_ms"], rep["token_p99_ms"]))
    c = d.client()
    st = c.call("status")
    kv = st["memory"]["kv_bytes"]
    with open("/proc/%d/maps" % d.proc.pid) as f:
        asan = "libasan" in f.read()
    t.ok(asan or rss1 - rss0 < kv + (64 << 20),
         "RSS grew %.1f MiB, of which %.1f MiB are the %d resident "
         "sessions' caches%s" % ((rss1 - rss0) / 2**20, kv / 2**20,
                                 st["sessions"]["resident"],
                                 " # SKIP RSS under AddressSanitizer"
                                 if asan else ""))
    t.ok(st["sessions"]["active"] == 0 and st["queue"]["running"] == 0,
         "nothing left running")
    c.close()
finally:
    rc, _ = d.stop()
t.ok(rc == 0, "clean stop after the load")
shutil.rmtree(tmp, ignore_errors=True)
t.done()
