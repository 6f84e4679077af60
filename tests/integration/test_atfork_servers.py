"""os.register_at_fork handlers under a real gunicorn and a real Celery
worker: the gunicorn and Celery rows of the proof that
tests/integration/test_python_atfork.py makes under uWSGI
(forksafe-python-atfork).  Both servers fork their children with os.fork()
themselves (gunicorn's Arbiter.spawn_worker, billiard's popen_fork), so
CPython runs the handlers there; this shows that the same app
(apps/atfork_app.py) sees the same calls, and that the forksafe adapters add
none and lose none.

The app registers two sets of handlers in the server's parent process (the
gunicorn arbiter, preload_app = True; the Celery worker's main process) and
notes each call as "PID WHICH" in $FORKSAFE_ATFORK_LOG.  The children are
known exactly from the adapters' own record of their forks: the native
event_log handler (`*` in [forksafe]) has a post-fork-parent event with each
child's pid.  `python:` handlers of pre-fork and post-fork-parent note those
events in the same file as "pre-fork:ID" and "post-fork-parent:PID", so the
parent's notes are ordered against the forks themselves; the app's own
`on_post_fork` (subscribed to post-fork) notes "post-fork" in each child.
For every child forked, the test asserts:

  - in the parent, exactly pre-fork:ID, before2, before1, parent1, parent2,
    post-fork-parent:PID for that child and nothing else: one before pair
    and one parent pair per fork, never one without a fork;
  - in the child, exactly child1, child2, then post-fork;
  - no note from any other process.

Children are replaced during the run (gunicorn's max_requests, Celery's
--max-tasks-per-child 1), so respawns are forks of a parent that already
forked, some of them from its event loop after requests or tasks ran.
"""

import collections
import os
import sys
import unittest

from harness import APP_DIR, wait_for
from test_celery import WORKER_ARGS, CeleryCase, Worker
from test_gunicorn import EVENT_LOG, Gunicorn
from test_gunicorn import setUpModule as gunicorn_built

if APP_DIR not in sys.path:
    sys.path.insert(0, APP_DIR)
import atfork_app  # noqa: E402
from atfork_app import read_notes  # noqa: E402

# The import registers the app's handlers in this test process too, which
# other modules of the suite fork (test_postgres.py): they note nothing here,
# whatever the environment.
atfork_app.LOG = ""

# The servers' one settings file: the app (a paste factory for gunicorn),
# the event log, the marks in the parent and the app's post-fork handler.
INI = """
[app:main]
use = call:atfork_host:main
forksafe.event_log = %(here)s/native.jsonl

[forksafe]
* = dl:{event_log}:record
pre-fork = python:atfork_host:mark
post-fork-parent = python:atfork_host:mark
post-fork = python:atfork_app:on_post_fork
"""

ATFORK_HOST = '''
"""test_atfork_servers: apps/atfork_app.py as a paste app, and python:
handlers that note the parent's fork events among its at-fork notes."""
import atfork_app


def main(global_config, **settings):
    return atfork_app.application


def mark(payload):
    """pre-fork:ID before the fork, post-fork-parent:PID after it."""
    child = payload["child"]
    key = "pid" if payload["event"] == "post-fork-parent" else "id"
    atfork_app.note("%s:%d" % (payload["event"], child[key]))
'''

PARENT_PER_FORK = ["before2", "before1", "parent1", "parent2"]
CHILD = ["child1", "child2", "post-fork"]


class AtForkAssertions(object):

    def assert_one_call_set_per_fork(self, parent, events, log_path, why):
        """The notes of LOG_PATH against the forks PARENT made, as the
        native event log EVENTS has them (parent and children stopped)."""
        notes = collections.OrderedDict()
        for pid, which in read_notes(log_path):
            notes.setdefault(pid, []).append(which)
        mine = [e for e in events if e["process"]["pid"] == parent]
        forks = [e for e in mine if e["event"] in ("pre-fork", "post-fork-parent")]
        # the parent's own record: pre-fork, post-fork-parent, one pair per fork
        self.assertEqual([e["event"] for e in forks],
                         ["pre-fork", "post-fork-parent"] * (len(forks) // 2), why)
        children = [e["child"]["pid"] for e in forks if e["event"] == "post-fork-parent"]
        self.assertEqual(len(set(children)), len(children), children)
        # each child recorded its own post-fork: the children are exactly these
        self.assertEqual(sorted(e["process"]["pid"] for e in events if e["event"] == "post-fork"),
                         sorted(children), why)
        expected = []
        for pre, post in zip(forks[0::2], forks[1::2]):
            self.assertEqual(pre["child"]["id"], post["child"]["id"])
            expected += (["pre-fork:%d" % pre["child"]["id"]] + PARENT_PER_FORK
                         + ["post-fork-parent:%d" % post["child"]["pid"]])
        self.assertEqual(notes.pop(parent, []), expected, why)
        for pid in children:
            self.assertEqual(notes.pop(pid, []), CHILD, "child %d\n%s" % (pid, why))
        self.assertEqual(dict(notes), {}, "notes from processes that are no child of %d\n%s"
                         % (parent, why))
        return children


def setUpModule():
    gunicorn_built()


class AtForkGunicorn(Gunicorn):
    """test_gunicorn's instance serving atfork_app, noting in atfork.log."""

    def env(self):
        env = super().env()
        env["PYTHONPATH"] += os.pathsep + APP_DIR
        env["FORKSAFE_ATFORK_LOG"] = self.atfork_log
        return env

    @property
    def atfork_log(self):
        return os.path.join(self.dir, "atfork.log")


MAX_REQUESTS = 2
CONF = '''
from forksafe.gunicorn import *  # noqa: F401,F403
preload_app = True
max_requests = %d
max_requests_jitter = 0
''' % MAX_REQUESTS


class GunicornAtForkTest(AtForkAssertions, unittest.TestCase):
    maxDiff = None

    def test_every_worker_fork_runs_the_handlers_once(self):
        g = AtForkGunicorn(self, CONF, ini=INI, workers=2,
                           extra_files={"atfork_host.py": ATFORK_HOST})
        g.start()
        self.addCleanup(g.stop)
        # Requests until two workers have served max_requests: each of them
        # exits after its last answer and the arbiter forks its replacement.
        # A worker answers with its pid, so which ones retire is known.
        served = collections.Counter()

        def two_retired():
            served[g.get("/")] += 1
            return len([pid for pid, n in served.items() if n == MAX_REQUESTS]) >= 2
        wait_for(two_retired, timeout=120, interval=0, what="two workers at max_requests")
        retired = sorted(pid for pid, n in served.items() if n == MAX_REQUESTS)
        self.assertLessEqual(max(served.values()), MAX_REQUESTS, served)
        forks = 2 + len(retired)
        g.wait_events("worker-exit", len(retired), reason="max-requests")
        g.wait_events("post-fork-parent", forks)
        g.wait_events("worker-ready", forks)
        self.assertEqual(g.stop(), 0, g.log_text()[-4000:])
        why = g.log_text()[-4000:]
        children = self.assert_one_call_set_per_fork(g.master_pid, g.events(), g.atfork_log, why)
        # no fork but these: the two first workers and one per retired worker
        self.assertEqual(len(children), forks, why)
        self.assertTrue(set(retired) <= set(children), (retired, children))
        self.assertEqual(sorted(e["process"]["pid"] for e in g.events(name="worker-exit")
                                if e["reason"] == "max-requests"), retired)
        respawns = [e["child"]["respawn"] for e in g.events(name="post-fork-parent")]
        self.assertGreater(max(respawns), 0, respawns)


TASKS = 3


class CeleryAtForkTest(AtForkAssertions, CeleryCase):
    """A Celery worker (prefork, concurrency 2, --max-tasks-per-child 1).

    Its main process forks nothing but pool processes: billiard's
    popen_fork.Popen (os.fork(), which runs the handlers) for each pool
    process and each replacement.  billiard's other ways to start a process
    (spawnv_passfds: _posixsubprocess.fork_exec without preexec_fn, for the
    spawn and forkserver start methods and the semaphore tracker) run no
    at-fork handler and are not used by the fork start method, and Celery's
    own os.fork() is --detach's.  The exact count below would show any
    other fork that runs the handlers."""

    maxDiff = None

    def test_every_pool_process_fork_runs_the_handlers_once(self):
        ini = os.path.join(self.dir, "production.ini")
        with open(ini, "w") as f:
            f.write(INI.format(event_log=EVENT_LOG))
        with open(os.path.join(self.dir, "atfork_host.py"), "w") as f:
            f.write(ATFORK_HOST)
        atfork_log = os.path.join(self.dir, "atfork.log")
        # The app is a task module of the worker (imported in the main
        # process before the pool starts); no Pyramid application.
        w = Worker(self, self.dir, self.redis.url, ini, args=["--max-tasks-per-child", "1"],
                   worker_args=WORKER_ARGS,
                   env={"FORKSAFE_ATFORK_LOG": atfork_log, "CELERY_APP_IMPORTS": "atfork_app",
                        "CELERY_APP_PYRAMID": "0"}).start()
        self.addCleanup(w.stop)
        w.wait_ready(2)
        client = self.client()
        # One task at a time: each runs in a pool process that then exits
        # (max-tasks-per-child 1) and is replaced.
        ran = [client.send_task("celery_app.getpid").get(timeout=60) for _ in range(TASKS)]
        self.assertEqual(len(set(ran)), TASKS, ran)
        forks = 2 + TASKS
        w.wait_events(lambda es: len([e for e in es if e["event"] == "worker-exit"
                                      and e["reason"] == "max-requests"]) >= TASKS,
                      "%d pool processes recycled" % TASKS)
        w.wait_ready(forks)
        w.wait_consumer_ready()
        self.assertEqual(w.stop(), 0, w.log_text()[-4000:])
        why = w.log_text()[-4000:]
        children = self.assert_one_call_set_per_fork(w.pid, w.events(), atfork_log, why)
        self.assertEqual(len(children), forks, why)
        self.assertTrue(set(ran) <= set(children), (ran, children))
        self.assertEqual(sorted(e["process"]["pid"] for e in w.events("worker-exit")
                                if e["reason"] == "max-requests"), sorted(ran))


if __name__ == "__main__":
    unittest.main()
