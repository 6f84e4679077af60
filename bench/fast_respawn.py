#!/usr/bin/env python3
"""How soon the master hears of a fork and replaces a dead child.

1. A dead worker replaced (forksafe-fast-respawn): a ready worker is
   SIGKILLed; from the kill to the master's pre-fork of its replacement
   (forksafe's event) and to the replacement's post-fork (a uwsgidecorators
   @postfork in the app, the same clock for every variant).  Variants take
   turns kill by kill: uWSGI alone, forksafe (fast respawn on, the
   default), forksafe with forksafe-fast-respawn = false.  uWSGI alone
   notices a death at its next master cycle (a second apart): nothing else
   wakes these masters, the bench only talks to the workers, and each kill
   comes at a random point of the cycle.
   Targets: death -> pre-fork median <= 5 ms; death -> post-fork median
   <= 50 ms; and, before the kills, an idle master wakes up no more often
   than uWSGI alone's (its voluntary context switches over a few seconds).

2. From the master's pre-fork of a child to its post-fork-parent for the
   same child, by the way it was forked: first spawns, respawns (the kills
   above), cheaper spawns (cheaper-algo = manual, the master FIFO's `+`),
   graceful reloads (SIGHUP), mules and spoolers (first spawns and
   replacements after a kill).  Target: median <= 5 ms and p99 <= 20 ms
   over at least 200 forks.
"""

import json
import os
import random
import signal
import time

from common import (EVENT_LOG_SO, HEADER, Uwsgi, children, env_int, median, report, table,
                    verdict)

KILLS = env_int("BENCH_RESPAWN_KILLS", 30)
STARTS = env_int("BENCH_RESPAWN_STARTS", 5)
RELOADS = env_int("BENCH_RESPAWN_RELOADS", 10)
CHEAPER = env_int("BENCH_RESPAWN_CHEAPER", 40)
OTHER_KILLS = env_int("BENCH_RESPAWN_OTHER_KILLS", 10)
WAIT = 60.0
IDLE_SECONDS = env_int("BENCH_RESPAWN_IDLE_SECONDS", 5)

APP = """processes = 2
min-worker-lifetime = 0
env = FORKSAFE_BENCH_POSTFORK={dir}/postfork.txt
wsgi-file = {bench_apps}/fork_clock_app.py
"""
FORKSAFE = """plugins = python3,forksafe
forksafe-settings = %p
forksafe-subscribe = * dl:{event_log_so}:record
"""
SETTINGS = "\n[app:main]\nforksafe.event_log = {dir}/events.jsonl\n"

KILL_VARIANTS = [
    ("uWSGI alone", HEADER + APP + "plugins = python3\n"),
    ("forksafe", HEADER + APP + FORKSAFE + SETTINGS),
    ("forksafe, fast respawn off", HEADER + APP + FORKSAFE + "forksafe-fast-respawn = false\n"
     + SETTINGS),
]
CHILDREN = HEADER + APP.replace("processes = 2", "processes = 4") + FORKSAFE + """mules = 2
spooler = {dir}/spool
spooler-import = spool_task
master-fifo = {dir}/fifo
""" + SETTINGS
CHEAPER_BODY = HEADER + APP.replace("processes = 2", "processes = 4") + FORKSAFE + """cheaper = 1
cheaper-initial = 1
cheaper-algo = manual
master-fifo = {dir}/fifo
""" + SETTINGS


def until(predicate, what):
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.002)
    raise RuntimeError("no %s after %.0f s" % (what, WAIT))


def events(u):
    try:
        with open(os.path.join(u.dir, "events.jsonl")) as f:
            return [json.loads(line) for line in f if line.endswith("\n")]
    except FileNotFoundError:
        return []


def started(u):
    """{pid: time} of each worker's @postfork."""
    out = {}
    try:
        with open(os.path.join(u.dir, "postfork.txt")) as f:
            for line in f:
                if line.endswith("\n"):
                    pid, when = line.split()
                    out[int(pid)] = float(when)
    except FileNotFoundError:
        pass
    return out


def pidfds(pid):
    count = 0
    for fd in os.listdir("/proc/%d/fd" % pid):
        try:
            count += os.readlink("/proc/%d/fd/%s" % (pid, fd)) == "anon_inode:[pidfd]"
        except FileNotFoundError:
            pass
    return count


def settled(u, watched):
    """Both workers started and answering, and watched by the master when
    forksafe watches."""
    workers = children(u.pid)
    notes = started(u)
    if len(workers) != 2 or any(w not in notes for w in workers):
        return None
    if watched and pidfds(u.pid) != 2:
        return None
    return workers


def kill_one(u, name):
    """One kill: (death -> pre-fork, death -> post-fork), seconds."""
    watched = name == "forksafe"
    workers = until(lambda: settled(u, watched), "settled workers (%s)" % name)
    victim = workers[0]
    # A death comes at any point of the master's cycle, not right after
    # the wake-up that the last replacement's start caused.
    time.sleep(random.uniform(0.0, 1.0))
    before = len(events(u))
    killed = time.time()
    os.kill(victim, signal.SIGKILL)
    fresh = until(lambda: [p for p in children(u.pid) if p not in workers and p in started(u)],
                  "replacement (%s)" % name)
    to_post_fork = started(u)[fresh[0]] - killed
    to_pre_fork = None
    if name != "uWSGI alone":
        pre = until(lambda: [e for e in events(u)[before:] if e["event"] == "pre-fork"],
                    "pre-fork (%s)" % name)
        to_pre_fork = pre[0]["time"] - killed
    return to_pre_fork, to_post_fork


def fork_latencies(evs, label_of):
    """{label: [pre-fork -> post-fork-parent seconds]} from one instance's
    master events."""
    pre, out = {}, {}
    for e in evs:
        child = e.get("child")
        if e["process"]["kind"] != "master" or not child:
            continue
        key = (e["process"]["pid"], e["generation"], child["kind"], child["id"], child["respawn"])
        if e["event"] == "pre-fork":
            pre[key] = e
        elif e["event"] == "post-fork-parent" and key in pre:
            label = label_of(pre.pop(key))
            out.setdefault(label, []).append(e["time"] - pre_time(key, e, evs))
    return out


def pre_time(key, post, evs):
    for e in reversed(evs[:evs.index(post)]):
        child = e.get("child")
        if (e["event"] == "pre-fork" and child and
                (e["process"]["pid"], e["generation"], child["kind"], child["id"],
                 child["respawn"]) == key):
            return e["time"]
    raise KeyError(key)


def by_kind(first_label):
    def label(pre):
        child = pre["child"]
        if child["kind"] != "worker":
            return child["kind"] + "s"
        if pre["generation"] > 0 and child["respawn"] == 0:
            return "reloads"
        return first_label if child["respawn"] == 0 else "respawns"
    return label


def merge(into, more):
    for k, v in more.items():
        into.setdefault(k, []).extend(v)


def wakeups(pid):
    """How often the master has woken up so far (its voluntary context
    switches: each return from a wait)."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise KeyError(pid)


def kills():
    instances = [Uwsgi(name, body).start() for name, body in KILL_VARIANTS]
    samples = {name: ([], []) for name, _ in KILL_VARIANTS}
    latencies = {}
    idle = {}
    try:
        for u in instances:
            u.wait_ready()
        for u in instances:
            until(lambda: settled(u, u.name == "forksafe"), "settled workers")
        before = {u.name: wakeups(u.pid) for u in instances}
        time.sleep(IDLE_SECONDS)
        idle = {u.name: (wakeups(u.pid) - before[u.name]) / IDLE_SECONDS for u in instances}
        for _ in range(KILLS):
            for u in instances:
                pre, post = kill_one(u, u.name)
                samples[u.name][0].append(pre)
                samples[u.name][1].append(post)
        for u in instances[1:]:
            merge(latencies, fork_latencies(events(u), by_kind("first spawns")))
    finally:
        for u in instances:
            u.stop()
    return samples, latencies, idle


def fifo(u, command):
    with open(os.path.join(u.dir, "fifo"), "w") as f:
        f.write(command)


def children_and_reloads():
    latencies = {}
    for _ in range(STARTS):
        u = Uwsgi("children", CHILDREN).start()
        try:
            u.wait_ready()
            until(lambda: len([e for e in events(u) if e["event"] == "post-fork-parent"]) >= 7,
                  "7 children")
            for round_ in range(RELOADS // STARTS):
                count = len([e for e in events(u) if e["event"] == "post-fork-parent"])
                fifo(u, "r")
                until(lambda: len([e for e in events(u)
                                   if e["event"] == "post-fork-parent"]) >= count + 7,
                      "7 children after a reload")
                u.wait_ready()
            for round_ in range(OTHER_KILLS // STARTS):
                for kind in ("mule", "spooler"):
                    evs = events(u)
                    pid = [e["child"]["pid"] for e in evs if e["event"] == "post-fork-parent"
                           and e["child"]["kind"] == kind][-1]
                    os.kill(pid, signal.SIGKILL)
                    until(lambda: [e for e in events(u)[len(evs):]
                                   if e["event"] == "post-fork-parent"
                                   and e["child"]["kind"] == kind], "%s replaced" % kind)
            merge(latencies, fork_latencies(events(u), by_kind("first spawns")))
        finally:
            u.stop()
    return latencies


def cheaper_spawns():
    u = Uwsgi("cheaper", CHEAPER_BODY).start()
    try:
        u.wait_ready()
        for _ in range(CHEAPER):
            count = len([e for e in events(u) if e["event"] == "post-fork-parent"])
            fifo(u, "+")
            until(lambda: len([e for e in events(u)
                               if e["event"] == "post-fork-parent"]) > count, "a cheaper spawn")
            fifo(u, "-")
            until(lambda: len(children(u.pid)) == 1, "the spawned worker cheaped")
        evs = events(u)
    finally:
        u.stop()
    first = min(e["time"] for e in evs if e["event"] == "post-fork-parent")
    return {"cheaper spawns": [v for v in fork_latencies(
        [e for e in evs if e["time"] > first], lambda pre: "x")["x"]]}


def p99(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.99 * (len(ordered) - 1))))]


def main():
    samples, latencies, idle = kills()
    merge(latencies, children_and_reloads())
    merge(latencies, cheaper_spawns())

    rows = []
    bare = median(samples["uWSGI alone"][1])
    for name, _ in KILL_VARIANTS:
        pre, post = samples[name]
        rows.append((name, "-" if pre[0] is None else "%.2f ms" % (median(pre) * 1000),
                     "%.1f ms" % (median(post) * 1000), "%.1f ms" % (max(post) * 1000),
                     "%.3fx" % (median(post) / bare), "%.1f" % idle[name]))
    fast_pre, fast_post = (median(v) for v in samples["forksafe"])
    text = ("A ready worker SIGKILLed, %d times per variant (turn by turn): from the kill to "
            "the master's pre-fork of its replacement, and to the replacement's post-fork "
            "(median, max).\n\n" % KILLS)
    text += table(["variant", "death -> pre-fork", "death -> post-fork", "max", "vs alone",
                   "idle master wake-ups/s"], rows)
    quiet = idle["forksafe"] <= idle["uWSGI alone"] + 0.5
    text += ("\n\nTargets: death -> pre-fork median <= 5 ms: %s; death -> post-fork median "
             "<= 50 ms: %s; an idle master wakes no more often than uWSGI alone's (%d s, "
             "+0.5/s): %s\n\n" % (verdict(fast_pre <= 0.005), verdict(fast_post <= 0.050),
                                  IDLE_SECONDS, verdict(quiet)))

    rows, every = [], []
    for label in sorted(latencies):
        values = latencies[label]
        every.extend(values)
        rows.append((label, len(values), "%.2f ms" % (median(values) * 1000),
                     "%.2f ms" % (p99(values) * 1000), "%.2f ms" % (max(values) * 1000)))
    rows.append(("all", len(every), "%.2f ms" % (median(every) * 1000),
                 "%.2f ms" % (p99(every) * 1000), "%.2f ms" % (max(every) * 1000)))
    text += ("From the master's pre-fork of a child to its post-fork-parent, by the way the "
             "child was forked (forksafe variants only).\n\n")
    text += table(["forked as", "forks", "median", "p99", "max"], rows)
    worst_median = max(median(v) for v in latencies.values())
    worst_p99 = max(p99(v) for v in latencies.values())
    text += ("\n\nTargets: median <= 5 ms and p99 <= 20 ms for every way, over >= 200 forks "
             "(%d): %s\n" % (len(every), verdict(worst_median <= 0.005 and worst_p99 <= 0.020
                                                and len(every) >= 200)))
    report("fast_respawn", "Fast respawn and post-fork-parent", text)


if __name__ == "__main__":
    main()
