"""The SQLAlchemy example against a real PostgreSQL, under concurrent load.

examples/pyramid_sqlalchemy makes its engine in the uWSGI master (apps
preloaded) and queries the database there, so one connection sits in the
pool when 4 workers are forked.  Each uWSGI worker is single-threaded and
needs one connection at a time, so without a post-fork dispose every worker
checks out that same inherited connection: all of them talk to the master's
backend over one shared socket -- same pg_backend_pid() in every worker,
answers read by the wrong process, protocol errors, hangs.  With forksafe's
`python:forksafe_sqla.forksafe:dispose_engine` on post-fork, each worker
disposes the inherited pool (close=False) and opens its own connection.

  - with the handler (the example's production.ini as shipped): 0 errors, 4
    workers, 4 distinct backend pids, none the master's;
  - without it (the same file minus that one subscription): the hazard is
    observed -- the test proves it can tell the difference;
  - the same handler as a python: subscription of a plain WSGI app
    (plain.ini, plain_wsgi.py): no Pyramid imported, same result.

The configs are the example's own files with only the port, paths, database
URL and the test's event recorder substituted (every substitution must
match, so an edit of the example cannot silently change what is tested).
"""

import collections
import json
import os
import re
import signal
import sys
import types
import unittest

from harness import ROOT, IntegrationCase, Uwsgi, wait_for
from load import run_load
from pg import PostgresCluster

EXAMPLE = os.path.join(ROOT, "examples", "pyramid_sqlalchemy")
WORKERS = 4
REQUESTS = 2000
CONCURRENCY = 8
# The tests that expect zero errors: bounds that are only a safety net, so
# that a machine whose cores are busy with other work (each request queued
# behind 7 others, 4 workers on 2 cores) still finishes every request.
TIME_LIMIT = 300.0
REQUEST_TIMEOUT = 30.0
HARAKIRI = 30
# Without the handler workers can hang on a socket whose answer another
# worker read; the hazard shows in the first second, so the load is cut
# shorter there, a hung request gives up sooner and harakiri frees stuck
# workers.
HAZARD_TIME_LIMIT = 15.0
HAZARD_REQUEST_TIMEOUT = 5.0
HAZARD_HARAKIRI = 4
SUBSCRIPTION = "post-fork = recipe:sqlalchemy"

# One throw-away cluster for the module, each test in a database of its own.
PG = PostgresCluster()
_databases = iter(range(1, 1000))


def new_database():
    """A fresh database in PG; returns (name, SQLAlchemy URL)."""
    name = "forksafe%d" % next(_databases)
    return name, PG.create_database(name)


def setUpModule():
    # No skip: a PostgreSQL that cannot start fails the module with the reason.
    unittest.addModuleCleanup(PG.stop)
    PG.start()


def example_ini(name, url, subscribe=True, pyramid_forksafe=False, harakiri=HARAKIRI,
                recipe=None):
    """The example's NAME ini, rewritten for a test instance (harness.Uwsgi
    fills the {placeholders}).  subscribe=False drops the python: post-fork
    subscription; pyramid_forksafe=True turns on the app's pyramid_forksafe
    subscriber (serve() puts python/ on PYTHONPATH: PasteDeploy refuses a
    second pythonpath key)."""
    with open(os.path.join(EXAMPLE, name)) as f:
        text = f.read()
    assert "{" not in text and "}" not in text, "the harness formats the ini with str.format"

    def sub(old, new, count=1):
        nonlocal text
        found = text.count(old)
        assert found == count, "%s: expected %d x %r, found %d" % (name, count, old, found)
        text = text.replace(old, new)

    sub(re.search(r"^sqlalchemy\.url = sqlite:.*$", text, re.M).group(0),
        "sqlalchemy.url = %s" % url)
    # The example's event recorder, into the test's file: worker-ready tells
    # when the workers are up, the rest shows in failure messages.
    sub(re.search(r"^forksafe.event_log = .*$", text, re.M).group(0),
        "forksafe.event_log = {record}")
    sub("* = dl:%(here)s/../../build/examples/event_log.so:record",
        "* = dl:{recorder}:record")
    if not subscribe:
        sub(SUBSCRIPTION + "\n", "")
    sub("plugin-dir = %d../..", "plugin-dir = {plugin_dir}")
    sub("pythonpath = %d", "pythonpath = " + EXAMPLE)
    if "python-path = %d../../python" in text:
        sub("python-path = %d../../python", "python-path = " + os.path.join(ROOT, "python"))
    if recipe is not None:
        sub(SUBSCRIPTION, "post-fork = " + recipe)
    if pyramid_forksafe:
        sub("forksafe_sqla.pyramid_forksafe = false", "forksafe_sqla.pyramid_forksafe = true")
    sub("http-socket = 127.0.0.1:8080", "http-socket = 127.0.0.1:{port}")
    sub("processes = 4", "processes = %d" % WORKERS)
    sections = re.findall(r"^\[([^\]]+)\]", text, re.M)
    assert sections[-1] == "uwsgi", "%s: [uwsgi] must be the last section" % name
    text += ("pidfile = {pidfile}\n"
             "harakiri = %d\n"
             "forksafe-verbose = true\n") % harakiri
    return text


class PostgresForkTest(IntegrationCase):

    pg = PG

    def serve(self, ini_name, subscribe=True, pyramid_forksafe=False, harakiri=HARAKIRI,
              recipe=None):
        database, url = new_database()
        # Python bytecode of the example stays out of the source tree.
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        if pyramid_forksafe:
            env["PYTHONPATH"] = os.pathsep.join(
                [os.path.join(ROOT, "python")] + [p for p in [env.get("PYTHONPATH")] if p])
        uwsgi = Uwsgi(self, example_ini(ini_name, url, subscribe, pyramid_forksafe, harakiri,
                                        recipe), name="app.ini")
        try:
            uwsgi.start(wait_ready=WORKERS, env=env)
        except AssertionError as e:
            raise AssertionError("%s\nlog:\n%s" % (e, uwsgi.log_text()[-6000:])) from None
        self.addCleanup(self._stop, uwsgi)
        return uwsgi, database

    def _stop(self, uwsgi):
        # SIGINT stops it at once; harness.kill (registered first, so run
        # after this) SIGKILLs the group if anything is left.
        uwsgi.stop(signal.SIGINT)

    def load(self, uwsgi, time_limit=TIME_LIMIT, request_timeout=REQUEST_TIMEOUT):
        result = run_load(uwsgi.port, "/db", total=REQUESTS, concurrency=CONCURRENCY,
                          time_limit=time_limit, request_timeout=request_timeout)
        print("\n  %s: %s" % (self.id().rsplit(".", 1)[-1], result.summary()))
        return result

    def context(self, uwsgi, result):
        return "%s\nerror samples: %s\nfirst answers: %s\nlog tail:\n%s" % (
            result.summary(), result.error_samples, result.bodies, uwsgi.log_text()[-6000:])

    def assert_one_backend_per_worker(self, uwsgi, database, result, disposer="app"):
        """DISPOSER: who drops the inherited pool in each worker -- "app"
        (the example's dispose_engine), "recipe" (recipe:sqlalchemy) or
        "master" (recipe:sqlalchemy?before=dispose: the master closes its
        pool before each fork, so nothing is inherited)."""
        why = self.context(uwsgi, result)
        self.assertEqual(result.errors, 0, why)
        self.assertFalse(result.hit_time_limit, why)
        self.assertEqual(result.ok, REQUESTS, why)
        workers = {e["process"]["pid"] for e in uwsgi.events("worker-ready")}
        self.assertEqual(len(workers), WORKERS, why)
        # every worker served, each on exactly one backend of its own
        self.assertEqual(result.worker_pids, workers, why)
        by_worker = result.backends_by_worker()
        for pid, backends in by_worker.items():
            self.assertEqual(len(backends), 1, "worker %d used backends %s\n%s"
                             % (pid, backends, why))
        self.assertEqual(len(result.backend_pids), WORKERS, why)
        # the master queried the database before the fork, on a backend
        # that no worker uses -- and that is still alive: the workers
        # disposed its pool without closing the connection
        startup = result.bodies[0]["startup"]
        self.assertEqual(startup["pid"], uwsgi.master_pid, why)
        self.assertNotIn(startup["backend_pid"], result.backend_pids, why)
        live = self.pg.backends(database)
        log = uwsgi.log_text()
        if disposer == "master":
            # closed in the master before the first fork: not inherited,
            # so not said to be
            self.assertEqual(sorted(live), sorted(result.backend_pids), why)
            self.assertNotIn("will inherit", log, why)
        else:
            self.assertEqual(sorted(live), sorted(result.backend_pids | {startup["backend_pid"]}),
                             why)
        # the app sees it: the pool its engine was made with in the master
        # is not the one it uses (none was inherited with before=dispose)
        for answer in result.first_by_pid.values():
            self.assertEqual(answer["pool_dropped_from"], uwsgi.master_pid, why)
        if disposer == "recipe":
            # inherited, and handled: in the payload, not said as a hazard
            self.assertNotIn("will inherit", log, why)
            handled = [h for e in uwsgi.events("pre-fork") for h in e.get("hazards", [])
                       if h.get("handled_by") == "recipe:sqlalchemy" and h["allowed"]]
            self.assertEqual(len(handled), len(uwsgi.events("pre-fork")), why)
        # and the disposer said so, once in each worker
        app_disposed = [d["from_pid"] for answer in result.first_by_pid.values()
                        for d in answer["disposed"]]
        recipe_lines = re.findall(r"recipe:sqlalchemy: \w+ \d+ \(pid (\d+)\) dropped the pool "
                                  r"of \S+ inherited from pid (\d+) \(1 connection", log)
        if disposer == "app":
            self.assertEqual(app_disposed, [uwsgi.master_pid] * len(result.first_by_pid), why)
            self.assertEqual(log.count("[forksafe_sqla] worker "), WORKERS, why)
            self.assertEqual(recipe_lines, [], why)
        else:
            self.assertEqual(app_disposed, [], why)
            self.assertNotIn("[forksafe_sqla] worker ", log, why)
            # every child drops it: the workers, and under uWSGI the
            # example's mule (gunicorn forks workers only: test_gunicorn.py
            # uses this too)
            children = {e["process"]["pid"] for e in uwsgi.events("post-fork")}
            self.assertLessEqual(workers, children, why)
            if isinstance(uwsgi, Uwsgi):
                self.assertLess(workers, children, why)
            expected = ({(str(pid), str(uwsgi.master_pid)) for pid in children}
                        if disposer == "recipe" else set())
            self.assertEqual(len(recipe_lines), len(expected), why)
            self.assertEqual(set(recipe_lines), expected, why)
        return startup

    # ------------------------------------------------------------------

    def test_with_forksafe_each_worker_has_its_own_backend(self):
        # production.ini as shipped: `post-fork = recipe:sqlalchemy`, no
        # code of the app's for the fork
        uwsgi, database = self.serve("production.ini")
        result = self.load(uwsgi)
        self.assert_one_backend_per_worker(uwsgi, database, result, disposer="recipe")

    def test_recipe_holds_for_a_respawned_worker(self):
        # a worker killed after it served on its own backend: its
        # replacement is forked from the same master, whose pool still holds
        # the start-up connection, and drops it too
        uwsgi, database = self.serve("production.ini")
        first = self.load(uwsgi)
        self.assertEqual(first.errors, 0, self.context(uwsgi, first))
        victim = sorted(first.worker_pids)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: len(uwsgi.events("worker-ready")) > WORKERS,
                 what="the killed worker's replacement to be ready")
        replacement = uwsgi.events("worker-ready")[-1]["process"]["pid"]
        result = self.load(uwsgi)
        why = self.context(uwsgi, result)
        self.assertEqual(result.errors, 0, why)
        self.assertIn(replacement, result.worker_pids, why)
        self.assertNotIn(victim, result.worker_pids, why)
        startup = result.bodies[0]["startup"]["backend_pid"]
        self.assertNotIn(startup, result.backend_pids, why)
        self.assertEqual(len(result.backends_by_worker()[replacement]), 1, why)
        self.assertEqual(result.first_by_pid[replacement]["pool_dropped_from"],
                         uwsgi.master_pid, why)
        self.assertRegex(uwsgi.log_text(), r"recipe:sqlalchemy: worker \d+ \(pid %d\) dropped "
                                           r"the pool of \S+ inherited from pid %d"
                                           % (replacement, uwsgi.master_pid))
        # the respawn's pre-fork was told the connection is handled
        last = uwsgi.events("pre-fork")[-1]
        self.assertTrue([h for h in last.get("hazards", [])
                         if h.get("handled_by") == "recipe:sqlalchemy"], why)
        self.assertNotIn("will inherit", uwsgi.log_text(), why)

    def test_recipe_before_dispose_closes_the_pool_in_the_master(self):
        uwsgi, database = self.serve("production.ini", recipe="recipe:sqlalchemy?before=dispose")
        result = self.load(uwsgi)
        self.assert_one_backend_per_worker(uwsgi, database, result, disposer="master")

    def test_recipe_auto_applies_the_sqlalchemy_recipe(self):
        uwsgi, database = self.serve("production.ini", recipe="recipe:auto")
        result = self.load(uwsgi)
        self.assert_one_backend_per_worker(uwsgi, database, result, disposer="recipe")
        said = re.findall(r"recipe:auto (.*)$", uwsgi.log_text(), re.M)
        self.assertEqual(said, ["applies sqlalchemy (sqlalchemy imported); "
                                "not prometheus (prometheus_client not imported)"],
                         self.context(uwsgi, result))

    def test_app_handler_instead_of_the_recipe(self):
        # the example's own dispose_engine, as a python: handler
        uwsgi, database = self.serve(
            "production.ini", recipe="python:forksafe_sqla.forksafe:dispose_engine")
        result = self.load(uwsgi)
        self.assert_one_backend_per_worker(uwsgi, database, result)

    def test_without_forksafe_the_workers_share_the_master_connection(self):
        uwsgi, database = self.serve("production.ini", subscribe=False, harakiri=HAZARD_HARAKIRI)
        result = self.load(uwsgi, time_limit=HAZARD_TIME_LIMIT,
                           request_timeout=HAZARD_REQUEST_TIMEOUT)
        why = self.context(uwsgi, result)
        startup = next((a["startup"] for a in result.bodies), None)
        shared = {backend: pids for backend, pids in result.workers_by_backend().items()
                  if len(pids) > 1}
        on_master_backend = {pid for pid, backend in result.pairs
                             if startup and backend == startup["backend_pid"]}
        print("  hazard: %d errors %s; backends shared by several workers: %s; workers on "
              "the master's pre-fork backend %s: %s"
              % (result.errors, dict(result.error_kinds), shared,
                 startup and startup["backend_pid"], sorted(on_master_backend)))
        raised = collections.Counter(
            m.group(1) for m in re.finditer(r"^((?:sqlalchemy|psycopg2)\.[\w.]+(?:Error|Exception)"
                                            r"|\w+Error): .*$", uwsgi.log_text(), re.M))
        print("  raised in the workers (uWSGI log): %s" % dict(raised))
        self.assertTrue(result.errors > 0 or shared or on_master_backend,
                        "no hazard observed without the post-fork handler:\n" + why)
        # said at the fork, once per child
        self.assertGreaterEqual(uwsgi.log_text().count("will inherit fd"), WORKERS, why)
        # nothing disposed anything: the handler really was not subscribed
        for answer in result.first_by_pid.values():
            self.assertEqual(answer["disposed"], [], why)
        self.assertNotIn("[forksafe_sqla] worker ", uwsgi.log_text(), why)

    def test_pyramid_forksafe_subscriber_instead(self):
        # the same function as a Pyramid subscriber of pyramid_forksafe's
        # ApplicationPostFork, and no python: subscription
        uwsgi, database = self.serve("production.ini", subscribe=False, pyramid_forksafe=True)
        result = self.load(uwsgi)
        self.assert_one_backend_per_worker(uwsgi, database, result)

    def test_python_handler_without_pyramid(self):
        uwsgi, database = self.serve("plain.ini")
        result = self.load(uwsgi)
        self.assert_one_backend_per_worker(uwsgi, database, result)
        for answer in result.first_by_pid.values():
            self.assertFalse(answer["pyramid_loaded"], answer)


class DisposeEngineInProcessTest(unittest.TestCase):
    """dispose_engine itself, in real forked children of this process (no
    uWSGI): called with a forksafe payload dict, and with an event object
    shaped like pyramid_forksafe's ApplicationPostFork (.payload,
    .registry.settings) -- pyramid_forksafe itself is not needed."""

    pg = PG

    @classmethod
    def setUpClass(cls):
        if EXAMPLE not in sys.path:
            sys.path.insert(0, EXAMPLE)

    def child_backend(self, engine, call):
        """Forks; the child runs CALL(), then reports its backend pid."""
        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: never returns into unittest
            code = 1
            try:
                os.close(read)
                call()
                with engine.connect() as conn:
                    backend = db_backend(conn)
                os.write(write, json.dumps({"backend": backend}).encode())
                code = 0
            except BaseException as e:  # noqa: BLE001 - reported to the parent
                try:
                    os.write(write, json.dumps({"error": repr(e)}).encode())
                except BaseException:  # noqa: BLE001
                    pass
            finally:
                os._exit(code)
        os.close(write)
        try:
            chunks = []
            while True:
                chunk = os.read(read, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            os.close(read)
            _, status = os.waitpid(pid, 0)
        answer = json.loads(b"".join(chunks) or b"{}")
        self.assertEqual(os.waitstatus_to_exitcode(status), 0, answer)
        return answer["backend"]

    def test_payload_dict_and_event_object(self):
        from forksafe_sqla import db
        from forksafe_sqla.forksafe import dispose_engine

        _, url = new_database()
        settings = {"sqlalchemy.url": url}
        engine = db.engine_for(settings)
        parent = db.startup_check(engine)  # one connection pooled before the forks

        def payload():
            return {"event": "post-fork", "settings": settings,
                    "process": {"kind": "worker", "id": 1, "pid": os.getpid(),
                                "ppid": os.getppid()}}

        # as pyramid_forksafe builds an event without a plugin payload (0.2 style)
        event = types.SimpleNamespace(
            payload={"event": "post-fork", "container": None, "synthesized": True},
            registry=types.SimpleNamespace(settings=settings))
        # without dispose the child answers on the parent's backend
        self.assertEqual(self.child_backend(engine, lambda: None), parent)
        with_dict = self.child_backend(engine, lambda: dispose_engine(payload()))
        with_event = self.child_backend(engine, lambda: dispose_engine(event))
        self.assertNotIn(parent, (with_dict, with_event))
        self.assertNotEqual(with_dict, with_event)
        # close=False: the children left the parent's connection alone
        with engine.connect() as conn:
            self.assertEqual(db_backend(conn), parent)
        # and in the process that made the pool it does nothing
        dispose_engine(payload())
        with engine.connect() as conn:
            self.assertEqual(db_backend(conn), parent)
        engine.dispose()

    def test_why_close_false(self):
        # engine.dispose() (close=True) in a child closes the inherited
        # connection: psycopg2 sends Terminate on the shared socket and the
        # parent's session is gone.  close=False leaves it alone.
        from sqlalchemy import create_engine
        from sqlalchemy.exc import OperationalError

        _, url = new_database()
        for close in (False, True):
            engine = create_engine(url)
            try:
                with engine.connect() as conn:
                    parent = db_backend(conn)
                self.child_backend(engine, lambda: engine.dispose(close=close))
                if close:
                    with self.assertRaises(OperationalError):
                        with engine.connect() as conn:
                            db_backend(conn)
                else:
                    with engine.connect() as conn:
                        self.assertEqual(db_backend(conn), parent)
            finally:
                engine.dispose()


def db_backend(conn):
    from forksafe_sqla import db

    return db.backend_id(conn)


if __name__ == "__main__":
    unittest.main()
