"""Python's own fork semantics under uWSGI (forksafe-python-atfork), against
a real uWSGI.

Counting: an app registers two os.register_at_fork handlers of each kind
(apps/atfork_app.py) and notes each call.  With 2 workers respawned by
max-requests, a mule and a spooler, every fork of a child shows in the
master exactly `before2, before1` then `parent1, parent2`, and in the child
`child1, child2` before forksafe's own post-fork handler runs; the master's
other forks (a daemon) and the option set to false show nothing.  So with
enable-threads on and off, and with lazy-apps (the handlers imported in the
master with shared-import).

The deadlock uWSGI users hit (apps/atfork_deadlock_app.py): a master
thread holds a lock nearly all the time, each worker takes it on its first
request, and max-requests = 1 forks a worker for every request.  Bare
uWSGI: workers hang (counted; a hung worker is killed after a bound, and
the master forks the next).  With forksafe: none in 200 forks.  Once with
logging's handler lock, once with the app's own threading.Lock kept sane
by its own at-fork handlers.

And the python plugin's own fork options: py-call-osafterfork is taken over
(each child still runs `after_in_child` once), py-call-uwsgi-fork-hooks is
refused at start with its file and line; a bad value of the option too.
"""

import os
import signal
import sys
import urllib.error
import urllib.request

from harness import APP_DIR, IntegrationCase, Uwsgi, read_socket, wait_for

sys.path.insert(0, APP_DIR)
from atfork_app import read_notes  # noqa: E402 - the app's own reader

COUNTING = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 2
mules = 1
spooler = {dir}/spool
max-requests = 1
min-worker-lifetime = 0
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
pythonpath = {app_dir}
env = FORKSAFE_ATFORK_LOG={dir}/atfork.log
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = post-fork python:atfork_app:on_post_fork
"""

PRELOADED = "module = atfork_app\n"
# The app is loaded in each worker; the handlers are registered in the
# master by shared-import, and lazy-apps' workers find the module imported.
LAZY = "lazy-apps = true\nshared-import = atfork_app\nmodule = atfork_app\n"

CHILD_NOTES = ["child1", "child2", "post-fork"]
MASTER_NOTES = ["before2", "before1", "parent1", "parent2"]


def line_of(u, text):
    """FILE:LINE of TEXT in U's ini, as forksafe names it."""
    with open(u.ini) as f:
        for number, line in enumerate(f, 1):
            if line.strip() == text:
                return "%s:%d" % (u.ini, number)
    raise AssertionError("%r not in %s" % (text, u.ini))


class CountingTest(IntegrationCase):

    def run_instance(self, extra, respawns=4, child_notes=CHILD_NOTES):
        u = Uwsgi(self, COUNTING + extra, settings={})
        os.makedirs(os.path.join(u.dir, "spool"))
        u.start(wait_ready=2)
        wait_for(lambda: {e["process"]["kind"] for e in u.events("post-fork")}
                 >= {"worker", "mule", "spooler"}, what="a worker, the mule and the spooler")
        for _ in range(respawns):
            # max-requests = 1: the worker that answers is replaced
            u.get()
        wait_for(lambda: len([e for e in u.events("post-fork")
                              if e["process"]["kind"] == "worker"]) >= 2 + respawns,
                 what="%d worker forks" % (2 + respawns))
        # every child past its post-fork handler, then a quiet master
        children = self.children(u)
        wait_for(lambda: self.child_notes_done(u, children, child_notes),
                 what="each child's notes")
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        return u, self.children(u)

    def children(self, u):
        """{pid: (kind, id)} of every child forksafe saw forked."""
        return {e["process"]["pid"]: (e["process"]["kind"], e["process"]["id"])
                for e in u.events("post-fork")}

    def notes(self, u):
        return read_notes(os.path.join(u.dir, "atfork.log"))

    def child_notes_done(self, u, children, expected):
        by_pid = {}
        for pid, which in self.notes(u):
            by_pid.setdefault(pid, []).append(which)
        return all(by_pid.get(pid) == expected for pid in children)

    def assert_os_fork_semantics(self, u, children):
        by_pid = {}
        for pid, which in self.notes(u):
            by_pid.setdefault(pid, []).append(which)
        master = u.master_pid
        kinds = sorted({kind for kind, _ in children.values()})
        self.assertEqual(kinds, ["mule", "spooler", "worker"], children)
        # one before and one after_in_parent pair per child, in CPython's order
        self.assertEqual(by_pid.pop(master, []), MASTER_NOTES * len(children), u.log_text()[-3000:])
        for pid, (kind, wid) in children.items():
            self.assertEqual(by_pid.pop(pid, []), CHILD_NOTES, "%s %d (pid %d)" % (kind, wid, pid))
        # nothing from any other process (the daemon, a second child half)
        self.assertEqual(by_pid, {})

    def test_threads_on(self):
        # attach-daemon: a fork of the master's that is no child of forksafe's
        u, children = self.run_instance(PRELOADED + "enable-threads = true\n"
                                        "attach-daemon = exec sleep 600\n")
        self.assert_os_fork_semantics(u, children)
        self.assertNotIn("sub-interpreter", u.log_text())

    def test_threads_off(self):
        u, children = self.run_instance(PRELOADED)
        self.assert_os_fork_semantics(u, children)

    def test_lazy_apps(self):
        u, children = self.run_instance(LAZY + "enable-threads = true\n")
        self.assert_os_fork_semantics(u, children)

    def test_off_does_what_uwsgi_does(self):
        u, children = self.run_instance(PRELOADED + "enable-threads = true\n"
                                        "forksafe-python-atfork = false\n", respawns=1,
                                        child_notes=["post-fork"])
        self.assertTrue(children)
        notes = self.notes(u)
        self.assertEqual([which for _, which in notes if which != "post-fork"], [], notes)

    def test_py_call_osafterfork_is_taken_over(self):
        u, children = self.run_instance(PRELOADED + "enable-threads = true\n"
                                        "py-call-osafterfork = true\n", respawns=2)
        self.assert_os_fork_semantics(u, children)
        self.assertLogHas(u, "[forksafe] %s: py-call-osafterfork is left to "
                          "forksafe-python-atfork" % line_of(u, "py-call-osafterfork = true"))


class RefusedTest(IntegrationCase):

    def test_py_call_uwsgi_fork_hooks_is_refused_at_start(self):
        u = Uwsgi(self, COUNTING + PRELOADED + "enable-threads = true\n"
                  "py-call-uwsgi-fork-hooks = true\n", settings={})
        self.assertEqual(u.run_to_exit(), 1, u.log_text())
        log = u.log_text()
        self.assertIn("[forksafe] %s: py-call-uwsgi-fork-hooks and forksafe-python-atfork "
                      "would both run os.register_at_fork handlers"
                      % line_of(u, "py-call-uwsgi-fork-hooks = true"), log)
        self.assertIn("forksafe-python-atfork = false", log)
        self.assertNotIn("spawned uWSGI worker", log)

    def test_python_worker_override_is_refused_at_start(self):
        u = Uwsgi(self, COUNTING + PRELOADED + "python-worker-override = {app_dir}/atfork_app.py\n",
                  settings={})
        self.assertEqual(u.run_to_exit(), 1, u.log_text())
        self.assertIn("[forksafe] %s: python-worker-override makes the python plugin run "
                      "PyOS_AfterFork_Child in each worker itself"
                      % line_of(u, "python-worker-override = %s/atfork_app.py" % APP_DIR),
                      u.log_text())

    def test_uwsgis_own_hooks_without_forksafes(self):
        # no mule: uWSGI's hooks leave a mule's interpreter broken (it
        # crashes in a respawn loop), with or without forksafe
        u = Uwsgi(self, COUNTING.replace("mules = 1\n", "") + PRELOADED + "enable-threads = true\n"
                  "py-call-uwsgi-fork-hooks = true\nforksafe-python-atfork = false\n",
                  settings={})
        os.makedirs(os.path.join(u.dir, "spool"))
        u.start(wait_ready=2)
        self.assertEqual(u.get().strip().isdigit(), True)

    def test_a_bad_value_is_named_with_its_line(self):
        u = Uwsgi(self, COUNTING + PRELOADED + "forksafe-python-atfork = sometimes\n",
                  settings={})
        self.assertEqual(u.run_to_exit(), 1, u.log_text())
        self.assertIn("[forksafe] %s: forksafe-python-atfork must be true or false, "
                      "not 'sometimes'" % line_of(u, "forksafe-python-atfork = sometimes"),
                      u.log_text())


DEADLOCK = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3{forksafe}
master = true
processes = 1
max-requests = 1
min-worker-lifetime = 0
forkbomb-delay = 0
enable-threads = true
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
stats = {dir}/stats.sock
pythonpath = {app_dir}
module = atfork_deadlock_app
env = FORKSAFE_DEADLOCK={kind}
"""
# A worker that has not answered its first request in this long is hung:
# a healthy one answers in milliseconds; the bound is for a busy machine.
HUNG_AFTER = 5.0


class DeadlockTest(IntegrationCase):

    def worker_pid(self, u):
        try:
            workers = read_socket(os.path.join(u.dir, "stats.sock"))["workers"]
        except (OSError, ValueError, KeyError):
            return 0
        return workers[0]["pid"] if workers and workers[0]["pid"] > 0 else 0

    def forks(self, kind, forksafe, count, enough_hangs=None):
        """Serves COUNT requests, each by a newly forked worker, and
        returns how many of those workers hung; stops early once
        ENOUGH_HANGS were seen."""
        body = DEADLOCK.replace("{forksafe}", ",forksafe" if forksafe else "")
        body = body.replace("{kind}", kind)
        u = Uwsgi(self, body)
        u.start()
        hung = 0
        url = "http://127.0.0.1:%d/" % u.port
        for n in range(count):
            pid = wait_for(lambda: self.worker_pid(u), what="a worker")
            try:
                with urllib.request.urlopen(url, timeout=HUNG_AFTER) as r:
                    self.assertEqual(int(r.read()), pid)
            except (urllib.error.URLError, OSError, TimeoutError):
                if u.proc.poll() is not None:
                    raise AssertionError("uWSGI exited:\n" + u.log_text()[-3000:])
                hung += 1
                # it waits for ever: end it, the master forks the next
                os.kill(pid, signal.SIGKILL)
                wait_for(lambda: self.worker_pid(u) not in (0, pid), what="a new worker")
                if enough_hangs and hung >= enough_hangs:
                    break
            else:
                wait_for(lambda: self.worker_pid(u) != pid, what="worker %d replaced" % pid)
        if hung:
            # a worker forked last may hang too: uWSGI would wait its mercy
            u.kill()
        else:
            self.assertEqual(u.stop(), 0, u.log_text()[-3000:])
        return hung, n + 1

    def check(self, kind):
        hung, tried = self.forks(kind, forksafe=False, count=30, enough_hangs=2)
        sys.stderr.write("\n%s: bare uWSGI: %d of %d workers hung; " % (kind, hung, tried))
        self.assertGreater(hung, 0, "bare uWSGI: no worker hung in %d forks: the test shows "
                           "nothing" % tried)
        hung, tried = self.forks(kind, forksafe=True, count=200)
        sys.stderr.write("with forksafe: %d of %d\n" % (hung, tried))
        self.assertEqual((hung, tried), (0, 200))

    def test_logging_lock(self):
        self.check("logging")

    def test_the_apps_own_lock(self):
        self.check("lock")


if __name__ == "__main__":
    import unittest

    unittest.main()
