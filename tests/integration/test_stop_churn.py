"""A stop (SIGINT) or graceful reload (SIGHUP) sent to the master while
uWSGI respawns workers as fast as it can (2 workers, max-requests = 1, a
loopback client churning them) must take effect within seconds, whenever
it arrives, and uWSGI's master handler must run once, in the master.

uWSGI 2.0.21 alone loses such a signal when it lands while a worker is being
forked (see block_fork_signals in uwsgi/signals.c): the new worker serves
on, and the master waits for it until worker-reload-mercy (60 s) runs out.

Run as a script to measure rates (SIGHUP with STOP_CHURN_SIGNAL=HUP):
    /usr/bin/python3 test_stop_churn.py [TRIALS] [plain|forksafe|nohandlers|both]
"""

import http.client
import os
import random
import signal
import subprocess
import sys
import threading
import time
import unittest

from harness import IntegrationCase, Uwsgi, free_port, read_socket, wait_exited, wait_for

# Seconds from the signal to the master's exit (or re-exec).  A signal that
# reached every process takes effect in well under a second (seconds on a
# busy machine); a lost one leaves a worker that the master waits for until
# worker-reload-mercy (60 s, below) runs out.  So this bound tells the two
# apart by a wide margin on either side.
STOP_WITHIN = float(os.environ.get("STOP_CHURN_WITHIN", "40"))
LAG_MAX = float(os.environ.get("STOP_CHURN_LAG_MAX", "0.03"))
# Requests served before the stop, in each trial: the churn really ran.
MIN_SERVED = 3

COMMON = """
[uwsgi]
plugin-dir = {plugin_dir}
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
max-requests = 1
min-worker-lifetime = 0
forkbomb-delay = 0
skip-atexit-teardown = true
; uWSGI's default, written out: what a lost signal costs (see STOP_WITHIN)
worker-reload-mercy = 60
stats = 127.0.0.1:STATS_PORT
"""

PLAIN = COMMON + "plugins = python3\n"

FORKSAFE = COMMON + """
plugins = python3,forksafe
forksafe-on-error = log
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = pre-fork,worker-exit exec:true
forksafe-subscribe = post-fork-parent,post-fork python:handlers:record
"""


def churn_client(u, stats_port, stop_flag, counts):
    """Requests one at a time, each on its own connection, waits for the
    worker that answered to exit, then reads the stats server (which wakes
    the master to reap and respawn at once, as in test_churn)."""
    while not stop_flag.is_set():
        try:
            conn = http.client.HTTPConnection("127.0.0.1", u.port, timeout=2)
            conn.request("GET", "/", headers={"Connection": "close"})
            pid = int(conn.getresponse().read())
            conn.close()
            counts[0] += 1
            wait_exited(pid, timeout=2)
        except Exception:  # noqa: BLE001 - the instance may be stopping
            time.sleep(0.01)
        try:
            read_socket("127.0.0.1:%d" % stats_port)
        except Exception:  # noqa: BLE001
            time.sleep(0.01)


def process_tree(root):
    """`ps` lines of ROOT's session (for a failure message)."""
    out = subprocess.run(["ps", "-o", "pid,ppid,stat,wchan:20,cmd", "-s", str(root)],
                         capture_output=True, text=True, check=False)
    return out.stdout


def stop_during_churn(testcase, body, settings, delay, lag, signum=signal.SIGINT):
    """Starts uWSGI, churns it for DELAY seconds (and at least until
    MIN_SERVED requests were served), recycles one last worker and LAG
    seconds after poking the master (while the successor is being forked
    and starts) sends SIGNUM to the master; waits up to STOP_WITHIN for it
    to exit (SIGINT) or re-execute itself (SIGHUP).  Returns (done,
    requests served, log, diagnostics).  Always SIGKILLs the session after."""
    stats_port = free_port()
    u = Uwsgi(testcase, body.replace("STATS_PORT", str(stats_port)), settings=settings)
    u.start()
    stop_flag = threading.Event()
    counts = [0]
    threads = [threading.Thread(target=churn_client, args=(u, stats_port, stop_flag, counts),
                                daemon=True) for _ in range(2)]
    try:
        def serving():
            if u.proc.poll() is not None:
                raise AssertionError("uWSGI exited early:\n" + u.log_text()[-3000:])
            try:
                u.get(timeout=2)
                return True
            except OSError:
                return False

        wait_for(serving, what="uWSGI serving")
        for t in threads:
            t.start()
        # DELAY varies the moment of the stop; the churn must have run,
        # however slowly a busy machine respawns
        time.sleep(delay)
        wait_for(lambda: counts[0] >= MIN_SERVED, what="%d requests served" % MIN_SERVED)
        stop_flag.set()
        for t in threads:
            t.join(60)
        if any(t.is_alive() for t in threads):
            raise AssertionError("churn clients still running")
        # The clients are quiet now: a worker left out of the stop would
        # never be recycled by a request.
        pid = int(u.get(timeout=60))
        if not wait_exited(pid, timeout=60):
            raise AssertionError("worker %d did not exit after its request" % pid)
        read_socket("127.0.0.1:%d" % stats_port)
        # deliberately a moment (0-30 ms) after the poke: while the master
        # forks the successor, the window a stop must not be lost in
        time.sleep(lag)
        u.send_signal(signum)
        if signum == signal.SIGHUP:
            try:
                wait_for(lambda: "binary reloading uWSGI" in u.log_text() or u._died(),
                         timeout=STOP_WITHIN, what="the reload")
                done = not u._died()
            except AssertionError:
                done = False
        else:
            try:
                done = u.proc.wait(timeout=STOP_WITHIN) == 0
            except subprocess.TimeoutExpired:
                done = False
        log = u.log_text()
        info = "" if done else process_tree(u.proc.pid) + log[-2500:]
        return done, counts[0], log, info
    finally:
        stop_flag.set()
        for t in threads:
            t.join(5)
        u.kill()


def run_trials(testcase, body, settings, trials, seed=1, signum=signal.SIGINT):
    """[(lag, done, served, log, info)] of TRIALS stops at varied moments."""
    rng = random.Random(seed)
    results = []
    for _ in range(trials):
        delay, lag = rng.uniform(0.2, 1.0), rng.uniform(0.0, LAG_MAX)
        results.append((lag,) + stop_during_churn(testcase, body, settings, delay, lag, signum))
    return results


# uWSGI's master handler logs one of these per run (kill_them_all, grace_them_all)
HANDLER_LINE = {signal.SIGINT: "SIGINT/SIGTERM received...killing workers...",
                signal.SIGHUP: "...gracefully killing workers..."}

NO_HANDLERS = COMMON + "plugins = python3,forksafe\n"

FORKSAFE_SETTINGS = {"python_log": "%(here)s/python.jsonl"}


class StopDuringChurnTest(IntegrationCase):
    """Each test about 20 s: 8 trials of 1-3 s."""
    TRIALS = 8

    def check(self, signum, what):
        results = run_trials(self, FORKSAFE, FORKSAFE_SETTINGS, self.TRIALS, signum=signum)
        done = sum(1 for r in results if r[1])
        runs = [r[3].count(HANDLER_LINE[signum]) for r in results]
        print("\n%s during churn: %d/%d within %ds, %d requests served, master handler ran %s"
              % (what, done, len(results), STOP_WITHIN, sum(r[2] for r in results), runs))
        lost = [r for r in results if not r[1]]
        self.assertEqual(done, len(results),
                         "%s %.3fs after the last poke lost:\n%s" % (what, lost[0][0], lost[0][4])
                         if lost else "")
        # only the master ran it: no new worker still had the master's handler
        self.assertEqual(runs, [1] * len(results))
        # the churn really ran: workers were being respawned
        self.assertGreater(sum(r[2] for r in results), 2 * len(results))

    def test_sigint_during_respawns_stops_the_instance(self):
        self.check(signal.SIGINT, "SIGINT")

    def test_sighup_during_respawns_reloads_the_instance(self):
        self.check(signal.SIGHUP, "SIGHUP")


if __name__ == "__main__":
    trials = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    which = sys.argv[2] if len(sys.argv) > 2 else "both"

    class Holder(unittest.TestCase):
        def runTest(self):
            pass

    configs = {"plain": (PLAIN, None), "forksafe": (FORKSAFE, FORKSAFE_SETTINGS),
               "nohandlers": (NO_HANDLERS, None)}
    signum = signal.SIGHUP if os.environ.get("STOP_CHURN_SIGNAL") == "HUP" else signal.SIGINT
    for mode in (["plain", "forksafe"] if which == "both" else [which]):
        case = Holder()
        body, settings = configs[mode]
        started = time.monotonic()
        results = run_trials(case, body, settings, trials, signum=signum)
        case.doCleanups()
        done = sum(1 for r in results if r[1])
        print("%s %s: %d/%d within %ds (%.0fs, %d requests), master handler ran %s"
              % (mode, signal.Signals(signum).name, done, trials, STOP_WITHIN,
                 time.monotonic() - started, sum(r[2] for r in results),
                 [r[3].count(HANDLER_LINE[signum]) for r in results]), flush=True)
        for lag, ok, served, log, info in results:
            if not ok:
                print("  lost %.3fs after the last poke, %d requests:\n%s"
                      % (lag, served, info), flush=True)
                break
