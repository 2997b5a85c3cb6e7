#!/usr/bin/env python3
"""loadgen.py: concurrent chat load against a running mistrald.

N clients, each on its own connection with its own session, run T turns
at once (greedy, so replies are deterministic).  Afterwards every
conversation is replayed alone, one request at a time, on a fresh
session; any difference is a lost or mixed-up token.  Prints throughput
and the p50/p99 time to first token and per-token latency.

    loadgen.py -s SOCKET [-n CLIENTS] [-t TURNS] [-m MAX_TOKENS]

Exit status 0 when every request succeeded and every reply matched.
Uses python3-msgpack only (tests/t-daemon_rpc.py's client).
"""
import argparse
import os
import sys
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import testboot  # noqa: E402

rpc = testboot.load("rpc", "t-daemon_rpc.py")

TEXTS = ["Hello there", "What happened next?", "Tell me about the sea",
         "Why?", "And the little dog?", "Go on"]


def pct(v, p):
    if not v:
        return 0.0
    v = sorted(v)
    return v[min(len(v) - 1, int(p / 100.0 * len(v)))]


def conversation(cl, name, which, turns, max_tokens, stats=None):
    """Run one session's turns (texts chosen by which); returns the list
    of replies' ids."""
    cl.call("session.create", {"name": name})
    out = []
    for k in range(turns):
        t0 = time.monotonic()
        times = []
        ids = []

        def note(m, a):
            if m == "token" and a["ids"]:
                times.append(time.monotonic())
                ids.extend(a["ids"])
        text = TEXTS[(which + k) % len(TEXTS)]
        cl.call("chat", {"session": name, "text": text,
                         "params": {"temperature": 0,
                                    "max_tokens": max_tokens}}, note)
        out.append(ids)
        if stats is not None and times:
            stats["ttft"].append(times[0] - t0)
            stats["tpt"].extend(b - a for a, b in zip(times, times[1:]))
            stats["tokens"] += len(ids)
    return out


def run(sock, clients, turns, max_tokens, prefix="load"):
    """Returns (errors, differences, report dict): the exceptions of
    clients that failed, and a line per conversation that differed from
    its replay alone."""
    results = [None] * clients
    stats = {"ttft": [], "tpt": [], "tokens": 0}
    lock = threading.Lock()

    def worker(i):
        local = {"ttft": [], "tpt": [], "tokens": 0}
        try:
            cl = rpc.Client(sock, timeout=300)
            results[i] = conversation(cl, "%s%d" % (prefix, i), i, turns,
                                      max_tokens, local)
            cl.close()
        except Exception as e:  # noqa: BLE001
            results[i] = e
        with lock:
            stats["ttft"] += local["ttft"]
            stats["tpt"] += local["tpt"]
            stats["tokens"] += local["tokens"]

    t0 = time.monotonic()
    th = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for x in th:
        x.start()
    for x in th:
        x.join()
    wall = time.monotonic() - t0
    errors = [r for r in results if isinstance(r, Exception)]

    # Replay every conversation alone.
    t1 = time.monotonic()
    mismatches = 0
    details = []
    cl = rpc.Client(sock, timeout=300)
    for i in range(clients):
        if isinstance(results[i], Exception):
            continue
        alone = conversation(cl, "%s%d-alone" % (prefix, i), i, turns,
                             max_tokens)
        if alone != results[i]:
            mismatches += 1
            k = next(k for k in range(turns) if alone[k] != results[i][k])
            a, b = alone[k], results[i][k]
            j = next((j for j in range(min(len(a), len(b)))
                      if a[j] != b[j]), min(len(a), len(b)))
            details.append("client %d turn %d differs from token %d: "
                           "alone %s, under load %s" % (i, k, j, a[j:j + 6],
                                                        b[j:j + 6]))
    cl.close()
    report = {
        "clients": clients, "turns": turns, "errors": len(errors),
        "mismatches": mismatches, "tokens": stats["tokens"],
        "seconds": wall, "tokens_per_s": stats["tokens"] / wall,
        "replay_seconds": time.monotonic() - t1,
        "ttft_p50_ms": pct(stats["ttft"], 50) * 1e3,
        "ttft_p99_ms": pct(stats["ttft"], 99) * 1e3,
        "token_p50_ms": pct(stats["tpt"], 50) * 1e3,
        "token_p99_ms": pct(stats["tpt"], 99) * 1e3,
    }
    return errors, details, report


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-s", "--socket", required=True)
    ap.add_argument("-n", "--clients", type=int, default=16)
    ap.add_argument("-t", "--turns", type=int, default=3)
    ap.add_argument("-m", "--max-tokens", type=int, default=32)
    a = ap.parse_args()
    errors, diffs, rep = run(a.socket, a.clients, a.turns, a.max_tokens,
                             "load%d-" % os.getpid())
    for e in errors[:5]:
        print("error: %s" % e, file=sys.stderr)
    for x in diffs[:5]:
        print("differs: %s" % x, file=sys.stderr)
    print(" ".join("%s=%s" % (k, ("%.1f" % v) if isinstance(v, float)
                              else v) for k, v in rep.items()))
    sys.exit(1 if errors or diffs else 0)


if __name__ == "__main__":
    main()
