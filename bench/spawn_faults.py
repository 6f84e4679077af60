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
for one process image; the latency (wake-up -> answer, as bench/spawn.py)
is noisy where a fault is cheap, and is shown for the record.

Variants, taking turns respawn by respawn: bare, bare again (the noise
floor), an inert plugin (bench/apps/inert_plugin.c: another .so with an
empty post_fork, the floor a plugin's mere presence costs), forksafe with
nothing subscribed, with a dl: post-fork handler (bench/apps/note_pid.c)
and with a python: post-fork handler (bench/apps/bench_handlers.py).
Target: forksafe's faults per spawn within 1% of the inert plugin's.
"""

import os
import shutil
import sys
import time

from common import (RESPAWNING, Uwsgi, env_int, median, padded, report, table, verdict,
                    wait_exited)

SPAWNS = env_int("BENCH_FAULT_SPAWNS", 20)
# A worker's count is the same spawn after spawn, but with address space
# randomization it moves by a few faults from one instance to another
# (where its stack, heap and libraries landed): the instances run without
# it (setarch -R), where every instance of a variant counts the same.
NO_ASLR = ["setarch", "-R"] if shutil.which("setarch") else []
# Where a worker's own allocations land in the master's heap moves its
# count by up to ~10 faults, and anything the master loads (an inert
# plugin included) moves that: every variant runs once per padding of
# Python's interned-string table (bench/apps/intern_pad.py, as in
# bench/spawn.py), ten process images, and is judged on the median of its
# differences from the baseline's image of the same padding.
PADS = [int(p) for p in os.environ.get("BENCH_FAULT_PADS", ",".join(
    str(n * 1000) for n in range(10))).split(",")]
# Faults over the inert plugin's that forksafe may add: 1% of a spawn's.
SHARE = 0.01

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
    servers = []
    for k, pad in enumerate(PADS):
        for name, body in VARIANTS:
            u = Uwsgi(name, padded(body))
            u.pad_index = k
            servers.append(u.start(NO_ASLR + ["env", "FORKSAFE_BENCH_PAD=%d" % pad]))
    for u in servers:
        u.wait_ready()
    spawners = [Respawner(u) for u in servers]
    # {variant: {(padding index, round): sample}}
    faults = {name: {} for name, _ in VARIANTS}
    latency = {name: {} for name, _ in VARIANTS}
    for r in range(SPAWNS + 2):
        for s in (spawners if r % 2 == 0 else spawners[::-1]):
            s.spawn()  # the master may have forked on its own timer meanwhile
            f, lat = s.spawn()
            if r >= 2:  # the first forks of an instance are not like the rest
                faults[s.u.name][s.u.pad_index, r] = f
                latency[s.u.name][s.u.pad_index, r] = lat
    for u in servers:
        u.stop()

    def vs(samples, n, m, ratio=False):
        """Median over the samples of N paired with M's of the same
        padding and round: N / M, or N - M."""
        a, b = samples[n], samples[m]
        return median([a[k] / b[k] if ratio else a[k] - b[k] for k in a])

    def per_pad(n):
        counts = [median([v for (k, _), v in faults[n].items() if k == i])
                  for i in range(len(PADS))]
        return "%.0f-%.0f" % (min(counts), max(counts))

    def target(n):
        if n == "bare":
            return "baseline"
        if n == "bare, again":
            return "noise floor: latency %.1f%% apart" % (
                abs(vs(latency, n, "bare", ratio=True) - 1) * 100)
        if n == "inert plugin":
            return "the floor for a plugin"
        if n == "forksafe python:":
            return "reported (runs Python code in the worker)"
        extra = vs(faults, n, "inert plugin")
        allowed = SHARE * median(list(faults["inert plugin"].values()))
        return "<= inert + 1%% (%+.0f of %+.1f): %s" % (extra, allowed, verdict(extra <= allowed))

    rows = [(n, "%.0f" % median(list(faults[n].values())), per_pad(n),
             "%+.0f" % vs(faults, n, "bare"), "%+.0f" % vs(faults, n, "inert plugin"),
             "%.2f" % (median(list(latency[n].values())) * 1000),
             "%.3fx" % vs(latency, n, "bare", ratio=True), target(n)) for n in faults]
    report("2-spawn-faults", "Minor faults per spawn, fork -> first request (max-requests = 1, "
           "%d respawns per variant and padding)" % SPAWNS,
           table(("variant", "faults", "range", "vs bare", "vs inert", "latency ms",
                  "latency vs bare", "target"), rows)
           + "\n\nFaults: the new worker's getrusage(RUSAGE_SELF).ru_minflt as it serves its "
           "first request (it counts from the fork); the median, and the range of the "
           "counts of the %d paddings of Python's interned-string table (%s strings), "
           "address space randomization %s. Differences "
           "and the latency ratio are medians over the samples paired with the baseline's of "
           "the same padding and round. Latency: from waking the master to that answer. On a "
           "VM where a fault is expensive the faults are the spawn's cost."
           % (len(PADS), ", ".join(str(p) for p in PADS), "off" if NO_ASLR else "on"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
