#!/usr/bin/env python3
"""bench-daemon.py: aggregate decode speed through the real daemon.

Part of `make bench`.  Starts mistrald on a model written by tests/bench
(BENCH_DIR, default /var/tmp/mistrald-bench; BENCH_DAEMON_MODEL names the
row, default tinyllama-q8_0), then for 1, 2, 4 and 8 concurrent sessions
has each generate the same number of tokens at once over its own
connection, and reports the aggregate tokens per second (completion tokens
of all sessions over the wall time) and the ratio to one session.  The
daemon batches every generating session into one forward pass per step,
so the aggregate should grow with the number of sessions.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack("bench-daemon")

import json
import shutil
import threading
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

TOKENS = int(os.environ.get("BENCH_DAEMON_TOKENS", "48"))


def run(d, n):
    """n sessions generating TOKENS tokens each, at once."""
    clients = [d.client(timeout=600) for _ in range(n)]
    sids = [c.call("session.create", {})["id"] for c in clients]
    # a short prompt in each so every session starts from the same state
    for c, s in zip(clients, sids):
        c.call("generate", {"session": s, "prompt": "Once upon a time",
                            "params": {"max_tokens": 1, "temperature": 0}})
    done = [0] * n
    barrier = threading.Barrier(n + 1)

    def one(i):
        barrier.wait()
        res = clients[i].call("generate", {
            "session": sids[i], "prompt": "",
            "params": {"max_tokens": TOKENS, "temperature": 0}})
        done[i] = res["usage"]["completion_tokens"]

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.time()
    for t in threads:
        t.join()
    dt = time.time() - t0
    for c, s in zip(clients, sids):
        c.call("session.delete", {"session": s})
        c.close()
    return sum(done) / dt, sum(done)


def main():
    bdir = os.environ.get("BENCH_DIR", "/var/tmp/mistrald-bench")
    name = os.environ.get("BENCH_DAEMON_MODEL", "tinyllama-q8_0")
    model = os.path.join(bdir, name + ".gguf")
    if not os.path.exists(model):
        print("bench-daemon: %s is absent (tests/bench writes it)" % model,
              file=sys.stderr)
        return 1
    threads = os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1))
    tmp = rpc.tmpdir()
    d = rpc.Daemon(tmp, model, threads=int(threads))
    try:
        d.start(timeout=300)
        rates = {}
        for n in (1, 2, 4, 8):
            rate, toks = run(d, n)
            rates[n] = rate
            print("daemon %-16s %d session%s: %6.2f tok/s aggregate "
                  "(%d tokens), x%.2f of one session" %
                  (name, n, "" if n == 1 else "s", rate, toks,
                   rate / rates[1]), flush=True)
        with open("/proc/loadavg") as f:
            load = f.read().strip()
        out = os.environ.get("BENCH_DAEMON_JSON", "bench-daemon.json")
        with open(out, "w") as f:
            json.dump({"model": name, "threads": int(threads),
                       "tokens_per_session": TOKENS,
                       "aggregate_tok_s": {str(k): v
                                           for k, v in rates.items()},
                       "load_after": load}, f, indent=1)
        print("daemon bench: load average after %s; JSON in %s"
              % (load, out))
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
