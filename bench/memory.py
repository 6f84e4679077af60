#!/usr/bin/env python3
"""Memory: private RSS per worker with and without forksafe (target
<= +64 KiB), and the master's memory over many respawns.

Per worker: Private_Clean + Private_Dirty from /proc/PID/smaps_rollup (the
pages only that worker holds: its copy-on-write copies and its own
allocations), after each worker has served requests, for fresh instances
started BENCH_MEMORY_ROUNDS times (each at a padding of Python's
interned-string table, see bench/spawn.py): forksafe loaded with no subscription, with one
native post-fork handler, and with the throughput benchmark's three
subscriptions (one of them a python: handler in the worker).

Master over respawns: bare and forksafe (native, python: and exec:
handlers on pre-fork / post-fork / post-fork-parent / worker-exit), one
worker each with max-requests = 1, respawned in alternating chunks up to
BENCH_RESPAWNS each or BENCH_CHURN_SECONDS in all; the master's RssAnon
(heap and other private pages: what a leak grows) and VmRSS at a
baseline after the first chunk and at the end.
"""

import re
import sys
import time

from common import (RESPAWNING, SIMPLE_APP, THREE_SUBSCRIPTIONS, TWO_WORKERS, Uwsgi, env_int, median, padded, private_kib, report,
                    status_kib, table, verdict)
from spawn import PADS, Churn

# Round r pads Python's interned-string table with PADS[r % len(PADS)]
# strings, as the spawn benchmark does: a worker that must copy that table
# holds a private copy of it, and which images do is luck.
ROUNDS = env_int("BENCH_MEMORY_ROUNDS", 6)
RESPAWNS = env_int("BENCH_RESPAWNS", 5000)
CHURN_SECONDS = env_int("BENCH_CHURN_SECONDS", 600)
CHUNK = 250
TARGET_KIB = 64

WORKER_VARIANTS = [
    ("bare", TWO_WORKERS + "plugins = python3\n"),
    ("forksafe, no subscription", TWO_WORKERS + "plugins = python3,forksafe\n"),
    # the first of the three subscriptions only
    ("forksafe, dl: post-fork", TWO_WORKERS + re.sub(r"forksafe-subscribe = worker-.*\n", "",
                                                    THREE_SUBSCRIPTIONS)),
    ("forksafe, 3 subscriptions", TWO_WORKERS + THREE_SUBSCRIPTIONS),
]

CHURN_COMMON = RESPAWNING + SIMPLE_APP
CHURN_VARIANTS = [
    ("bare", CHURN_COMMON + "plugins = python3\n"),
    ("forksafe", CHURN_COMMON + """plugins = python3,forksafe
forksafe-settings = %p
forksafe-subscribe = pre-fork,post-fork,post-fork-parent,worker-exit dl:{event_log_so}:record
forksafe-subscribe = pre-fork,worker-exit exec:true
forksafe-subscribe = post-fork-parent,post-fork python:bench_handlers:on_post_fork

[app:main]
forksafe.event_log = /dev/null
"""),
]


def worker_memory():
    per_variant = {name: [] for name, _ in WORKER_VARIANTS}
    for r in range(ROUNDS):
        pad = PADS[r % len(PADS)]
        servers = [Uwsgi(name, padded(body)).start(
            ["env", "FORKSAFE_BENCH_PAD=%d" % pad]) for name, body in WORKER_VARIANTS]
        for u in servers:
            u.wait_ready()
        for u in servers:
            # enough requests that both workers have served several
            for _ in range(50):
                u.get()
            time.sleep(0.2)
            pids = u.workers()
            if len(pids) != 2:
                raise RuntimeError("%s: expected 2 workers, found %s" % (u.name, pids))
            per_variant[u.name].extend(private_kib(p) for p in pids)
        for u in servers:
            u.stop()
    base = median(per_variant["bare"])
    rows = []
    for name, values in per_variant.items():
        extra = median(values) - base
        target = "baseline" if name == "bare" else "<= +%d KiB: %s" % (
            TARGET_KIB, verdict(extra <= TARGET_KIB))
        rows.append((name, len(values), "%d" % median(values), "%d-%d" % (min(values), max(values)),
                     "%+d" % extra, target))
    report("5a-worker-memory", "Private memory per worker (%d instances x 2 workers per variant, "
           "paddings %s)" % (ROUNDS, ", ".join(str(p) for p in PADS)), table(("variant", "workers", "median private KiB", "range", "vs bare KiB",
                            "target"), rows))


def master_memory():
    servers = [Uwsgi(name, body).start() for name, body in CHURN_VARIANTS]
    for u in servers:
        u.wait_ready()
    churns = {u.name: Churn(u) for u in servers}
    done = {u.name: 0 for u in servers}
    samples = {}
    deadline = time.monotonic() + CHURN_SECONDS
    first = True
    while min(done.values()) < RESPAWNS and time.monotonic() < deadline:
        for u in servers:
            step = min(CHUNK, RESPAWNS - done[u.name])
            for _ in range(step):
                if time.monotonic() >= deadline:
                    break
                churns[u.name].cycle()
                done[u.name] += 1
            u.poke()  # the last worker is forked
            time.sleep(0.05)
            sample = (done[u.name], status_kib(u.pid, "RssAnon"), status_kib(u.pid, "VmRSS"))
            if first:
                samples[u.name] = [sample]
            else:
                samples[u.name].append(sample)
        if first:
            first = False
        print("master churn: %s" % ", ".join("%s %d" % kv for kv in done.items()), flush=True)
    for u in servers:
        u.stop()
    rows = []
    for name, s in samples.items():
        (n0, anon0, rss0), (n1, anon1, rss1) = s[0], s[-1]
        rows.append((name, "%d -> %d" % (n0, n1), "%d -> %d (%+d)" % (anon0, anon1, anon1 - anon0),
                     "%d -> %d (%+d)" % (rss0, rss1, rss1 - rss0)))
    report("5b-master-memory", "Master memory over respawns (baseline after the first chunk)",
           table(("variant", "respawns", "RssAnon KiB", "VmRSS KiB"), rows)
           + "\n\nBounded by BENCH_RESPAWNS=%d per variant and BENCH_CHURN_SECONDS=%d."
           % (RESPAWNS, CHURN_SECONDS))


def main():
    worker_memory()
    master_memory()
    return 0


if __name__ == "__main__":
    sys.exit(main())
