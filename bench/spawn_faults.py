#!/usr/bin/env python3
"""Minor page faults a new worker takes from its fork to its first request,
and that spawn's latency, bare uWSGI vs forksafe vs an inert plugin.

On a VM where a page fault is expensive (shadow paging, nested
virtualization) a worker's spawn costs about what its faults cost: its
instructions are the same with forksafe loaded (bench/spawn.py's callgrind
column), so what a plugin can add there is pages.  Every page the new
worker writes after the fork is a copy of the master's page (a fault), and
every page of a MAP_SHARED mapping it touches is a fault too (fork() does
not copy those page tables).

One worker with max-requests = 1, respawned as in bench/spawn.py.  The app
(bench/apps/fault_app.py) answers with its own getrusage(RUSAGE_SELF)
ru_minflt: a forked child's counters start at zero, so that is every minor
fault from the fork to the request (uWSGI's and the plugins' post-fork work,
the first accept, the request itself).  The count is exact and repeatable
run to run; the latency (wake-up -> answer, as bench/spawn.py) is noisy
here, where a fault is cheap, and is shown for the record.

Variants, taking turns respawn by respawn: bare, bare again (the noise
floor), an inert plugin (bench/apps/inert_plugin.c: another .so with an
empty post_fork, the floor a plugin's mere presence costs), forksafe with
nothing subscribed, with a dl: post-fork handler (bench/apps/note_pid.c)
and with a python: post-fork handler (bench/apps/bench_handlers.py).
Target: forksafe's faults per spawn within those of the inert plugin + 2
(nothing subscribed and a dl: handler).
"""

import shutil
import sys
import time

from common import RESPAWNING, Uwsgi, env_int, median, report, table, verdict, wait_exited

SPAWNS = env_int("BENCH_FAULT_SPAWNS", 40)
# A worker's count is the same spawn after spawn, but with address space
# randomization it moves by a few faults from one instance to another
# (where its stack, heap and libraries landed): the instances run without
# it (setarch -R), where every instance of a variant counts the same, and
# in several instances, their samples pooled.
INSTANCES = env_int("BENCH_FAULT_INSTANCES", 3)
NO_ASLR = ["setarch", "-R"] if shutil.which("setarch") else []

APP = "wsgi-file = {bench_apps}/fault_app.py\n"
FORKSAFE = "plugins = python3,forksafe\nforksafe-settings = %p\n"
SETTINGS = "\n[app:main]\nforksafe.event_log = {dir}/events.jsonl\n"

VARIANTS = [
    ("bare", RESPAWNING + APP + "plugins = python3\n"),
    ("bare, again", RESPAWNING + APP + "plugins = python3\n"),
    ("inert plugin", RESPAWNING + APP + "plugins = python3,{bench_build}/inert_plugin.so\n"),
    ("forksafe, no handler", RESPAWNING + APP + FORKSAFE + SETTINGS),
    ("forksafe dl:", RESPAWNING + APP + FORKSAFE
     + "forksafe-subscribe = post-fork dl:{bench_build}/note_pid.so:bench_note_pid\n"
     + SETTINGS),
    ("forksafe python:", RESPAWNING + APP + FORKSAFE
     + "forksafe-subscribe = post-fork python:bench_handlers:on_post_fork\n" + SETTINGS),
]
# faults over the inert plugin's that forksafe may add (a page of its own
# state and one of its shared memory)
SLACK = 2


class Respawner:
    def __init__(self, u):
        self.u = u
        self.last_pid, _ = self.answer()

    def answer(self):
        pid, faults = self.u.get().split()
        return int(pid), int(faults)

    def spawn(self):
        """(faults of the new worker up to its first request, latency in
        seconds from waking the master to that answer)."""
        if not wait_exited(self.last_pid):
            raise RuntimeError("%s: worker %d did not exit" % (self.u.name, self.last_pid))
        woken = time.perf_counter()
        self.u.poke()
        pid, faults = self.answer()
        latency = time.perf_counter() - woken
        if pid == self.last_pid:
            raise RuntimeError("%s: worker %d answered twice" % (self.u.name, pid))
        self.last_pid = pid
        return faults, latency


def main():
    servers = [Uwsgi(name, body).start(NO_ASLR) for _ in range(INSTANCES)
               for name, body in VARIANTS]
    for u in servers:
        u.wait_ready()
    spawners = [Respawner(u) for u in servers]
    faults = {name: [] for name, _ in VARIANTS}
    latency = {name: [] for name, _ in VARIANTS}
    for r in range(SPAWNS + 2):
        for s in (spawners if r % 2 == 0 else spawners[::-1]):
            s.spawn()  # the master may have forked on its own timer meanwhile
            f, lat = s.spawn()
            if r >= 2:  # the first forks of an instance are not like the rest
                faults[s.u.name].append(f)
                latency[s.u.name].append(lat)
    for u in servers:
        u.stop()
    base = median(faults["bare"])
    inert = median(faults["inert plugin"])

    def paired(n):
        return median([a / b for a, b in zip(latency[n], latency["bare"])])

    def target(n):
        if n == "bare":
            return "baseline"
        if n == "bare, again":
            return "noise floor: latency %.1f%% apart" % (abs(paired(n) - 1) * 100)
        if n == "inert plugin":
            return "the floor for a plugin"
        if n == "forksafe python:":
            return "reported"
        ok = median(faults[n]) <= inert + SLACK
        return "<= inert + %d faults: %s" % (SLACK, verdict(ok))

    rows = [(n, "%.0f" % median(v), "%d-%d" % (min(v), max(v)), "%+.0f" % (median(v) - base),
             "%+.0f" % (median(v) - inert), "%.2f" % (median(latency[n]) * 1000),
             "%.3fx" % paired(n), target(n)) for n, v in faults.items()]
    report("2-spawn-faults", "Minor faults per spawn, fork -> first request (max-requests = 1, "
           "%d respawns in each of %d instances per variant)" % (SPAWNS, INSTANCES),
           table(("variant", "faults", "range", "vs bare", "vs inert", "latency ms",
                  "latency vs bare", "target"), rows)
           + "\n\nFaults: the new worker's getrusage(RUSAGE_SELF).ru_minflt as it serves its "
           "first request (it counts from the fork). Latency: from waking the master to that "
           "answer; the ratio is the median over respawns of the pair (variant, bare) taken "
           "in turn; range: the lowest and highest count of any instance (%s). On a VM where a fault is expensive the faults are the spawn's cost." % ("address space randomization off" if NO_ASLR else "randomized"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
