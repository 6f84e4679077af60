"""The fault matrix: handlers that fail, hang, crash, fork, or are caught in
a signal, against a real uWSGI, with the outcome for each on-error value
that README.md's "Fault matrix" documents.

Every case also checks that nothing is left behind: no zombie whose parent
is one of ours while it runs, and no live process of the instance's session
after it stopped (exec handlers run in process groups of their own, so the
session is what holds everything we started).  Every wait is bounded.
"""

import os
import re
import signal
import time

from harness import (FAILING, RECORDER, UWSGI_HEAD, IntegrationCase, Uwsgi, read_socket,
                     running, wait_for)

BASE = UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
min-worker-lifetime = 0
forkbomb-delay = 0
worker-reload-mercy = 10
forksafe-settings = %p
forksafe-stats = {dir}/stats.sock
forksafe-subscribe = * dl:{recorder}:record
"""

# uWSGI then runs PyOS_BeforeFork() and PyOS_AfterFork_Parent/Child()
# around each worker's fork (only with threads enabled), as os.fork() does.
# uWSGI's own fork hooks, forksafe's os.fork() semantics off (the two
# would run Python's at-fork handlers twice: refused, test_python_atfork).
FORK_HOOKS = ("enable-threads = true\npy-call-uwsgi-fork-hooks = true\n"
              "forksafe-python-atfork = false\n")

# The status uWSGI exits with when forksafe stopped it (on-error=fatal):
# uWSGI's own "the app cannot work" code, so a supervisor sees a failure.
FATAL_STATUS = 22

# One handler of each kind that fails on its first run, and how the log
# says why.
FAILURES = {
    "python-raises": ("python:fault_handlers:boom", r"RuntimeError: boom on worker-ready"),
    "dl-returns-7": ("dl:%s:fail" % FAILING, r"returned 7"),
    "exec-exits-3": ("exec:exit 3", r"exited with status 3"),
    "exec-hangs": ("exec:sleep 300", r"timed out after 1 s"),
    "exec-segfaults": ("exec:kill -SEGV $$", r"killed by signal 11"),
    # the shell that ran the crashed program reports 128 + 11
    "exec-child-segfaults": ("exec:/bin/sh -c 'kill -SEGV $$'", r"exited with status 139"),
}


# ----------------------------------------------------------------- processes

def proc_table():
    """{pid: (state, ppid, pgid, sid, comm)} for every process."""
    table = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % name) as f:
                data = f.read()
        except OSError:
            continue
        comm = data[data.find("(") + 1:data.rfind(")")]
        fields = data[data.rfind(")") + 2:].split()
        table[int(name)] = (fields[0], int(fields[1]), int(fields[2]), int(fields[3]), comm)
    return table


def session_of(sid):
    return {pid: info for pid, info in proc_table().items() if info[3] == sid}


def zombies_of(sid):
    """Zombies whose parent is a live process of the session: nobody reaps
    them but us.  (An orphan re-parented to init is init's to reap.)"""
    session = session_of(sid)
    live = {pid for pid, info in session.items() if info[0] != "Z"}
    return {pid: info for pid, info in session.items() if info[0] == "Z" and info[1] in live}


def survivors_of(sid):
    return {pid: info for pid, info in session_of(sid).items() if info[0] != "Z"}


class FaultCase(IntegrationCase):

    def start(self, extra, settings=None, ready=2, wait=True):
        u = Uwsgi(self, BASE + extra, settings=dict({"fault.dir": "%(here)s"}, **(settings or {})))
        self.addCleanup(self.kill_session, u)
        u.start(wait_ready=ready if wait else None)
        return u

    def kill_session(self, u):
        """Cleanup: whatever is left of the instance's session, by pid."""
        if u.proc is None:
            return
        for pid in survivors_of(u.master_pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def stats(self, u):
        return read_socket(os.path.join(u.dir, "stats.sock"))

    def assert_no_zombies(self, u):
        # A child that just ended is a zombie until its parent's next wait
        # (the master's cycle, 1 s): bounded generously, since a busy
        # machine may run that cycle late; a zombie nobody reaps stays.
        try:
            wait_for(lambda: not zombies_of(u.master_pid), what="no zombies")
        except AssertionError:
            self.fail("zombies left: %s\n%s" % (zombies_of(u.master_pid), u.log_text()[-3000:]))

    def assert_nothing_survives(self, u):
        try:
            wait_for(lambda: not survivors_of(u.master_pid), what="no survivors")
        except AssertionError:
            self.fail("processes of the instance survived it: %s" % survivors_of(u.master_pid))

    def assert_serving(self, u):
        """Every request succeeds (HTTP 200 with a worker's pid)."""
        for _ in range(8):
            self.assertTrue(u.get("/", timeout=60).isdigit())

    def stop_cleanly(self, u, status=0):
        self.assertEqual(u.stop(), status, u.log_text()[-4000:])
        self.assert_nothing_survives(u)

    def ready_pids(self, u, wid=None):
        return [e["process"]["pid"] for e in u.events("worker-ready")
                if wid is None or e["process"]["id"] == wid]


class HandlerFailureMatrix(FaultCase):
    """Cases 1-3: a handler of each kind fails once (raises, returns
    non-zero, exits non-zero, hangs past forksafe-timeout, segfaults), under
    each on-error value."""

    def run_cell(self, name, policy):
        handler, why = FAILURES[name]
        # Only the hanging handler is meant to meet the timeout; the others
        # get one they cannot meet on a busy machine, so that each fails
        # the way its row says and never by timing out.
        timeout = 1 if name == "exec-hangs" else 600
        u = self.start("forksafe-on-error = %s\n"
                       "forksafe-timeout = %d\n"
                       "forksafe-subscribe = worker-ready once %s\n" % (policy, timeout, handler),
                       wait=False)
        if policy == "fatal":
            try:
                status = u.proc.wait(timeout=60)
            except Exception:
                self.fail("fatal did not stop the instance:\n" + u.log_text()[-4000:])
            log = u.log_text()
            self.assertEqual(status, FATAL_STATUS, log[-4000:])
            self.assertRegex(log, r"handler '.*' failed on worker-ready in worker \d \(pid \d+\): "
                                  r".*" + why)
            self.assertIn("on-error=fatal: stopping the instance after a failed worker-ready "
                          "handler", log)
            self.assertEqual([e["reason"] for e in u.events("master-exit")], ["shutdown"])
            self.assert_nothing_survives(u)
            return u
        failure = r"handler '.*' failed on worker-ready in worker \d \(pid \d+\): .*" + why
        # on-error=exit: the worker logs its exit after the failure, so the
        # log is read once that line (the last thing the worker writes) is in.
        last = failure if policy == "log" else r"on-error=exit: worker \d \(pid \d+\) exits"
        wait_for(lambda: re.search(last, u.log_text()) or u.proc.poll() is not None,
                 what="the failure")
        log = u.log_text()
        self.assertRegex(log, r"handler '.*' failed on worker-ready in worker \d \(pid \d+\): "
                              r".*" + why)
        failed = [h for h in self.stats(u)["history"] if h["result"] == "failed"]
        self.assertEqual(len(failed), 1, failed)
        self.assertRegex(failed[0]["error"], why)
        self.assertEqual(self.stats(u)["events"]["worker-ready"]["failed"], 1)
        victim = failed[0]["process"]
        if policy == "exit":
            self.assertIn("on-error=exit: worker %d (pid %d) exits after a failed worker-ready "
                          "handler" % (victim["id"], victim["pid"]), log)
            wait_for(lambda: [p for p in self.ready_pids(u, victim["id"]) if p != victim["pid"]],
                     what="worker %d respawned" % victim["id"])
            self.assertFalse(running(victim["pid"]))
            exits = [e for e in u.events("worker-exit") if e["process"]["pid"] == victim["pid"]]
            self.assertEqual([e["reason"] for e in exits], ["exit"])
        else:
            self.assertNotIn("on-error=", log)
            self.assertTrue(running(victim["pid"]))
        self.assert_serving(u)
        self.assert_no_zombies(u)
        self.stop_cleanly(u)
        return u

    def test_matrix(self):
        for name in FAILURES:
            for policy in ("log", "exit", "fatal"):
                with self.subTest(handler=name, on_error=policy):
                    self.run_cell(name, policy)


def pids_in(u, name):
    try:
        with open(os.path.join(u.dir, name)) as f:
            return [int(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


# A slow handler of each in-process and out-of-process kind; each notes the
# pid of the process that runs it in slow.pids (exec: the shell, which then
# becomes the sleep).
#
# An exec: handler reads its stdin to EOF first: forksafe publishes the
# command's pid (the process group a dying worker's master kills, or the
# master's own stop kills) before it closes the write end of that pipe
# (lib/exec.c, forksafe__run_command), so once slow.pids names the shell,
# whoever is to kill its group knows it.
READ_STDIN = "cat >/dev/null; "
SLOW = {
    "python": "python:fault_handlers:slow",
    "exec": "exec:" + READ_STDIN + "echo $$ >> {dir}/slow.pids; exec sleep 300",
}


class KilledWorkerMatrix(FaultCase):
    """Case 4: a worker SIGKILLed while its slow handler runs.  The handler
    never returns, so it is no handler failure: under every on-error value
    the master reports a child-death, respawns the worker, and an exec
    handler's process group dies with the worker that ran it."""

    def run_cell(self, kind, policy):
        u = self.start("forksafe-on-error = %s\n"
                       "forksafe-timeout = 600\n"
                       "forksafe-subscribe = worker-ready once id=1 %s\n" % (policy, SLOW[kind]),
                       settings={"fault.sleep": "300"}, ready=2)
        runner = wait_for(lambda: pids_in(u, "slow.pids"), what="the slow handler")[0]
        worker = self.ready_pids(u, 1)[0]
        os.kill(worker, signal.SIGKILL)
        wait_for(lambda: len(self.ready_pids(u, 1)) >= 2, what="worker 1 respawned")
        death = wait_for(lambda: u.events("child-death"), what="child-death")[0]
        self.assertEqual((death["child"]["pid"], death["child"]["signal"]), (worker, 9))
        if kind == "exec":
            # the sleep would last 300 s: gone now, it was killed
            wait_for(lambda: not running(runner), what="the exec handler killed")
            self.assertRegex(u.log_text(), r"killed the exec handler .*worker 1 \(pid %d\)" % worker)
        doc = self.stats(u)
        self.assertEqual(doc["events"]["worker-ready"]["failed"], 0)
        self.assert_serving(u)
        self.assert_no_zombies(u)
        self.stop_cleanly(u)

    def test_matrix(self):
        for kind in SLOW:
            for policy in ("log", "exit", "fatal"):
                with self.subTest(kind=kind, on_error=policy):
                    self.run_cell(kind, policy)


class InterruptedMasterMatrix(FaultCase):
    """Case 6: SIGINT to the master while a slow pre-fork handler runs,
    before uWSGI's master loop owns the signals.  The operator's stop wins
    under every on-error value: the running exec handler is killed (a
    python: handler gets KeyboardInterrupt), that failure is logged, the
    master runs no more handlers, and the instance stops at once with
    status 0."""

    def run_cell(self, kind, policy):
        handler = {"exec": "exec:" + READ_STDIN + "echo $$ >> {dir}/slow.pids; sleep 300; exit 3",
                   "python": "python:fault_handlers:slow_boom"}[kind]
        u = self.start("forksafe-on-error = %s\n"
                       "forksafe-timeout = 600\n"
                       "forksafe-subscribe = pre-fork %s\n" % (policy, handler),
                       settings={"fault.sleep": "300"}, wait=False)
        runner = wait_for(lambda: pids_in(u, "slow.pids"), what="the slow handler")[0]
        started = time.monotonic()
        u.send_signal(signal.SIGINT)
        try:
            status = u.proc.wait(timeout=60)
        except Exception:
            self.fail("the master did not stop:\n" + u.log_text()[-4000:])
        log = u.log_text()
        self.assertEqual(status, 0, log[-3000:])
        # At once: the handler was cut short, not waited for (it would run
        # 300 s); the bound is generous for a busy machine's start and stop.
        self.assertLess(time.monotonic() - started, 60, log[-3000:])
        self.assertNotIn("NO MERCY", log)
        self.assertRegex(log, r"handler '.*' failed on pre-fork in the master \(pid %d\): %s"
                         % (u.master_pid, "killed by signal 9" if kind == "exec"
                            else "KeyboardInterrupt"))
        self.assertIn("stop requested during start-up", log)
        self.assertFalse(running(runner))
        self.assertEqual([e["reason"] for e in u.events("master-exit")], ["shutdown"])
        self.assert_nothing_survives(u)

    def test_matrix(self):
        for kind in ("exec", "python"):
            for policy in ("log", "exit", "fatal"):
                with self.subTest(kind=kind, on_error=policy):
                    self.run_cell(kind, policy)


# The first run (generation 0) notes its pid and blocks (300 s); once the
# test has created the marker, every later run fails at once.  The marker is
# checked before the pid is noted, so the run the test interrupts can only
# block, and the next generation's can only fail: the order is the state's,
# not a race between the reload and a sleep.
SLOW_FAILING = {
    "exec": "exec:" + READ_STDIN + "[ -e {dir}/marker ] && exit 3; "
            "echo $$ >> {dir}/slow.pids; exec sleep 300",
    "python": "python:fault_handlers:boom_once_marked",
}


class ReloadMatrix(FaultCase):
    """Case 5: a graceful reload (SIGHUP) while a slow handler (one that
    fails when it runs again) runs in a worker.  The handler runs outside
    any request, so uWSGI ends that worker at once: the handler is cut
    short (an exec handler's process group is killed with it) - no
    failure, whatever the on-error value.  The reload goes on; in the new
    generation the handler runs again and its failure follows on-error: log
    keeps serving, exit respawns the worker, fatal stops the instance
    (status 22)."""

    def run_cell(self, kind, policy):
        u = self.start("forksafe-on-error = %s\n"
                       "forksafe-timeout = 600\n"
                       "forksafe-subscribe = worker-ready once id=1 %s\n"
                       % (policy, SLOW_FAILING[kind]),
                       settings={"fault.sleep": "300", "fault.marker": "marker"})
        runner = wait_for(lambda: pids_in(u, "slow.pids"), what="the slow handler")[0]
        gen0_worker = self.ready_pids(u, 1)[0]
        with open(os.path.join(u.dir, "marker"), "w"):
            pass
        u.send_signal(signal.SIGHUP)
        failure = r"handler '.*' failed on worker-ready in worker 1 \(pid (\d+)\)"
        wait_for(lambda: re.search(failure, u.log_text()) or u.proc.poll() is not None,
                 what="the handler failing in generation 1")
        # it would block 300 s: gone, it was killed with its worker
        try:
            wait_for(lambda: not running(runner), what="the interrupted handler gone")
        except AssertionError:
            self.fail("the interrupted handler survived")
        self.assertNotIn("NO MERCY", u.log_text())
        self.assertEqual([e["reason"] for e in u.events("worker-exit") if e["generation"] == 0],
                         ["reload", "reload"])
        failed_in = int(re.search(failure, u.log_text()).group(1))
        self.assertNotEqual(failed_in, gen0_worker)
        self.assertIn(failed_in, [e["process"]["pid"] for e in u.events("worker-ready")
                                  if e["generation"] == 1])
        if policy == "fatal":
            try:
                status = u.proc.wait(timeout=60)
            except Exception:
                self.fail("fatal did not stop the instance:\n" + u.log_text()[-4000:])
            self.assertEqual(status, FATAL_STATUS, u.log_text()[-3000:])
            self.assertIn("on-error=fatal: stopping the instance after a failed worker-ready",
                          u.log_text())
            self.assertEqual([e["reason"] for e in u.events("master-exit")],
                             ["reload", "shutdown"])
            self.assert_nothing_survives(u)
            return
        if policy == "exit":
            # the worker logs its exit after the failure: wait for that line
            exit_line = "on-error=exit: worker 1 (pid %d)" % failed_in
            wait_for(lambda: exit_line in u.log_text() or u.proc.poll() is not None,
                     what="the on-error=exit line")
            self.assertIn(exit_line, u.log_text())
            wait_for(lambda: [p for p in self.ready_pids(u, 1)
                              if p not in (failed_in, gen0_worker)], what="worker 1 respawned")
        self.assertEqual([e["reason"] for e in u.events("master-exit")], ["reload"])
        self.assert_serving(u)
        self.assert_no_zombies(u)
        self.stop_cleanly(u)

    def test_matrix(self):
        for kind in SLOW_FAILING:
            for policy in ("log", "exit", "fatal"):
                with self.subTest(kind=kind, on_error=policy):
                    self.run_cell(kind, policy)


class ForkingHandlerMatrix(FaultCase):
    """Case 7: handlers that fork or start threads, and succeed.  An exec
    handler's run is its whole process group: a background job or a
    double-forked orphan it leaves is killed when it exits.  A python:
    handler that daemonizes properly (double fork, intermediate child
    reaped) leaves no zombie; one run in the master that leaves a child
    unwaited-for is reaped by uWSGI's master; threads do not block a stop
    (with Python's fork hooks for a master-side thread: see the next test;
    py-call-osafterfork would do on Python 3.12 and earlier, and makes
    Python 3.13 abort every worker).
    No failure, so the same under every on-error value."""

    SUBSCRIPTIONS = (
        "forksafe-subscribe = post-fork exec:sleep 300 & echo $! >> {dir}/exec-bg.pids\n"
        "forksafe-subscribe = worker-ready exec:(sleep 300 & echo $! >> {dir}/exec-orphan.pids)"
        "; exit 0\n"
        "forksafe-subscribe = post-fork,master-start python:fault_handlers:double_fork\n"
        "forksafe-subscribe = pre-fork python:fault_handlers:leave_child\n"
        "forksafe-subscribe = master-start,post-fork python:fault_handlers:start_threads\n")

    def run_cell(self, policy):
        u = self.start("forksafe-on-error = %s\n" % policy + FORK_HOOKS +
                       self.SUBSCRIPTIONS,
                       settings={"fault.child_sleep": "0.2"})
        wait_for(lambda: len(pids_in(u, "exec-orphan.pids")) >= 2, what="worker-ready handlers")
        left = pids_in(u, "exec-bg.pids") + pids_in(u, "exec-orphan.pids")
        self.assertEqual(len(left), 4)
        # each would sleep 300 s: gone now, they were killed
        wait_for(lambda: not any(running(p) for p in left),
                 what="what the exec handlers left killed")
        self.assertEqual(len(pids_in(u, "grandchild.pids")), 3)  # master + 2 workers
        self.assertEqual(len(pids_in(u, "child.pids")), 2)  # one per pre-fork
        # the worker-ready handlers have returned (the orphans' pids are
        # written before that): only then does "no failure" mean anything
        wait_for(lambda: self.stats(u)["events"]["worker-ready"]["handlers"] >= 4,
                 what="worker-ready handlers done (recorder and exec:, 2 workers)")
        doc = self.stats(u)
        self.assertEqual(sum(e["failed"] for e in doc["events"].values()), 0,
                         u.log_text()[-3000:])
        self.assertNotIn("failed on", u.log_text())
        self.assert_serving(u)
        self.assert_no_zombies(u)
        self.stop_cleanly(u)
        self.assertNotIn("NO MERCY", u.log_text())

    def test_matrix(self):
        for policy in ("log", "exit", "fatal"):
            with self.subTest(on_error=policy):
                self.run_cell(policy)


class MasterThreadAtFork(FaultCase):
    """Without os.fork()'s semantics (forksafe-python-atfork = false), uWSGI
    forks from C without telling Python, so a worker's copy of a non-daemon
    thread a master-side handler started (and that was running at the fork)
    looks alive forever, and Python's exit waits for it: the worker ends
    only when the master's mercy runs out.  Bounded, nothing survives.  With
    them (the default), `threading` knows the thread is not in the child,
    and the stop needs no mercy."""

    THREADS = ("worker-reload-mercy = 2\n"
               "forksafe-subscribe = master-start python:fault_handlers:start_threads\n"
               "forksafe-subscribe = pre-fork python:fault_handlers:slow\n")

    def test_with_os_fork_semantics_the_stop_needs_no_mercy(self):
        u = self.start(self.THREADS,
                       settings={"fault.sleep": "0.05", "fault.release": "release"})
        with open(os.path.join(u.dir, "release"), "w"):
            pass
        self.assert_serving(u)
        self.assertEqual(u.stop(timeout=60), 0, u.log_text()[-4000:])
        self.assert_nothing_survives(u)
        self.assertNotIn("NO MERCY", u.log_text())

    def test_stop_waits_for_the_mercy_only(self):
        # The plain thread runs until the test releases it, which it does
        # once both workers are ready: both were forked while it ran.
        u = self.start("forksafe-python-atfork = false\n"
                       "worker-reload-mercy = 2\n"
                       "forksafe-subscribe = master-start python:fault_handlers:start_threads\n"
                       "forksafe-subscribe = pre-fork python:fault_handlers:slow\n",
                       settings={"fault.sleep": "0.05", "fault.release": "release"})
        with open(os.path.join(u.dir, "release"), "w"):
            pass
        self.assert_serving(u)
        started = time.monotonic()
        status = u.stop(timeout=60)
        elapsed = time.monotonic() - started
        self.assertEqual(status, 0, u.log_text()[-4000:])
        self.assert_nothing_survives(u)
        self.assertIn("NO MERCY", u.log_text())
        # What the test is about: the stop ends when the 2 s mercy runs out.
        # Not waiting for the mercy would mean uWSGI's default (60 s) or the
        # worker's exit waiting forever for the thread; 30 s tells those
        # apart with room for a busy machine's master cycles and exits.
        self.assertLess(elapsed, 30, u.log_text()[-3000:])


class MissingLibraryAtReload(FaultCase):
    """Case 8: a dl: handler's library deleted, then SIGHUP.  A reload
    re-executes the master, which resolves every handler again before any
    fork: it stops with the usual FILE:LINE error and status 1 - a
    configuration error, so no on-error value applies - and leaves nothing
    running.  (Serving on with the old code is not possible: the old
    generation is gone by then.)"""

    def run_cell(self, policy):
        u = Uwsgi(self, BASE + "forksafe-on-error = %s\n"
                  "forksafe-subscribe = post-fork dl:{dir}/hooks.so:record\n" % policy,
                  settings={"fault.dir": "%(here)s"})
        self.addCleanup(self.kill_session, u)
        library = os.path.join(u.dir, "hooks.so")
        with open(RECORDER, "rb") as src, open(library, "wb") as dst:
            dst.write(src.read())
        u.start(wait_ready=2)
        self.assert_serving(u)
        os.unlink(library)
        u.send_signal(signal.SIGHUP)
        try:
            status = u.proc.wait(timeout=60)
        except Exception:
            self.fail("the reload with a missing library did not end:\n" + u.log_text()[-4000:])
        log = u.log_text()
        self.assertEqual(status, 1, log[-3000:])
        with open(u.ini) as f:
            line = [i for i, text in enumerate(f, 1) if "hooks.so" in text][0]
        self.assertRegex(log, r"\[forksafe\] %s:%d: handler 'dl:%s:record': .*%s.*No such file"
                         % (re.escape(u.ini), line, re.escape(library), re.escape(library)))
        self.assertEqual([e["reason"] for e in u.events("master-exit")], ["reload"])
        self.assertEqual(len(u.events("master-start")), 1)
        self.assert_nothing_survives(u)

    def test_matrix(self):
        for policy in ("log", "exit", "fatal"):
            with self.subTest(on_error=policy):
                self.run_cell(policy)
