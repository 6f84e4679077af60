"""A bounded load generator: keeps every core busy the way a shared CI
machine is busy, so that a test which only passes on an idle machine fails
here instead of in CI.

    load.py [--seconds N] [--spinners N]

Per core one process spins on arithmetic (CPU contention: a test's server
gets a fraction of a core, and its timings stretch), and one more churns:
it forks short-lived children (the scheduler and pid allocator stay busy)
and writes and fsyncs a small file (the disk queue is never empty).

Bounded twice: every process ends by itself after --seconds, and each dies
with its parent (PR_SET_PDEATHSIG), so a killed generator leaves nothing.
Stop it by signalling its pid: it ends and reaps its own processes, then
prints how much CPU they used, so a run can show that the load was real.
"""

import argparse
import ctypes
import os
import signal
import sys
import tempfile
import time

PR_SET_PDEATHSIG = 1


class Stop(Exception):
    """Raised by the stop signal's handler: a handler that returns would
    only see waitpid() resumed (PEP 475)."""


def raise_stop(signum, frame):
    raise Stop()


def die_with_parent():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def spin(deadline):
    x = 0
    while time.monotonic() < deadline:
        for i in range(20000):
            x = (x * 31 + i) % 1000003


def churn(deadline, directory):
    path = os.path.join(directory, "churn.bin")
    block = os.urandom(64 * 1024)
    while time.monotonic() < deadline:
        for _ in range(4):
            pid = os.fork()
            if pid == 0:
                sum(range(50000))
                os._exit(0)
            os.waitpid(pid, 0)
        with open(path, "wb") as f:
            f.write(block)
            f.flush()
            os.fsync(f.fileno())
        time.sleep(0.02)


def start(target, *args):
    pid = os.fork()
    if pid == 0:
        try:
            die_with_parent()
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            target(*args)
        finally:
            os._exit(0)
    return pid


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=4 * 3600,
                        help="every load process ends by itself after this (default 4 h)")
    parser.add_argument("--spinners", type=int, default=os.cpu_count() or 2,
                        help="CPU spinners (default: one per core)")
    options = parser.parse_args()

    deadline = time.monotonic() + options.seconds
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="forksafe-load-") as directory:
        pids = [start(spin, deadline) for _ in range(options.spinners)]
        pids.append(start(churn, deadline, directory))
        live = set(pids)
        signal.signal(signal.SIGTERM, raise_stop)
        signal.signal(signal.SIGINT, raise_stop)
        print("load: %d spinners and 1 churner (pids %s), for at most %.0f s"
              % (options.spinners, " ".join(map(str, pids)), options.seconds), flush=True)
        try:
            while live:
                pid, _ = os.waitpid(-1, 0)
                live.discard(pid)
        except (Stop, ChildProcessError):
            pass
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for pid in live:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for pid in live:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
    used = os.times()
    wall = time.monotonic() - started
    print("load: stopped after %.0f s; its processes used %.0f CPU-seconds (%.2f cores)"
          % (wall, used.children_user + used.children_system,
             (used.children_user + used.children_system) / max(wall, 1e-9)), flush=True)


if __name__ == "__main__":
    sys.exit(main())
