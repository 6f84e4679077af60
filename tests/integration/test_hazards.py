"""Fork hazards named at the fork, against a real uWSGI and a real PostgreSQL.

The example app (examples/pyramid_sqlalchemy) queries the database in the
master before the workers are forked, so each worker is about to inherit
the master's connection:

  - warn (the default): each worker is told, once, which descriptor it will
    inherit, the addresses and the service (over TCP on the cluster's port,
    and over the cluster's UNIX socket, named as PostgreSQL's);
  - fail: the master exits non-zero before it forks anything;
  - a pre-fork handler that closes the pool in the master: nothing to say,
    and the requests still succeed.

A thread started at import is named as Python named it; with lazy-apps (the
app only in the workers) there is nothing to say; and a plain app under the
options that give uWSGI threads and sockets of its own says nothing.
"""

import os
import re
import signal
import socket

from harness import ROOT, IntegrationCase, Uwsgi, free_port, read_socket, wait_for
from load import run_load
from pg import PostgresCluster
from test_postgres import example_ini

EXAMPLE = os.path.join(ROOT, "examples", "pyramid_sqlalchemy")
WORKERS = 4
PG = PostgresCluster()
_databases = iter(range(1, 1000))

TCP_LINE = (r"\[forksafe\] worker (\d) will inherit fd (\d+): TCP 127\.0\.0\.1:(\d+) -> "
            r"127\.0\.0\.1:%d, opened by the master \(pid %d\); close it before forking "
            r"\(pre-fork\) or reopen it in each child \(post-fork\)")
UNIX_LINE = (r"\[forksafe\] worker (\d) will inherit fd (\d+): UNIX -> %s \(PostgreSQL\), "
             r"opened by the master \(pid %d\); dispose the pool before forking \(pre-fork\) "
             r"or in each child \(post-fork\)")


def assert_inherited_and_served(testcase, pre_forks, line, pg_port, port):
    """Each pre-fork payload has the connection LINE (worker, fd, local
    port) named, and the example's post-fork handler still gives each
    worker a backend of its own (shared by the gunicorn tests)."""
    _, fd, local_port = line
    for event in pre_forks:
        testcase.assertEqual(event["hazards"], [{
            "kind": "tcp", "fd": int(fd), "local": "127.0.0.1:%s" % local_port,
            "peer": "127.0.0.1:%d" % pg_port, "service": None, "allowed": False}], event)
    result = run_load(port, "/db", total=200, concurrency=4, time_limit=120,
                      request_timeout=30)
    testcase.assertEqual(result.errors, 0, result.summary())
    testcase.assertEqual(len(result.backend_pids), WORKERS, result.summary())


def setUpModule():
    import unittest

    unittest.addModuleCleanup(PG.stop)
    PG.start()


def unix_url(database):
    return "postgresql+psycopg2://postgres@/%s?host=%s&port=%d" % (database, PG.dir, PG.port)


def new_database(over_unix=False):
    name = "hazard%d" % next(_databases)
    url = PG.create_database(name)
    return name, unix_url(name) if over_unix else url


class PostgresHazardTest(IntegrationCase):

    def instance(self, url, extra="", subscriptions=""):
        # The app's own handler, which drops the pool in each child but, unlike
        # recipe:sqlalchemy (test_postgres.py), does not claim its sockets:
        # the connection is inherited and said.
        text = example_ini("production.ini", url,
                           recipe="python:forksafe_sqla.forksafe:dispose_engine") + extra
        # [forksafe] is PasteDeploy's too: a key may appear once per section.
        assert text.count("\n[forksafe]\n") == 1
        text = text.replace("\n[forksafe]\n", "\n[forksafe]\n" + subscriptions)
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        env["PYTHONPATH"] = os.pathsep.join(
            [os.path.join(ROOT, "tests", "integration", "apps")] +
            [p for p in [env.get("PYTHONPATH")] if p])
        return Uwsgi(self, text, name="app.ini"), env

    def serve(self, url, extra="", subscriptions=""):
        uwsgi, env = self.instance(url, extra, subscriptions)
        uwsgi.start(wait_ready=WORKERS, env=env)
        self.addCleanup(uwsgi.stop, signal.SIGINT)
        return uwsgi

    def test_warn_names_the_connection_for_each_worker(self):
        _, url = new_database()
        uwsgi = self.serve(url)
        log = uwsgi.log_text()
        lines = re.findall(TCP_LINE % (PG.port, uwsgi.master_pid), log)
        # once per worker, each the same inherited descriptor
        self.assertEqual(sorted(int(w) for w, _, _ in lines), list(range(1, WORKERS + 1)), log)
        self.assertEqual(len({(fd, port) for _, fd, port in lines}), 1, lines)
        print("\n  " + re.search(r"\[forksafe\] worker 1 will inherit.*", log).group(0))
        # the pre-fork payload has them too, for handlers to act on
        assert_inherited_and_served(self, uwsgi.events("pre-fork"), lines[0], PG.port,
                                    uwsgi.port)

    def test_the_unix_socket_is_named_as_postgresqls(self):
        _, url = new_database(over_unix=True)
        uwsgi = self.serve(url)
        path = os.path.join(PG.dir, ".s.PGSQL.%d" % PG.port)
        log = uwsgi.log_text()
        lines = re.findall(UNIX_LINE % (re.escape(path), uwsgi.master_pid), log)
        self.assertEqual(sorted(int(w) for w, _ in lines), list(range(1, WORKERS + 1)), log)
        print("\n  " + re.search(r"\[forksafe\] worker 1 will inherit.*", log).group(0))

    def test_a_respawn_is_not_told_again(self):
        _, url = new_database()
        uwsgi = self.serve(url)
        pattern = TCP_LINE % (PG.port, uwsgi.master_pid)
        worker = uwsgi.events("worker-ready")[0]["process"]
        os.kill(worker["pid"], signal.SIGKILL)
        wait_for(lambda: len(uwsgi.events("worker-ready")) > WORKERS,
                 what="the killed worker's replacement to be ready")
        self.assertEqual(len(re.findall(pattern, uwsgi.log_text())), WORKERS,
                         uwsgi.log_text()[-4000:])

    def test_fail_refuses_to_fork(self):
        _, url = new_database()
        uwsgi, _ = self.instance(url, "forksafe-hazards = fail\n")
        status = uwsgi.run_to_exit(timeout=120)
        log = uwsgi.log_text()
        self.assertEqual(status, 1, log)
        self.assertRegex(log, r"forksafe-hazards = fail: the master refuses to fork with 1 "
                              r"hazard \(above\); exiting")
        self.assertRegex(log, r"\[forksafe\] worker 1 will inherit fd \d+: TCP ")
        self.assertEqual([e["event"] for e in uwsgi.events()
                          if e["process"]["kind"] != "master"], [], log)
        self.assertNotIn("spawned uWSGI worker", log)
        self.assertEqual(uwsgi.events("post-fork-parent"), [])

    def test_a_pre_fork_handler_that_closes_the_pool_leaves_nothing_to_say(self):
        _, url = new_database()
        uwsgi = self.serve(url, subscriptions="pre-fork = "
                                              "python:hazard_handlers:close_pools_before_fork\n")
        log = uwsgi.log_text()
        self.assertNotIn("will inherit", log)
        self.assertNotIn("is forked while", log)
        result = run_load(uwsgi.port, "/db", total=200, concurrency=4, time_limit=120,
                          request_timeout=30)
        self.assertEqual(result.errors, 0, result.summary())
        self.assertEqual(len(result.backend_pids), WORKERS, result.summary())

    def test_an_allowed_connection_is_not_said(self):
        _, url = new_database()
        uwsgi = self.serve(url, "forksafe-hazard-allow = tcp:127.0.0.1:%d\n" % PG.port)
        self.assertNotIn("will inherit", uwsgi.log_text())
        hazards = uwsgi.events("pre-fork")[0]["hazards"]
        self.assertEqual([(h["kind"], h["peer"], h["allowed"]) for h in hazards],
                         [("tcp", "127.0.0.1:%d" % PG.port, True)])


THREADS = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
pythonpath = {app_dir}
module = %s
forksafe-subscribe = * dl:{recorder}:record
"""


class PlainHazardTest(IntegrationCase):

    def serve(self, body, settings=None, ready=2):
        uwsgi = Uwsgi(self, body, settings=settings or {"x": "1"})
        uwsgi.start(wait_ready=ready)
        self.addCleanup(uwsgi.stop, signal.SIGINT)
        return uwsgi

    def test_a_thread_started_at_import_is_named(self):
        uwsgi = self.serve(THREADS % "thread_app" + "enable-threads = true\n"
                           "forksafe-stats = {dir}/forksafe-stats.sock\n"
                           "enable-metrics = true\nstats = {dir}/stats.sock\n")
        log = uwsgi.log_text()
        lines = re.findall(r"\[forksafe\] worker (\d) is forked while thread 'metrics-exporter' "
                           r"\(tid (\d+)\) runs in the master \(pid %d\)" % uwsgi.master_pid, log)
        self.assertEqual(sorted(w for w, _ in lines), ["1", "2"], log)
        tid = lines[0][1]
        self.assertTrue(os.path.exists("/proc/%d/task/%s" % (uwsgi.master_pid, tid)), lines)
        self.assertEqual(uwsgi.events("pre-fork")[0]["hazards"], [
            {"kind": "thread", "tid": int(tid), "name": "metrics-exporter", "allowed": False}])
        stats = read_socket(os.path.join(uwsgi.dir, "forksafe-stats.sock"))
        self.assertEqual(stats["hazards"]["last"], 1, stats["hazards"])
        self.assertEqual(stats["hazards"]["forks_with_hazards"], 2, stats["hazards"])
        # and uWSGI's metrics, which its collector copies once a second
        metrics = {}

        def published():
            try:
                document = read_socket(os.path.join(uwsgi.dir, "stats.sock"))
            except (OSError, ValueError):
                return False
            metrics.update((n, m["value"]) for n, m in document.get("metrics", {}).items())
            return metrics.get("forksafe.hazards.forks_with_hazards") == 2
        wait_for(published, what="the hazard metrics")
        self.assertEqual(metrics["forksafe.hazards.last"], 1, metrics)

    def test_an_allowed_thread_is_not_said(self):
        uwsgi = self.serve(THREADS % "thread_app" + "enable-threads = true\n"
                           "forksafe-hazard-allow = thread:metrics-*\n")
        self.assertNotIn("is forked while", uwsgi.log_text())

    def test_with_lazy_apps_there_is_nothing_to_say(self):
        uwsgi = self.serve(THREADS % "thread_app" + "enable-threads = true\nlazy-apps = true\n")
        self.assertNotIn("is forked while", uwsgi.log_text())

    def test_uwsgis_own_threads_and_sockets_are_not_hazards(self):
        spool = "{dir}/spool"
        body = THREADS % "simple_app" + (
            "enable-threads = true\n"
            "mules = 2\n"
            "spooler = %s\n"
            "spooler-import = spool_task\n"
            "stats = {dir}/stats.sock\n"
            "forksafe-stats = {dir}/forksafe-stats.sock\n"
            "log-master = true\n"
            "threaded-logger = true\n"
            "http = 127.0.0.1:%d\n"
            "cache2 = name=c,items=10\n"
            "enable-metrics = true\n") % (spool, free_port())
        uwsgi = Uwsgi(self, body, settings={"x": "1"})
        os.makedirs(os.path.join(uwsgi.dir, "spool"))
        uwsgi.start(wait_ready=2)
        self.addCleanup(uwsgi.stop, signal.SIGINT)
        wait_for(lambda: len(uwsgi.events("post-fork")) >= 5,
                 what="the workers, mules and spooler forked")
        log = uwsgi.log_text()
        self.assertNotIn("will inherit", log)
        self.assertNotIn("is forked while", log)
        self.assertNotIn("fork hazard", log)
        self.assertEqual({len(e["hazards"]) for e in uwsgi.events("pre-fork")}, {0})
        stats = read_socket(os.path.join(uwsgi.dir, "forksafe-stats.sock"))
        self.assertGreaterEqual(stats["hazards"]["forks_looked"], 5, stats["hazards"])
        self.assertEqual(stats["hazards"]["forks_with_hazards"], 0, stats["hazards"])


class RefusalTest(IntegrationCase):

    def test_a_hazard_that_appears_later_stops_the_instance(self):
        listener = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(listener.close)
        port = listener.getsockname()[1]
        body = THREADS % "simple_app" + (
            "forksafe-hazards = fail\n"
            "forksafe-subscribe = child-death python:hazard_handlers:connect_later\n")
        uwsgi = Uwsgi(self, body, settings={"hazard.connect": "127.0.0.1:%d" % port})
        uwsgi.start(wait_ready=2)
        self.addCleanup(uwsgi.kill)
        worker = uwsgi.events("worker-ready")[0]["process"]
        os.kill(worker["pid"], signal.SIGKILL)
        try:
            status = uwsgi.proc.wait(timeout=60)
        except Exception:
            self.fail("uWSGI did not stop:\n" + uwsgi.log_text()[-4000:])
        log = uwsgi.log_text()
        # as a fatal handler stops it: uWSGI's own "the app cannot work"
        self.assertEqual(status, 22, log)
        self.assertRegex(log, r"\[forksafe\] worker %d will inherit fd \d+: TCP 127\.0\.0\.1:\d+ "
                              r"-> 127\.0\.0\.1:%d, opened by the master" % (worker["id"], port))
        self.assertIn("[forksafe] forksafe-hazards = fail: 1 hazard appeared (above); stopping "
                      "the instance", log)
        # the worker forked with it never served: no third worker-ready
        self.assertEqual(len(uwsgi.events("worker-ready")), 2, log)

    def test_bad_values_stop_the_start_with_file_and_line(self):
        for line, message in (
                ("forksafe-hazards = loud",
                 "forksafe-hazards must be warn, fail or off, not 'loud'"),
                ("forksafe-hazard-allow = socket:*",
                 "the accepted forms are thread:GLOB, tcp:HOST:PORT")):
            uwsgi = Uwsgi(self, THREADS % "simple_app" + line + "\n")
            status = uwsgi.run_to_exit()
            log = uwsgi.log_text()
            self.assertEqual(status, 1, log)
            with open(uwsgi.ini) as f:
                number = f.read().splitlines().index(line) + 1
            self.assertIn("%s:%d: " % (uwsgi.ini, number), log)
            self.assertIn(message, log)
            self.assertNotIn("spawned uWSGI worker", log)
