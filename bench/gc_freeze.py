#!/usr/bin/env python3
"""recipe:gc-freeze: worker private memory after 1,000 requests, with the
recipe and without it, side by side in one run.

Two uWSGI instances of the same app (bench/apps/gc_heap_app.py: ~150 MiB and
~570,000 objects tracked by the garbage collector, built at import in the
master; apps preloaded, 4 workers), both with forksafe loaded; one
subscribes `pre-fork recipe:gc-freeze` (the master collects and freezes
before its first fork).  Each instance maps one http-socket to each worker
(`map-socket`), so every worker serves exactly BENCH_GC_REQUESTS / 4
requests; the instances and workers take turns request by request, one
request at a time.  The
app's requests never call gc.collect(): what they allocate and keep makes
the collector run full (generation 2) collections on its own, and each
answer says how many this worker ran since the fork (a gc callback; checked
against gc.get_stats()).  A worker that ran none makes the run fail: it
would not measure what the recipe is for.

After the requests, from /proc/PID/smaps_rollup of each worker and of the
master: private memory (Private_Clean + Private_Dirty, i.e. USS: the pages
only that process maps) and Pss (private + its share of the shared pages),
and, for the instance, the sum of the Pss of the master and its workers
(what the machine pays).  Ratios are recipe / without, medians over the
workers of BENCH_GC_ROUNDS rounds of fresh instances.  The master's pause
is read from the recipe's own log line (it times gc.collect(), gc.freeze()
and the gc.get_freeze_count() it logs).

Bounded: BENCH_GC_REQUESTS per instance, BENCH_GC_SECONDS in all.
Knobs: BENCH_GC_ROUNDS (2), BENCH_GC_REQUESTS (1000), BENCH_GC_RECORDS
(80000 records in the master), BENCH_GC_SECONDS (600).
"""

import json
import os
import re
import sys
import time
import urllib.request

from common import Uwsgi, env_int, median, report, table
from harness import free_port, wait_for, workers_accepting

ROUNDS = env_int("BENCH_GC_ROUNDS", 2)
REQUESTS = env_int("BENCH_GC_REQUESTS", 1000)
RECORDS = env_int("BENCH_GC_RECORDS", 80000)
SECONDS = env_int("BENCH_GC_SECONDS", 600)
WORKERS = 4

# {port} is worker 1's socket (common.Uwsgi fills it in); PORT2..PORT4 are
# filled in per instance below.  map-socket N:W: socket N is served by
# worker W only.
INSTANCE = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 4
pidfile = {dir}/uwsgi.pid
http-socket = 127.0.0.1:{port}
http-socket = 127.0.0.1:PORT2
http-socket = 127.0.0.1:PORT3
http-socket = 127.0.0.1:PORT4
map-socket = 0:1
map-socket = 1:2
map-socket = 2:3
map-socket = 3:4
stats = {stats}
pythonpath = {bench_apps}
; forksafe's Python package, for recipe: handlers (both variants: same image)
pythonpath = {plugin_dir}/python
wsgi-file = {bench_apps}/gc_heap_app.py
disable-logging = true
"""
VARIANTS = [
    ("without", INSTANCE),
    ("recipe:gc-freeze", INSTANCE + "forksafe-subscribe = pre-fork recipe:gc-freeze\n"),
]

FREEZE_LINE = re.compile(r"recipe:gc-freeze: the master froze (\d+) objects before its first fork "
                         r"of generation \S+ \((\d+) collected first, ([0-9.]+) ms\)")
BUILT_LINE = re.compile(r"\[gc_heap_app\] pid \d+ built (\d+) records in ([0-9.]+) s: (\d+) objects")


def smaps(pid):
    """{field: KiB} of /proc/PID/smaps_rollup."""
    out = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            fields = rest.split()
            if len(fields) == 2 and fields[1] == "kB":
                out[key] = int(fields[0])
    out["Private"] = out["Private_Clean"] + out["Private_Dirty"]
    return out


def mb(kib):
    return kib / 1024.0


def get_json(port, timeout=60):
    with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=timeout) as r:
        return json.loads(r.read())


class Instance(object):
    def __init__(self, name, body):
        self.ports_extra = [free_port() for _ in range(WORKERS - 1)]
        for n, port in enumerate(self.ports_extra, 2):
            body = body.replace("PORT%d" % n, str(port))
        self.u = Uwsgi(name, body)
        self.name = name
        self.ports = [self.u.port] + self.ports_extra
        self.last = {}      # port -> the last answer
        self.pids = {}      # port -> worker pid

    def start(self):
        self.u.start(["env", "FORKSAFE_BENCH_GC_RECORDS=%d" % RECORDS])
        return self

    def wait_ready(self, deadline):
        pidfile = os.path.join(self.u.dir, "uwsgi.pid")

        def master_up():
            if self.u.proc.poll() is not None:
                raise RuntimeError("%s: uWSGI exited (%s):\n%s"
                                   % (self.name, self.u.proc.returncode, self.u.log_tail()))
            try:
                with open(pidfile) as f:
                    return int(f.read().strip() or 0) == self.u.pid
            except (OSError, ValueError):
                return False

        def accepting():
            master_up()
            return workers_accepting(self.u.stats, WORKERS)

        wait_for(master_up, timeout=max(1, deadline - time.monotonic()), what="%s pidfile" % self.name)
        wait_for(accepting, timeout=max(1, deadline - time.monotonic()),
                 what="%s: %d workers accepting" % (self.name, WORKERS))
        workers = sorted(self.u.workers())
        if len(workers) != WORKERS:
            raise RuntimeError("%s: expected %d workers, found %s" % (self.name, WORKERS, workers))
        self.start_memory = {pid: smaps(pid) for pid in workers}

    def request(self, port):
        answer = get_json(port)
        pid = self.pids.setdefault(port, answer["pid"])
        if answer["pid"] != pid:
            raise RuntimeError("%s: port %d answered from pid %d, then %d (map-socket?)"
                               % (self.name, port, pid, answer["pid"]))
        self.last[port] = answer

    def log(self):
        return self.u.log_tail(10 ** 7)

    def measure(self):
        pids = [self.pids[p] for p in self.ports]
        children = set(self.u.workers())
        if len(set(pids)) != WORKERS or not set(pids) <= children:
            raise RuntimeError("%s: the ports were served by %s; the master's children are %s"
                               % (self.name, pids, sorted(children)))
        workers = []
        for port in self.ports:
            answer = self.last[port]
            pid = answer["pid"]
            if answer["full_collections"] != answer["full_collections_stats"]:
                raise RuntimeError("%s: worker %d: gc callback counted %d full collections, "
                                   "gc.get_stats() %d since its first request"
                                   % (self.name, pid, answer["full_collections"],
                                      answer["full_collections_stats"]))
            workers.append({"pid": pid, "served": answer["served"],
                            "full": answer["full_collections"],
                            "full_ms": answer["full_ms_total"] / max(1, answer["full_collections"]),
                            "start": self.start_memory.get(pid, {}).get("Private", 0),
                            "mem": smaps(pid)})
        master = smaps(self.u.pid)
        log = self.log()
        freeze = FREEZE_LINE.search(log)
        built = BUILT_LINE.search(log)
        return {"workers": workers, "master": master,
                "total_pss": master["Pss"] + sum(w["mem"]["Pss"] for w in workers),
                "freeze": (int(freeze.group(1)), int(freeze.group(2)), float(freeze.group(3)))
                if freeze else None,
                "tracked": int(built.group(3)) if built else None,
                "build_s": float(built.group(2)) if built else None}

    def stop(self):
        self.u.stop()


def one_round(r, deadline):
    instances = [Instance(name, body) for name, body in VARIANTS]
    t0 = time.monotonic()
    try:
        for inst in instances:
            inst.start()
        for inst in instances:
            inst.wait_ready(deadline)
        t1 = time.monotonic()
        per_worker = REQUESTS // WORKERS
        for i in range(per_worker):
            if time.monotonic() > deadline:
                raise RuntimeError("BENCH_GC_SECONDS=%d spent after %d of %d requests per worker"
                                   % (SECONDS, i, per_worker))
            for w in range(WORKERS):
                for inst in instances:
                    inst.request(inst.ports[w])
        results = {inst.name: inst.measure() for inst in instances}
        t2 = time.monotonic()
        for name, res in results.items():
            if name.startswith("recipe:") and not res["freeze"]:
                tail = [inst for inst in instances if inst.name == name][0].u.log_tail()
                raise RuntimeError("%s: no recipe:gc-freeze line in the log:\n%s" % (name, tail))
            if name == "without" and res["freeze"]:
                raise RuntimeError("without: the recipe ran")
            idle = [w["pid"] for w in res["workers"] if w["full"] == 0]
            if idle:
                raise RuntimeError("%s: workers %s ran no full collection in %d requests: the run "
                                   "does not measure what gc-freeze is for" % (name, idle, per_worker))
    finally:
        for inst in instances:
            inst.stop()
    print("round %d: ready in %.1f s, %d requests in %.1f s, stopped in %.1f s"
          % (r + 1, t1 - t0, 2 * REQUESTS, t2 - t1, time.monotonic() - t2), flush=True)
    return results


def describe_round(r, results):
    lines = []
    for name, res in results.items():
        ws = res["workers"]
        lines.append("- round %d, %s: workers private MiB %s (at start %s), Pss MiB %s, full collections %s "
                     "(ms each %s); master Rss %.1f MiB, private %.1f MiB, Pss %.1f MiB; instance Pss %.1f MiB%s"
                     % (r + 1, name, " ".join("%.1f" % mb(w["mem"]["Private"]) for w in ws),
                        " ".join("%.1f" % mb(w["start"]) for w in ws),
                        " ".join("%.1f" % mb(w["mem"]["Pss"]) for w in ws),
                        " ".join(str(w["full"]) for w in ws),
                        " ".join("%.1f" % w["full_ms"] for w in ws),
                        mb(res["master"]["Rss"]), mb(res["master"]["Private"]), mb(res["master"]["Pss"]),
                        mb(res["total_pss"]),
                        "; froze %d objects in %.1f ms (%d collected first)"
                        % (res["freeze"][0], res["freeze"][2], res["freeze"][1]) if res["freeze"] else ""))
    return lines


def main():
    deadline = time.monotonic() + SECONDS
    rounds = []
    notes = []
    for r in range(ROUNDS):
        results = one_round(r, deadline)
        rounds.append(results)
        notes.extend(describe_round(r, results))
        print("\n".join(notes[-len(results):]), flush=True)

    agg = {}
    for name, _ in VARIANTS:
        ws = [w for res in rounds for w in res[name]["workers"]]
        ms = [res[name]["master"] for res in rounds]
        agg[name] = {
            "workers": len(ws),
            "served": sorted(set(w["served"] for w in ws)),
            "full": [w["full"] for w in ws],
            "full_ms": median([w["full_ms"] for w in ws]),
            "start": median([w["start"] for w in ws]),
            "private": [w["mem"]["Private"] for w in ws],
            "pss": median([w["mem"]["Pss"] for w in ws]),
            "master_private": median([m["Private"] for m in ms]),
            "master_pss": median([m["Pss"] for m in ms]),
            "total_pss": median([res[name]["total_pss"] for res in rounds]),
        }
    base, rec = agg["without"], agg["recipe:gc-freeze"]
    rows = []
    for name, a in agg.items():
        rows.append((name, a["workers"], "/".join(str(s) for s in a["served"]),
                     "%d-%d" % (min(a["full"]), max(a["full"])), "%.1f" % a["full_ms"],
                     "%.1f" % mb(a["start"]),
                     "%.1f" % mb(median(a["private"])),
                     "%.1f-%.1f" % (mb(min(a["private"])), mb(max(a["private"]))),
                     "%.1f" % mb(a["pss"]), "%.1f / %.1f" % (mb(a["master_private"]), mb(a["master_pss"])),
                     "%.1f" % mb(a["total_pss"])))
    ratio = median(rec["private"]) / median(base["private"])
    rows.append(("ratio recipe / without", "", "", "", "%.3fx" % (rec["full_ms"] / base["full_ms"]), "",
                 "%.3fx" % ratio, "", "%.3fx" % (rec["pss"] / base["pss"]),
                 "%.3fx / %.3fx" % (rec["master_private"] / base["master_private"],
                                    rec["master_pss"] / base["master_pss"]),
                 "%.3fx" % (rec["total_pss"] / base["total_pss"])))
    pauses = [res["recipe:gc-freeze"]["freeze"] for res in rounds]
    tracked = [res[n]["tracked"] for res in rounds for n in res if res[n]["tracked"]]
    master_rss = median([res[n]["master"]["Rss"] for res in rounds for n in res])
    text = table(("variant", "workers", "requests/worker", "full GCs/worker", "ms per full GC",
                  "private MiB at start", "median private MiB", "range", "median Pss MiB",
                  "master private / Pss MiB", "instance Pss MiB"), rows)
    text += ("\n\nPrivate: Private_Clean + Private_Dirty of /proc/PID/smaps_rollup (USS), after "
             "%d requests per instance (%d per worker, map-socket); the app's master tracks ~%d objects "
             "(%d records; master Rss %.0f MiB). recipe:gc-freeze: the master's pause as the recipe logs it "
             "(gc.collect(), gc.freeze() and gc.get_freeze_count() for the log line) was %s ms, "
             "%s objects frozen (per round). Instance Pss: master + workers. Bounded by BENCH_GC_REQUESTS=%d and "
             "BENCH_GC_SECONDS=%d.\n\n%s"
             % (REQUESTS, REQUESTS // WORKERS, median(tracked) if tracked else 0, RECORDS, mb(master_rss),
                ", ".join("%.1f" % p[2] for p in pauses), ", ".join("%d" % p[0] for p in pauses),
                REQUESTS, SECONDS, "\n".join(notes)))
    report("5c-gc-freeze", "recipe:gc-freeze: worker memory after %d requests (%d rounds x 4 workers "
           "per variant)" % (REQUESTS, ROUNDS), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
