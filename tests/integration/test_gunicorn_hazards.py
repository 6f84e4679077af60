"""Fork hazards under a real gunicorn (Debian's), as test_hazards.py shows
them under uWSGI: what a worker is about to inherit from the arbiter and
must not share.

The example app (examples/pyramid_sqlalchemy) under `gunicorn --preload`
queries PostgreSQL in the arbiter before the workers are forked:

  - warn (the default): each worker is told, once, which descriptor it will
    inherit (the pre-fork payload has it too), over TCP on the cluster's
    port and over its UNIX socket, named as PostgreSQL's, and the app's own
    post-fork handler (python:forksafe_sqla.forksafe:dispose_engine, which
    does not claim the socket as recipe:sqlalchemy does) still gives each
    worker its own connection;
  - forksafe_hazards = "fail": gunicorn exits non-zero before it forks
    anything;
  - forksafe_hazard_allow: an allowed connection is not said.

A hazard that appears once workers run (a pre-fork handler that connects
before a respawn) stops gunicorn under "fail", and the worker being forked
exits at once.  A plain app says nothing (test_gunicorn_plain.py).
"""
import os
import re
import signal
import socket
import unittest

from harness import APP_DIR
from pg import PostgresCluster
from test_gunicorn import ALL_HOOKS, Gunicorn, serve_example, with_hooks
from test_gunicorn import setUpModule as gunicorn_built
# the same lines and payloads as under uWSGI
from test_hazards import TCP_LINE, UNIX_LINE, assert_inherited_and_served

WORKERS = 4
PG = PostgresCluster()
_databases = iter(range(1, 1000))


def setUpModule():
    gunicorn_built()
    unittest.addModuleCleanup(PG.stop)
    PG.start()


def new_database():
    name = "gunicorn_hazard%d" % next(_databases)
    return name, PG.create_database(name)


def serve(testcase, url, **kwargs):
    """The example under gunicorn with the app's own post-fork handler,
    which drops the pool in each worker but, unlike recipe:sqlalchemy
    (test_gunicorn.GunicornPostgresTest), does not claim its sockets: the
    connection is inherited and said (as test_hazards.py does under uWSGI)."""
    return serve_example(testcase, url, recipe="python:forksafe_sqla.forksafe:dispose_engine",
                         **kwargs)


class PostgresHazardTest(unittest.TestCase):

    def test_warn_names_the_postgresql_connection_for_each_worker(self):
        _, url = new_database()
        server = serve(self, url)
        log = server.log_text()
        lines = re.findall(TCP_LINE % (PG.port, server.master_pid), log)
        # once per worker, each the same inherited descriptor
        self.assertEqual(sorted(int(w) for w, _, _ in lines), list(range(1, WORKERS + 1)), log)
        self.assertEqual(len({(fd, port) for _, fd, port in lines}), 1, lines)
        print("\n  " + re.search(r"\[forksafe\] worker 1 will inherit.*", log).group(0))
        pre_forks = server.events("pre-fork")
        self.assertEqual(len(pre_forks), WORKERS)
        assert_inherited_and_served(self, pre_forks, lines[0], PG.port, server.port)
        self.assertEqual(server.stop(), 0, server.log_text()[-4000:])

    def test_over_the_unix_socket_it_is_named_postgresql(self):
        name, _ = new_database()
        url = "postgresql+psycopg2://postgres@/%s?host=%s&port=%d" % (name, PG.dir, PG.port)
        server = serve(self, url)
        path = os.path.join(PG.dir, ".s.PGSQL.%d" % PG.port)
        log = server.log_text()
        lines = re.findall(UNIX_LINE % (re.escape(path), server.master_pid), log)
        self.assertEqual(sorted(int(w) for w, _ in lines), list(range(1, WORKERS + 1)), log)
        for event in server.events("pre-fork"):
            self.assertEqual([(h["kind"], h["peer"], h["service"]) for h in event["hazards"]],
                             [("unix", path, "PostgreSQL")], event)
        self.assertEqual(server.stop(), 0, server.log_text()[-4000:])

    def test_fail_exits_before_the_first_worker(self):
        _, url = new_database()
        server = serve(self, url, extra_conf='forksafe_hazards = "fail"\n', wait=False)
        try:
            status = server.proc.wait(timeout=120)
        except Exception:
            raise AssertionError("gunicorn did not exit:\n" + server.log_text()) from None
        log = server.log_text()
        self.assertEqual(status, 1, log)
        self.assertIn("[forksafe] forksafe-hazards = fail: the arbiter refuses to fork with 1 "
                      "hazard (above); exiting", log)
        self.assertRegex(log, TCP_LINE % (PG.port, server.master_pid))
        self.assertIn("Reason: forksafe-hazards = fail", log)  # gunicorn's halt
        self.assertNotIn("Booting worker", log)
        self.assertEqual([e["event"] for e in server.events()],
                         ["master-start", "pre-fork", "master-exit"], log)
        self.assertFalse(os.path.exists(server.pidfile))

    def test_an_allowed_connection_is_not_said(self):
        _, url = new_database()
        server = serve(self, url, extra_conf='forksafe_hazard_allow = ["tcp:*:%d"]\n'
                       % PG.port)
        self.assertNotIn("will inherit", server.log_text())
        for event in server.events("pre-fork"):
            self.assertEqual([(h["kind"], h["peer"], h["allowed"]) for h in event["hazards"]],
                             [("tcp", "127.0.0.1:%d" % PG.port, True)])
        self.assertEqual(server.stop(), 0, server.log_text()[-4000:])


class ListenerGunicorn(Gunicorn):
    """test_gunicorn's instance, with the test apps (hazard_handlers) and
    the address of a listener of the test's in its environment."""

    def __init__(self, testcase, conf, listener, **kwargs):
        self.listener = listener
        super().__init__(testcase, conf, **kwargs)

    def env(self):
        env = super().env()
        env["PYTHONPATH"] += os.pathsep + APP_DIR
        env["HAZARD_LISTENER"] = "127.0.0.1:%d" % self.listener.getsockname()[1]
        return env


class LaterHazardTest(unittest.TestCase):

    def test_a_hazard_that_appears_later_stops_gunicorn(self):
        # a listener that accepts (the kernel's backlog does) and never answers
        listener = socket.socket()
        self.addCleanup(listener.close)
        listener.bind(("127.0.0.1", 0))
        listener.listen(16)
        g = ListenerGunicorn(self, with_hooks(ALL_HOOKS, '''
            forksafe_hazards = "fail"
            forksafe_subscribe = ["pre-fork python:hazard_handlers:connect_on_respawn"]
        '''), listener, workers=2).start("--preload")
        self.assertNotIn("will inherit", g.log_text())
        victim = g.events(name="worker-ready")[0]["process"]
        os.kill(victim["pid"], signal.SIGKILL)
        try:
            status = g.proc.wait(timeout=90)
        except Exception:
            raise AssertionError("gunicorn did not exit:\n" + g.log_text()) from None
        log = g.log_text()
        self.assertEqual(status, 1, log[-4000:])
        self.assertIn("[forksafe] forksafe-hazards = fail: 1 hazard appeared (above); "
                      "stopping gunicorn", log)
        self.assertRegex(log, TCP_LINE % (listener.getsockname()[1], g.master_pid))
        # the worker forked on it exited at once: not one event of its own
        refused = [e["child"] for e in g.events(name="post-fork-parent")
                   if e["child"]["respawn"] > 0]
        self.assertTrue(refused, log[-4000:])
        for child in refused:
            self.assertIn("[forksafe] worker %d (pid %d) forked with fork hazards exits "
                          "(forksafe-hazards = fail)" % (child["id"], child["pid"]), log)
            self.assertEqual([e for e in g.events() if e["process"]["pid"] == child["pid"]], [])
        arbiter = [e["event"] for e in g.events() if e["process"]["pid"] == g.master_pid]
        self.assertEqual(arbiter[-1], "master-exit", arbiter)


if __name__ == "__main__":
    unittest.main()
