#!/usr/bin/env python3
"""bench-daemon.py: aggregate decode speed through the real daemon.

Part of `make bench`.  Starts mistrald on a model written by tests/bench
(BENCH_DIR, default /var/tmp/mistrald-bench; BENCH_DAEMON_MODEL names the
row, default tinyllama-q8_0), then for 1, 2, 4 and 8 concurrent sessions
has each generate the same number of tokens at once over its own
connection, and reports the aggregate tokens per second (completion tokens
of all sessions over the wall time, up to the last reply, which comes once
the turn is stored) and the ratio to one session.  The daemon batches every
generating session into one forward pass per step, so the aggregate should
grow with the number of sessions.

Each round measures 1, 2, 4 and 8 sessions one after the other, and the
ratios are taken within a round, side by side: on a shared machine the
load moves between runs, and a single run per count once made a busy
moment look like a plateau (4 and 8 sessions alike).  The figures are the
medians over BENCH_DAEMON_ROUNDS rounds (default 3; 1 with BENCH_QUICK),
each line printed with the load average of the moment.

One thread drives all the connections (selectors): the client shares the
cores with the daemon's compute threads, and a thread per connection adds
its own wake-ups for nothing (measured: the same aggregate within noise,
so this hides no daemon cost).
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

testboot.need_msgpack("bench-daemon")

import json
import selectors
import shutil
import statistics
import time

rpc = testboot.load("rpc", "t-daemon_rpc.py")

TOKENS = int(os.environ.get("BENCH_DAEMON_TOKENS", "48"))
COUNTS = (1, 2, 4, 8)


def load1():
    with open("/proc/loadavg") as f:
        return f.read().split()[0]


def run(d, n):
    """n sessions generating TOKENS tokens each, at once: the aggregate
    tok/s and the tokens generated."""
    clients = [d.client(timeout=600) for _ in range(n)]
    sids = [c.call("session.create", {})["id"] for c in clients]
    # a short prompt in each so every session starts from the same state
    for c, s in zip(clients, sids):
        c.call("generate", {"session": s, "prompt": "Once upon a time",
                            "params": {"max_tokens": 1, "temperature": 0}})
    sel = selectors.DefaultSelector()
    waiting = {}
    done = 0
    t0 = time.monotonic()
    for c, s in zip(clients, sids):
        waiting[c] = c.send("generate", {
            "session": s, "prompt": "",
            "params": {"max_tokens": TOKENS, "temperature": 0}})
        sel.register(c.sock, selectors.EVENT_READ, c)
    while waiting:
        for key, _ in sel.select(timeout=600):
            c = key.data
            data = c.sock.recv(65536)
            if not data:
                raise EOFError("the daemon closed a connection")
            c.unpacker.feed(data)
            for msg in c.unpacker:
                if msg[0] != 1 or msg[1] != waiting.get(c):
                    continue        # a token notification
                if msg[2] is not None:
                    raise rpc.RpcError(msg[2])
                done += msg[3]["usage"]["completion_tokens"]
                sel.unregister(c.sock)
                del waiting[c]
    dt = time.monotonic() - t0
    sel.close()
    for c, s in zip(clients, sids):
        c.call("session.delete", {"session": s})
        c.close()
    return done / dt, done


def main():
    bdir = os.environ.get("BENCH_DIR", "/var/tmp/mistrald-bench")
    name = os.environ.get("BENCH_DAEMON_MODEL", "tinyllama-q8_0")
    model = os.path.join(bdir, name + ".gguf")
    if not os.path.exists(model):
        print("bench-daemon: %s is absent (tests/bench writes it)" % model,
              file=sys.stderr)
        return 1
    threads = os.environ.get("BENCH_THREADS", str(os.cpu_count() or 1))
    rounds = 1 if os.environ.get("BENCH_QUICK") else \
        max(1, int(os.environ.get("BENCH_DAEMON_ROUNDS", "3")))
    tmp = rpc.tmpdir()
    d = rpc.Daemon(tmp, model, threads=int(threads))
    try:
        d.start(timeout=300)
        with open("/proc/loadavg") as f:
            load_before = f.read().strip()
        rates = {n: [] for n in COUNTS}
        ratios = {n: [] for n in COUNTS}
        for r in range(rounds):
            for n in COUNTS:
                rate, toks = run(d, n)
                rates[n].append(rate)
                ratios[n].append(rate / rates[1][-1])
                print("daemon %-16s round %d, %d session%s: %6.2f tok/s "
                      "aggregate (%d tokens), x%.2f of one session, "
                      "load %s" % (name, r + 1, n, "" if n == 1 else "s",
                                   rate, toks, ratios[n][-1], load1()),
                      flush=True)
        med = {n: statistics.median(rates[n]) for n in COUNTS}
        medr = {n: statistics.median(ratios[n]) for n in COUNTS}
        if rounds > 1:
            for n in COUNTS:
                print("daemon %-16s %d session%s: %6.2f tok/s aggregate, "
                      "x%.2f of one session (medians of %d rounds)" %
                      (name, n, "" if n == 1 else "s", med[n], medr[n],
                       rounds), flush=True)
        with open("/proc/loadavg") as f:
            load = f.read().strip()
        out = os.environ.get("BENCH_DAEMON_JSON", "bench-daemon.json")
        with open(out, "w") as f:
            json.dump({"model": name, "threads": int(threads),
                       "tokens_per_session": TOKENS, "rounds": rounds,
                       "aggregate_tok_s": {str(k): v
                                           for k, v in med.items()},
                       "ratio_to_one": {str(k): v
                                        for k, v in medr.items()},
                       "runs_tok_s": {str(k): v for k, v in rates.items()},
                       "load_before": load_before,
                       "load_after": load}, f, indent=1)
        print("daemon bench: load average before %s, after %s; JSON in %s"
              % (load_before, load, out))
    finally:
        d.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
