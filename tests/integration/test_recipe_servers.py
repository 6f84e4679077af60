"""recipe:sqlalchemy under Celery: examples/pyramid_sqlalchemy/production.ini,
unchanged, against a real PostgreSQL, served by a Celery worker with a
prefork pool of 4 processes (the example's tasks.py and run-celery.sh).

The worker's main process loads the Pyramid app (install(registry=
"bootstrap")), which makes its engine and queries the database there: one
connection sits in the pool when the 4 pool processes are forked.  The
file's `post-fork = recipe:sqlalchemy` finds that engine itself and drops
the inherited pool in each pool process (dispose(close=False)):

  - with the line (production.ini as shipped): 1,000 tasks, 0 errors, each
    pool process on one backend of its own, none the main process's (which
    is still alive), and the recipe's line once per pool process naming the
    main process's pid;
  - without it (the same file minus that line): the hazard is observed --
    errors, a backend shared by several pool processes, or pool processes
    on the main process's backend.

The same proof under uWSGI is test_postgres.PostgresForkTest, under
gunicorn test_gunicorn.GunicornPostgresTest.

The ini is test_gunicorn.example_ini's (the database URL and the event
recorder substituted, each substitution matching exactly once); the worker
command is run-celery.sh's own, read from the script, with the test's
broker, settings path and a pidfile; a private redis-server is the broker
(test_celery.Redis).  Everything started here is stopped by its pid and
its process group killed and reaped as a cleanup.
"""

import collections
import os
import re
import shlex
import signal
import subprocess
import tempfile
import time
import unittest

import test_postgres
from harness import ROOT, wait_for
from load import LoadResult
from pg import PostgresCluster
from test_celery import Redis, Worker
from test_gunicorn import EVENT_LOG, LIBRARY, example_ini

EXAMPLE = os.path.join(ROOT, "examples", "pyramid_sqlalchemy")
RUN_CELERY = os.path.join(EXAMPLE, "run-celery.sh")
POOL = test_postgres.WORKERS  # run-celery.sh's --concurrency, checked below
TASKS = 1000
# each pool process replaced after this many tasks (the recycling test)
RECYCLE = 100
TASK = "forksafe_sqla.where"
# A safety net for the run that expects 0 errors: every answer within this
# many seconds (a busy machine included).
TIME_LIMIT = 180.0
# Without the line a pool process may wait forever for an answer another
# one read: the hazard run gives up sooner, and Celery's hard time limit
# (the test's one addition to the worker command there) kills such a pool
# process, as harakiri does under uWSGI.
HAZARD_TIME_LIMIT = 30.0
HAZARD_TASK_TIME_LIMIT = 5
RECIPE_LINE = (r"recipe:sqlalchemy: (\w+) (\d+) \(pid (\d+)\) dropped the pool of (\S+) "
               r"inherited from pid (\d+) \(1 connection left to it: dispose\(close=False\)\)")

PG = PostgresCluster()
_databases = iter(range(1, 1000))


def setUpModule():
    for path, what in ((LIBRARY, "build/libforksafe.so"), (EVENT_LOG, "the event_log example")):
        if not os.path.exists(path):
            raise AssertionError("%s not found at %s: run `make` at the repository root"
                                 % (what, path))
    unittest.addModuleCleanup(PG.stop)
    PG.start()


def new_database():
    name = "forksafe_celery%d" % next(_databases)
    return name, PG.create_database(name)


def example_worker_args():
    """run-celery.sh's worker command, as shipped: its arguments after
    `"$PYTHON" -m celery`."""
    with open(RUN_CELERY) as f:
        text = f.read().replace("\\\n", " ")
    found = re.findall(r'^FORKSAFE_SETTINGS=production\.ini "\$PYTHON" -m celery (.*) &$',
                       text, re.M)
    assert len(found) == 1, "run-celery.sh: expected one worker command, found %r" % found
    args = shlex.split(found[0])
    for arg in ("-A", "forksafe_sqla.tasks", "worker", "--pool=prefork",
                "--concurrency=%d" % POOL):
        assert arg in args, "run-celery.sh: %r not in the worker command %r" % (arg, args)
    return args


class ExampleWorker(Worker):
    """test_celery's worker (its launcher is `python3 -m celery` as a
    script), running run-celery.sh's command on the example's tasks.py,
    with a pidfile: FORKSAFE_SQLA_BROKER is the test's broker,
    FORKSAFE_SETTINGS the test's production.ini, and the example's
    directory (the script's cwd) is on the path."""

    def __init__(self, testcase, directory, broker, ini, extra_args=()):
        self.pidfile = os.path.join(directory, "worker.pid")
        Worker.__init__(
            self, testcase, directory, broker, ini,
            env={"PYTHONPATH": EXAMPLE, "FORKSAFE_SETTINGS": ini,
                 "FORKSAFE_SQLA_BROKER": broker, "FORKSAFE_LIBRARY": LIBRARY,
                 "PYTHONDONTWRITEBYTECODE": "1"},
            worker_args=example_worker_args() + ["--pidfile=" + self.pidfile] + list(extra_args))
        for name in ("CELERY_APP_PYRAMID", "CELERY_BROKER"):  # test_celery's own app's
            self.env.pop(name, None)

    def wait_started(self):
        """Until every pool process has had worker-ready (the recorder is
        the native handler, `*` in [forksafe]) and the consumer runs, and
        the pidfile names the pid we started."""
        self.wait_ready(POOL)
        self.wait_consumer_ready()
        wait_for(lambda: os.path.exists(self.pidfile), what="the worker's pidfile")
        with open(self.pidfile) as f:
            assert int(f.read().strip()) == self.pid

    def pool_pids(self):
        return {e["process"]["pid"] for e in self.events("post-fork")}

    def stop_anyhow(self, timeout=30):
        """For a worker whose pool may be stuck: the warm shutdown (SIGTERM),
        else a cold one (SIGQUIT), by our pid; the cleanup kills the group."""
        for signum in (signal.SIGTERM, signal.SIGQUIT):
            if self.proc.poll() is not None:
                break
            os.kill(self.proc.pid, signum)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        return self.proc.poll()


def run_tasks(client, total, time_limit):
    """Sends TOTAL where() tasks at once and collects the answers into a
    load.LoadResult (pid = the pool process, backend_pid = its
    pg_backend_pid()); bounded: no answer is waited for past TIME_LIMIT
    seconds from the start, the rest count as errors."""
    from celery.exceptions import TimeoutError as CeleryTimeout

    result = LoadResult()
    start = time.monotonic()
    deadline = start + time_limit

    def error(kind, detail):
        result.errors += 1
        result.error_kinds[kind] += 1
        if len(result.error_samples) < 10:
            result.error_samples.append("%s: %s" % (kind, detail[:300]))

    pending = []
    for _ in range(total):
        pending.append(client.send_task(TASK))
        result.started += 1
    for async_result in pending:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            result.hit_time_limit = True
            error("no answer", "none within %.0fs" % time_limit)
            continue
        try:
            answer = async_result.get(timeout=remaining)
        except CeleryTimeout:
            result.hit_time_limit = True
            error("no answer", "none within %.0fs" % time_limit)
            continue
        except Exception as e:  # noqa: BLE001 - a task's failure, counted
            error(type(e).__name__, str(e))
            continue
        pair = (answer["pid"], answer["backend_pid"])
        result.ok += 1
        result.pairs.add(pair)
        result.per_pid[pair[0]] += 1
        if len(result.bodies) < 5:
            result.bodies.append(answer)
        result.first_by_pid.setdefault(pair[0], answer)
    result.elapsed = time.monotonic() - start
    # The client app is Celery's current app, whose backend keeps the
    # results: left to the garbage collector, each would unsubscribe from
    # the broker at exit, after the test stopped it.  Done now.
    for async_result in pending:
        try:
            client.backend.remove_pending_result(async_result)
        except Exception:  # noqa: BLE001 - best effort: the answers are in
            pass
        async_result.backend = None
    return result


def tasks_summary(result):
    return result.summary().replace(" requests in ", " tasks in ", 1)


class CeleryPostgresTest(unittest.TestCase):
    maxDiff = None

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forksafe-celery-pg-")
        self.addCleanup(subprocess.run, ["rm", "-rf", self.dir], check=False)
        self.redis = Redis(self, self.dir)

    def serve(self, subscribe=True, extra_args=()):
        database, url = new_database()
        ini = os.path.join(self.dir, "production.ini")
        with open(ini, "w") as f:
            # the event recorder writes where test_celery.Worker reads
            f.write(example_ini(url, os.path.join(self.dir, "native.jsonl"), subscribe))
        worker = ExampleWorker(self, self.dir, self.redis.url, ini, extra_args)
        worker.start()
        try:
            worker.wait_started()
        except AssertionError as e:
            raise AssertionError("%s\nlog:\n%s" % (e, worker.log_text()[-6000:])) from None
        return worker, database

    def client(self):
        from celery import Celery

        client = Celery("client", broker=self.redis.url, backend=self.redis.url)
        self.addCleanup(client.close)
        return client

    def main_backend(self, worker, database):
        """The main process's backend, before any task: the one connection to
        DATABASE, the one every pool process inherited -- its client port is
        the local port of the connection each pre-fork payload lists."""
        rows = PG.execute("SELECT pid, client_port FROM pg_stat_activity WHERE datname = %s "
                          "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                          (database,))
        why = "%s\n%s" % (rows, worker.log_text()[-4000:])
        self.assertEqual(len(rows), 1, why)
        backend, client_port = rows[0]
        pre_forks = worker.events("pre-fork")
        self.assertEqual(len(pre_forks), POOL, why)
        for event in pre_forks:
            local = {h["local"] for h in event["hazards"]
                     if h["kind"] == "tcp" and h["peer"] == "127.0.0.1:%d" % PG.port}
            self.assertEqual(local, {"127.0.0.1:%d" % client_port}, event)
        return backend

    def context(self, worker, result):
        return "%s\nerror samples: %s\nfirst answers: %s\nlog tail:\n%s" % (
            tasks_summary(result), result.error_samples, result.bodies, worker.log_text()[-6000:])

    # ------------------------------------------------------------------

    def test_with_the_recipe_each_pool_process_has_its_own_backend(self):
        # production.ini as shipped: `post-fork = recipe:sqlalchemy`
        worker, database = self.serve()
        main = self.main_backend(worker, database)
        result = run_tasks(self.client(), TASKS, TIME_LIMIT)
        print("\n  celery, with the recipe: %s" % tasks_summary(result))
        why = self.context(worker, result)
        self.assertEqual(result.errors, 0, why)
        self.assertFalse(result.hit_time_limit, why)
        self.assertEqual(result.ok, TASKS, why)
        # every pool process answered, each on exactly one backend of its own
        pool = worker.pool_pids()
        self.assertEqual(len(pool), POOL, why)
        self.assertEqual(result.worker_pids, pool, why)
        for pid, backends in result.backends_by_worker().items():
            self.assertEqual(len(backends), 1, "pool process %d used backends %s\n%s"
                             % (pid, backends, why))
        self.assertEqual(len(result.backend_pids), POOL, why)
        # none the main process's, which is still alive: dropped, not closed
        self.assertNotIn(main, result.backend_pids, why)
        self.assertEqual(PG.backends(database), sorted(result.backend_pids | {main}), why)
        # the recipe did it, and said so once in each pool process, naming
        # the main process; the app's own dispose_engine did nothing
        log = worker.log_text()
        lines = re.findall(RECIPE_LINE, log)
        self.assertEqual(sorted((int(pid), int(origin)) for _, _, pid, _, origin in lines),
                         sorted((pid, worker.pid) for pid in pool), why)
        self.assertEqual(sorted(int(n) for _, n, _, _, _ in lines), list(range(1, POOL + 1)),
                         why)
        for answer in result.first_by_pid.values():
            self.assertEqual(answer["disposed"], [], why)
        self.assertNotIn("[forksafe_sqla] worker ", log, why)
        # inherited, and handled: in each pre-fork payload, not said as a
        # hazard (as test_postgres.py asserts under uWSGI)
        self.assertNotIn("will inherit", log, why)
        for event in worker.events("pre-fork"):
            self.assertIn("recipe:sqlalchemy", [h.get("handled_by") for h in event["hazards"]
                                                if h["allowed"]], event)
        # a plain life: the warm shutdown ends it with status 0
        self.assertEqual(worker.stop(), 0, worker.log_text()[-6000:])
        names = collections.Counter(e["event"] for e in worker.events())
        for name, count in (("master-start", 1), ("pre-fork", POOL), ("post-fork", POOL),
                            ("worker-ready", POOL), ("master-exit", 1)):
            self.assertEqual(names[name], count, names)

    def test_the_recipe_holds_for_replaced_pool_processes(self):
        # --max-tasks-per-child: Celery replaces each pool process after
        # RECYCLE tasks, forking the replacement from the same main process,
        # whose pool still holds its start-up connection
        worker, database = self.serve(extra_args=["--max-tasks-per-child=%d" % RECYCLE])
        main = self.main_backend(worker, database)
        result = run_tasks(self.client(), TASKS, TIME_LIMIT)
        print("\n  celery, recycling every %d tasks: %s" % (RECYCLE, tasks_summary(result)))
        why = self.context(worker, result)
        self.assertEqual(result.errors, 0, why)
        self.assertEqual(result.ok, TASKS, why)
        forked = worker.pool_pids()
        self.assertGreater(len(forked), POOL, "no pool process was replaced\n" + why)
        for pid, backends in result.backends_by_worker().items():
            self.assertEqual(len(backends), 1, "pool process %d used backends %s\n%s"
                             % (pid, backends, why))
        self.assertNotIn(main, result.backend_pids, why)
        # every pool process, the replacements too, dropped the main's pool
        lines = re.findall(RECIPE_LINE, worker.log_text())
        self.assertEqual(sorted(int(pid) for _, _, pid, _, _ in lines), sorted(forked), why)
        self.assertEqual({int(origin) for _, _, _, _, origin in lines}, {worker.pid}, why)
        self.assertNotIn("will inherit", worker.log_text(), why)

    def test_without_the_recipe_line_the_hazard_shows(self):
        # the same production.ini minus `post-fork = recipe:sqlalchemy`
        worker, database = self.serve(
            subscribe=False, extra_args=["--time-limit=%d" % HAZARD_TASK_TIME_LIMIT])
        main = self.main_backend(worker, database)
        result = run_tasks(self.client(), TASKS, HAZARD_TIME_LIMIT)
        print("\n  celery, without the recipe line: %s" % tasks_summary(result))
        why = self.context(worker, result)
        shared = {b: pids for b, pids in result.workers_by_backend().items() if len(pids) > 1}
        on_main = {pid for pid, backend in result.pairs if backend == main}
        print("  hazard: %d errors %s; backends shared by several pool processes: %s; pool "
              "processes on the main process's pre-fork backend %s: %s"
              % (result.errors, dict(result.error_kinds), shared, main, sorted(on_main)))
        self.assertTrue(result.errors > 0 or shared or on_main,
                        "no hazard observed without the recipe line:\n" + why)
        # nothing disposed anything
        for answer in result.first_by_pid.values():
            self.assertEqual(answer["disposed"], [], why)
        log = worker.log_text()
        self.assertNotIn("recipe:sqlalchemy", log, why)
        self.assertNotIn("[forksafe_sqla] worker ", log, why)
        # and forksafe said, at each fork, what the pool process would inherit
        self.assertGreaterEqual(log.count("will inherit fd"), POOL, why)
        worker.stop_anyhow()


if __name__ == "__main__":
    unittest.main()
