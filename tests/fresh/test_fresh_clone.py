"""The README's first command on a fresh clone: `git clone` of the committed
HEAD (what CI and a new user get, nothing built), then `make run` exactly
as the README says, and `make run-gunicorn` the same way.  Each must build
what it needs, serve the example's events page on 127.0.0.1:8080 with no
error-looking line in the server's log, say where to look, stop on Ctrl-C's
signal and leave nothing running.  `make run-celery` likewise starts its
broker and worker and answers its tasks, each pool process on a pool of its
own."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import unittest
import urllib.request

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "integration"))
from harness import session_processes, wait_for  # noqa: E402

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
ADDRESS = ("127.0.0.1", 8080)
URL = "http://127.0.0.1:8080/"
WORKERS = 4  # production.ini's processes
# Building the plugin, the core and the example's native handler from
# nothing, on a busy machine: a safety net, the wait ends when it serves.
BUILD_AND_SERVE = 900
ROW = re.compile(r"<tr[^>]*><td>(\w+) (\d+)</td><td>(\d+)</td><td>(\d+)</td><td>([\w-]+)</td>")
# What a newcomer takes for a failure.  uWSGI's own advice to run as
# another user than root is expected on a machine where make run is root.
ALARMING = re.compile(r"(?i)error|no such file|traceback|exception|fail|cannot|unable|denied|"
                      r"!!!|warning")
EXPECTED = ("*** WARNING: you are running uWSGI as root !!! (use the --uid flag) ***",)


def port_taken(address=ADDRESS):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(address)
        except OSError as e:
            return e.strerror
    return None


def session_members(sid):
    return session_processes(sid, zombies=False)


class FreshCloneTest(unittest.TestCase):
    """One clone for every test, in name order: the taken port is said
    before anything is built, `make run` then builds from nothing, and the
    gunicorn and Celery targets find the tree half built (what they need
    and is not there yet is built, the rest reused): both cases a user
    meets."""

    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.mkdtemp(prefix="forksafe-fresh-")
        cls.clone = os.path.join(cls.work, "forksafe")
        subprocess.run(["git", "clone", "--quiet", "--no-hardlinks", ROOT, cls.clone],
                       check=True, stdin=subprocess.DEVNULL)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.work, True)

    def setUp(self):
        self.log = os.path.join(self.work, "%s.log" % self._testMethodName)

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def test_b_make_run_builds_from_nothing_and_serves(self):
        self.serve_and_stop("run", "[uWSGI] getting INI configuration", "goodbye to uWSGI")

    def test_c_make_run_gunicorn_serves(self):
        self.serve_and_stop("run-gunicorn", "Starting gunicorn", "Shutting down: Master")

    def test_d_make_run_celery_answers_its_tasks(self):
        make = self.start("run-celery", "the worker keeps running", address=("127.0.0.1", 6390))
        text = self.log_text()
        # Celery's own log lines share the stream and may follow an answer
        # on the same line (no newline between them).
        answers = re.findall(r"\[forksafe_sqla\] task answered by pool process (\d+) "
                             r"on database backend \S+ \(.*\); it disposed the pool inherited "
                             r"from pid (\d+)\b", text)
        self.assertEqual(len(answers), 8, text[-6000:])
        self.assertEqual(len({main for _, main in answers}), 1, answers)
        self.assertNotIn("Traceback", text)
        self.stop(make, "run-celery", "Warm shutdown")

    def start(self, target, started, address=ADDRESS):
        """make TARGET in a fresh clone, until its log says STARTED."""
        taken = port_taken(address)
        # Not a skip: a make run that cannot be tested is a failure to see.
        self.assertIsNone(taken, "%s:%d is taken (%s): the README's `make %s` uses it; stop "
                          "whatever listens on it and run again" % (address + (taken, target)))
        with open(self.log, "wb") as out:
            make = subprocess.Popen(["make", target], cwd=self.clone, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True)
        self.addCleanup(self.kill_session, make)

        def up():
            if make.poll() is not None:
                raise AssertionError("make %s exited (%s) before it was up:\n%s"
                                     % (target, make.returncode, self.log_text()[-6000:]))
            return started in self.log_text()
        wait_for(up, timeout=BUILD_AND_SERVE, interval=0.2, what="make %s to be up" % target)
        return make

    def stop(self, make, target, server_stopped):
        """Ctrl-C: the terminal sends SIGINT to the whole foreground group;
        everything make TARGET started must end."""
        os.killpg(make.pid, signal.SIGINT)
        try:
            make.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("make %s did not stop within 60 s of SIGINT:\n%s"
                      % (target, self.log_text()[-4000:]))
        wait_for(lambda: not session_members(make.pid), timeout=30,
                 what="every process make %s started to end" % target)
        self.assertIn(server_stopped, self.log_text())

    def serve_and_stop(self, target, server_starts, server_stopped):
        make = self.start(target, "serving on " + URL)

        # Every worker's post-fork and worker-ready are on the page.
        def every_worker_listed():
            with urllib.request.urlopen(URL, timeout=30) as r:
                self.assertEqual(r.status, 200)
                page = r.read().decode()
            rows = ROW.findall(page)
            return all(("worker", str(i), event) in {(k, n, e) for k, n, _, _, e in rows}
                       for i in range(1, WORKERS + 1) for event in ("post-fork", "worker-ready"))
        wait_for(every_worker_listed, what="post-fork and worker-ready of %d workers" % WORKERS)

        text = self.log_text()
        start = text.index(server_starts)
        serving = text.index("serving on " + URL)
        alarming = [line for line in text[start:serving].splitlines()
                    if ALARMING.search(line) and line.strip() not in EXPECTED]
        self.assertEqual(alarming, [], "error-looking lines before make %s serves" % target)
        self.stop(make, target, server_stopped)

    def test_a_taken_port_is_said_at_once(self):
        """With 127.0.0.1:8080 in use, make run stops at once with one line
        naming the address and the file to change; it neither hangs nor
        serves elsewhere."""
        if port_taken():
            self.skipTest("127.0.0.1:8080 is taken already (the other test says so)")
        with socket.socket() as holder:
            holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            holder.bind(ADDRESS)
            holder.listen(1)
            with open(self.log, "wb") as out:
                done = subprocess.run(["make", "run"],
                                      cwd=self.clone, stdout=out, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      timeout=120)
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("make run: cannot serve on 127.0.0.1:8080: Address already in use",
                      self.log_text())
        self.assertIn("production.ini", self.log_text())
        # said before building or starting anything (this test runs first:
        # the clone has built nothing yet)
        self.assertNotIn("[uWSGI] getting INI configuration", self.log_text())
        self.assertFalse(os.path.exists(os.path.join(self.clone, "forksafe_plugin.so")))

    def kill_session(self, make):
        """Whatever is left of make run's session, SIGKILLed and reaped --
        after a Ctrl-C first, when a failed test left it running: run-celery.sh
        stops its broker, which runs in a session of its own, only then."""
        if make.poll() is None:
            os.killpg(make.pid, signal.SIGINT)
            try:
                make.wait(timeout=60)
            except subprocess.TimeoutExpired:
                pass
        for pid in session_members(make.pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if make.poll() is None:
            make.kill()
        make.wait(timeout=30)


if __name__ == "__main__":
    unittest.main()
