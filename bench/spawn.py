#!/usr/bin/env python3
"""Spawn -> ready latency of a worker, and the respawn rate, with
max-requests = 1 (every worker serves one request and exits).

One cycle: wait until the worker that answered the last request has exited,
then read uWSGI's stats server -- an event that wakes the master, which
reaps the dead worker and forks its successor at once (left alone it reaps
only about once a second) -- and send a request, which the new worker
accepts as soon as it is ready.  The latency is from that wake-up to the
answer: the master's reap and fork, the worker's post-fork hooks, its
first accept and one tiny request.  The worker's exit is outside it; the
rate counts whole cycles.

Variants, all in one run, taking turns respawn by respawn (one worker
each, so only the variant being measured is busy):
  bare, and bare again (a second identical instance: how far two equal
  variants land apart is the noise floor of the run); forksafe with nothing
  subscribed; forksafe with a native post-fork handler (target <= 1.01x
  bare); a forksafe python: post-fork handler vs a uwsgidecorators @postfork
  doing the same work on the same app (target: forksafe <= +0.3 ms); a
  forksafe exec: post-fork handler vs uWSGI's hook-post-fork = exec:
  running the same command (target: forksafe adds at most half of what
  uWSGI's hook adds over bare); forksafe looking for fork hazards (the
  default, warn) in a master with 100 more descriptors open vs the same
  with hazards off (target: <= 1.01x, within the run's noise floor); and
  forksafe with nothing subscribed, os.fork()'s semantics on (the default)
  vs forksafe-python-atfork = false (target: <= 1.02x).

A worker that interns a few new strings (uWSGI's python plugin imports
random in every new worker, and atexit as it exits) can push Python's
table of interned strings over its resize threshold and copy the whole
table: ~1.5 ms and ~370,000 instructions more for that worker, decided by
how many strings its master happened to intern, which any module loaded
moves.  So every variant runs in one instance per padding of that table
(bench/apps/intern_pad.py: 0, 4,000 and 9,000 strings by default), and a
variant's sample is paired with the baseline's of the same padding.

Wall and CPU time on a small shared machine move by a few percent from
run to run, so each variant also runs a few respawns under callgrind: the
user-space instructions of a worker's whole life (from the master's
uwsgi_fork to the worker's exit) are exact and repeatable.  Kernel work
(fork, page faults, exec) is not in them; the exec: variants' commands run
in processes callgrind does not follow, so exec: is judged on latency.
"""

import os
import subprocess
import sys
import tempfile
import time

from common import (RESPAWNING, SIMPLE_APP, Uwsgi, env_int, median, padded, report, table,
                    verdict, wait_exited)

SWEEPS = env_int("BENCH_SPAWN_SWEEPS", 120)
# Respawns measured per instance under callgrind (0: skip that pass).
CALLGRIND_RESPAWNS = env_int("BENCH_CALLGRIND_RESPAWNS", 3)
# Every variant runs once per padding of Python's interned-string table
# (bench/apps/intern_pad.py).
PADS = [int(p) for p in os.environ.get("BENCH_PADS", "0,4000,9000").split(",")]
COMMAND = "/bin/true"

COMMON = RESPAWNING
SIMPLE = SIMPLE_APP
MANY_FDS = "wsgi-file = {bench_apps}/many_fds_app.py\n"
FORKSAFE = "plugins = python3,forksafe\nforksafe-settings = %p\n"
SETTINGS = "\n[app:main]\nforksafe.event_log = {dir}/events.jsonl\n"

VARIANTS = [
    ("bare", COMMON + SIMPLE + "plugins = python3\n"),
    ("bare, again", COMMON + SIMPLE + "plugins = python3\n"),
    ("forksafe, no handler", COMMON + SIMPLE + FORKSAFE + SETTINGS),
    # os.fork()'s semantics (the default) against uWSGI's own forks
    ("forksafe, python-atfork off", COMMON + SIMPLE + FORKSAFE
     + "forksafe-python-atfork = false\n" + SETTINGS),
    ("forksafe dl:", COMMON + SIMPLE + FORKSAFE
     + "forksafe-subscribe = post-fork dl:{bench_build}/note_pid.so:bench_note_pid\n"
     + SETTINGS),
    ("uwsgidecorators @postfork", COMMON + "wsgi-file = {bench_apps}/postfork_app.py\n"
     + "plugins = python3\n"),
    # the same app without the @postfork hook (uwsgidecorators loaded)
    ("forksafe python:", COMMON + "wsgi-file = {bench_apps}/plain_app.py\n" + FORKSAFE
     + "forksafe-subscribe = post-fork python:bench_handlers:on_post_fork\n" + SETTINGS),
    ("uWSGI hook-post-fork exec:", COMMON + SIMPLE + "plugins = python3\n"
     + "hook-post-fork = exec:%s\n" % COMMAND),
    ("forksafe exec:", COMMON + SIMPLE + FORKSAFE
     + "forksafe-subscribe = post-fork exec:%s\n" % COMMAND + SETTINGS),
    # the look for fork hazards with 100 more descriptors in the master
    ("forksafe, 100 fds, hazards off", COMMON + MANY_FDS + FORKSAFE
     + "forksafe-hazards = off\n" + SETTINGS),
    ("forksafe, 100 fds, hazards warn", COMMON + MANY_FDS + FORKSAFE + SETTINGS),
]


def cpu_ns(pid):
    """CPU time PID has run, in ns (/proc/PID/schedstat, still readable
    while it is an unreaped zombie), or None when it is gone."""
    try:
        with open("/proc/%d/schedstat" % pid) as f:
            return int(f.read().split()[0])
    except (FileNotFoundError, ProcessLookupError):
        return None


class Churn:
    def __init__(self, u):
        self.u = u
        self.last_pid = int(u.get())
        self.worker_cpu = None  # where the CPU time of the last worker goes

    def cycle(self, worker_cpu=None):
        """(latency, whole cycle, master CPU) in seconds.  The CPU time of
        the worker this cycle forks (post-fork work, first accept, one
        request, exit) is appended to WORKER_CPU at the next cycle, once
        that worker has exited."""
        start = time.perf_counter()
        if not wait_exited(self.last_pid):
            raise RuntimeError("%s: worker %d did not exit" % (self.u.name, self.last_pid))
        if self.worker_cpu is not None:
            ns = cpu_ns(self.last_pid)  # None: the master's timer reaped it first
            if ns is not None:
                self.worker_cpu.append(ns / 1e9)
        self.worker_cpu = worker_cpu
        master_before = cpu_ns(self.u.pid)
        woken = time.perf_counter()
        self.u.poke()
        pid = int(self.u.get())
        end = time.perf_counter()
        master = (cpu_ns(self.u.pid) - master_before) / 1e9
        if pid == self.last_pid:
            raise RuntimeError("%s: worker %d answered twice" % (self.u.name, pid))
        self.last_pid = pid
        return end - woken, end - start, master


def worker_instructions(respawns):
    """{variant: median user-space instructions of one worker's life}, from
    every variant run under callgrind at once, once per padding.  The
    first two workers of an instance are left out: the first forks are not
    like the rest."""
    if respawns <= 0:
        return {}
    out = tempfile.mkdtemp(prefix="forksafe-bench-callgrind-")
    servers = []
    for i, (name, body) in enumerate(VARIANTS):
        for pad in PADS:
            u = Uwsgi(name, padded(body))
            u.start(["env", "FORKSAFE_BENCH_PAD=%d" % pad,
                     "valgrind", "--tool=callgrind", "--zero-before=uwsgi_fork",
                     "--callgrind-out-file=%s/%d.%%p" % (out, i)])
            servers.append(u)
    pids = [[] for _ in servers]
    try:
        for u in servers:
            u.wait_ready(timeout=900)
        for _ in range(respawns + 2):
            for u, served in zip(servers, pids):
                pid = int(u.get(timeout=120))
                if not wait_exited(pid, timeout=120):
                    raise RuntimeError("%s: worker %d did not exit" % (u.name, pid))
                u.poke()
                served.append(pid)
    finally:
        for u in servers:
            u.stop()
    counts = {name: [] for name, _ in VARIANTS}
    for u, served in zip(servers, pids):
        index = [name for name, _ in VARIANTS].index(u.name)
        for pid in served[2:]:
            with open("%s/%d.%d" % (out, index, pid)) as f:
                for line in f:
                    if line.startswith(("summary:", "totals:")):
                        counts[u.name].append(int(line.split()[1]))
                        break
    subprocess.run(["rm", "-rf", out], check=False)
    return {name: median(values) for name, values in counts.items()}


def main():
    instructions = worker_instructions(CALLGRIND_RESPAWNS)
    # every variant once per padding (see worker_instructions): a sample is
    # paired only with the baseline's of the same padding and sweep
    servers = []
    for k, pad in enumerate(PADS):
        for name, body in VARIANTS:
            u = Uwsgi(name, padded(body))
            u.pad_index = k
            servers.append(u.start(["env", "FORKSAFE_BENCH_PAD=%d" % pad]))
    for u in servers:
        u.wait_ready()
    churns = [Churn(u) for u in servers]
    names = [name for name, _ in VARIANTS]
    # [padding index][sweep], seconds
    latency = {n: [[] for _ in PADS] for n in names}
    whole = {n: [] for n in names}
    master_cpu = {n: [] for n in names}
    worker_cpu = {n: [] for n in names}
    for r in range(SWEEPS):
        # the variants take turns respawn by respawn, so load that comes and
        # goes on the machine hits them alike; sweep r's samples are paired
        order = churns if r % 2 == 0 else churns[::-1]
        for c in order:
            # while the others ran, this master may have reaped and forked
            # on its own once-a-second timer: that cycle measures no fork
            c.cycle()
            lat, cyc, master = c.cycle(worker_cpu[c.u.name])
            latency[c.u.name][c.u.pad_index].append(lat)
            whole[c.u.name].append(cyc)
            master_cpu[c.u.name].append(master)
        if (r + 1) % 20 == 0:
            print("sweep %d/%d: %s" % (r + 1, SWEEPS, ", ".join(
                "%s %.2f ms" % (n, median(sum((x[-20:] for x in v), [])) * 1000)
                for n, v in latency.items())), flush=True)
    for c in churns:
        c.cycle()  # collects the last measured worker's CPU time
    for u in servers:
        u.stop()
    rate = {n: [1 / median(v)] for n, v in whole.items()}

    def pairs(a, b):
        return [(x, y) for xs, ys in zip(latency[a], latency[b]) for x, y in zip(xs, ys)]

    ms = {n: median(sum(v, [])) * 1000 for n, v in latency.items()}
    paired = {n: median([a / b for a, b in pairs(n, "bare")]) for n in names}
    delta = {n: median([(a - b) * 1000 for a, b in pairs(n, "bare")]) for n in names}

    def vs(a, b):
        return median([(x - y) * 1000 for x, y in pairs(a, b)])

    # CPU per respawn (master + new worker): what a respawn costs, and far
    # less disturbed than wall time by other load on a small machine
    cpu = {n: median(master_cpu[n]) * 1000 + median(worker_cpu[n]) * 1000 for n in latency}
    instr = {n: instructions.get(n) for n in latency}

    def instr_ratio(a, b):
        return instr[a] / instr[b] if instr[a] and instr[b] else float("nan")

    # how far two identical instances land apart in this run
    noise = abs(paired["bare, again"] - 1)
    native_latency = paired["forksafe dl:"]
    native_instr = instr_ratio("forksafe dl:", "bare")
    native_ok = native_instr <= 1.01 and native_latency <= 1.01 + noise
    python_extra = vs("forksafe python:", "uwsgidecorators @postfork")
    python_instr = (instr["forksafe python:"] - instr["uwsgidecorators @postfork"]
                    if instr["forksafe python:"] else float("nan"))
    hazards_latency = median([a / b for a, b in pairs("forksafe, 100 fds, hazards warn",
                                                       "forksafe, 100 fds, hazards off")])
    hazards_ms = vs("forksafe, 100 fds, hazards warn", "forksafe, 100 fds, hazards off")
    hazards_cpu = (median(master_cpu["forksafe, 100 fds, hazards warn"])
                   - median(master_cpu["forksafe, 100 fds, hazards off"])) * 1000
    atfork_latency = median([a / b for a, b in pairs("forksafe, no handler",
                                                      "forksafe, python-atfork off")])
    atfork_ms = vs("forksafe, no handler", "forksafe, python-atfork off")
    exec_uwsgi = delta["uWSGI hook-post-fork exec:"]
    exec_forksafe = delta["forksafe exec:"]
    targets = {
        "bare": "baseline",
        "bare, again": "noise floor: %.1f%% apart" % (noise * 100),
        "forksafe, no handler": "plugin loaded, nothing subscribed; python-atfork on: <= "
        "1.02x off (%.3fx, %+.3f ms): %s" % (atfork_latency, atfork_ms,
                                             verdict(atfork_latency <= 1.02 + noise)),
        "forksafe, python-atfork off": "reference for python-atfork",
        "forksafe dl:": "<= 1.01x bare (instructions %.4fx, latency %.3fx): %s"
        % (native_instr, native_latency, verdict(native_ok)),
        "uwsgidecorators @postfork": "reference for python:",
        "forksafe python:": "<= +0.3 ms vs @postfork (%+.2f ms, %+.0fk instructions): %s"
        % (python_extra, python_instr / 1000, verdict(python_extra <= 0.3)),
        "uWSGI hook-post-fork exec:": "reference for exec:",
        "forksafe exec:": "adds <= half of uWSGI's (%+.2f vs %+.2f ms): %s"
        % (exec_forksafe, exec_uwsgi, verdict(exec_forksafe <= exec_uwsgi / 2)),
        "forksafe, 100 fds, hazards off": "reference for hazards",
        "forksafe, 100 fds, hazards warn": "<= 1.01x hazards off (%.3fx, %+.3f ms, master "
        "CPU %+.3f ms): %s" % (hazards_latency, hazards_ms, hazards_cpu,
                               verdict(hazards_latency <= 1.01 + noise)),
    }

    def millions(n):
        return "%.3f" % (instr[n] / 1e6) if instr[n] else "-"

    def instr_vs_bare(n):
        return "%.4fx" % instr_ratio(n, "bare") if instr[n] else "-"

    rows = [(n, "%.2f" % ms[n], "%.3fx" % paired[n], "%+.2f" % delta[n],
             "%.1f" % median(rate[n]), "%.2f" % cpu[n], millions(n), instr_vs_bare(n),
             targets[n])
            for n in latency]
    report("2-spawn", "Spawn -> ready latency and respawn rate (max-requests = 1, %d measured "
           "respawns per variant and padding)" % SWEEPS,
           table(("variant", "latency ms", "vs bare", "+ms vs bare", "respawns/s",
                  "CPU ms", "worker Minstr", "instr vs bare", "target"), rows)
           + "\n\nLatency: from waking the master (stats read) after the previous worker "
           "exited to the new worker's answer (reap, fork, post-fork hooks, first accept, one "
           "request). The variants take turns respawn by respawn; ratios and differences are "
           "medians over those turns of the pair (variant, bare), and the python: difference "
           "is paired with @postfork. Respawns/s: 1 / the median whole cycle (the worker's "
           "exit included). CPU: median CPU time of the master per cycle plus that of the new "
           "worker's whole life (/proc/PID/schedstat; an exec: command's own process is not in "
           "it). Worker Minstr: user-space instructions of a worker's life under callgrind "
           "(median of %d workers in each instance; from the master's uwsgi_fork, pre-fork "
           "hooks included, to the worker's exit). Every variant ran once per padding of "
           "Python's interned-string table (%s strings). The native target holds when both "
           "the instructions and the latency (within the run's noise floor) are <= 1.01x."
           % (CALLGRIND_RESPAWNS, ", ".join(str(p) for p in PADS)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
