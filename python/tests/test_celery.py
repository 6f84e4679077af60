"""pyramid_forksafe.containers.celery without a broker: the payload, the
exit reasons, the shared page across a real fork, the adapter with a
stand-in for the forksafe Host, a real billiard pool with the hooks, and
install() on a real Celery app.  The worker itself is tested in
tests/integration/test_celery.py."""
import atexit
import io
import json
import os
import shutil
import signal
import tempfile
import time
import unittest
from contextlib import redirect_stderr

from forksafe_support import run_in_own_group
from forksafe_support import ModulesTestCase
from forksafe_support import Recorder
from forksafe_support import make_app

from pyramid.config import Configurator

from pyramid_forksafe import host as fs_host
from pyramid_forksafe.containers import celery as fs_celery
from pyramid_forksafe.interfaces import IForksafeEvent

SETTINGS = {
    "settings": {"sqlalchemy.url": "sqlite://", "title": "t"},
    "global_settings": {"here": "/srv/app", "__file__": "/srv/app/production.ini"},
}


class FakeHost(object):
    """Host's interface (pyramid_forksafe.host.Host): records each dispatch,
    one JSON line in LOG (shared by forked children), and returns CODES[event]."""

    def __init__(self, log, codes=None):
        self.log = log
        self.codes = dict(codes or {})
        self.settings = json.loads(json.dumps(SETTINGS))
        self.made_with = None

    def factory(self, container, settings_spec, **kwargs):
        self.made_with = dict(kwargs, container=container, settings_spec=settings_spec)
        return self

    def dispatch(self, event, kind, id, respawn=0, generation=0, child=None, reason=None,
                 pid=0, ppid=0):
        record = {"event": event, "kind": kind, "id": id, "respawn": respawn,
                  "generation": generation, "child": child, "reason": reason,
                  "pid": os.getpid()}
        fd = os.open(self.log, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
        try:
            os.write(fd, (json.dumps(record) + "\n").encode())
        finally:
            os.close(fd)
        return self.codes.get(event, 0)

    def python_bridge(self):
        """A stand-in has no core, so no ``_forksafe`` module."""
        return None

    def records(self):
        try:
            with open(self.log) as f:
                # a child may be appending: a line with no newline yet is half written
                return [json.loads(line) for line in f if line.endswith("\n")]
        except FileNotFoundError:
            return []


class AdapterCase(unittest.TestCase):

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="forksafe-celery-unit-")
        self.addCleanup(os.system, "rm -rf '%s'" % self.dir)
        self.host = FakeHost(os.path.join(self.dir, "host.jsonl"))
        saved = os.environ.get(fs_celery.GENERATION_ENV)

        def restore():
            os.environ.pop(fs_celery.GENERATION_ENV, None)
            if saved is not None:
                os.environ[fs_celery.GENERATION_ENV] = saved

        self.addCleanup(restore)

    def adapter(self, **kwargs):
        kwargs.setdefault("host_factory", self.host.factory)
        adapter = fs_celery.Adapter(None, "/srv/app/production.ini#main", **kwargs)
        self.addCleanup(atexit.unregister, adapter._at_exit)
        return adapter


class TestPayload(unittest.TestCase):

    def test_keys_as_the_core_builds_them(self):
        payload = fs_celery.make_payload("post-fork", "worker", 2, {"a": "1"}, {"here": "/x"},
                                         respawn=3, generation=1, now=12.5)
        self.assertEqual(payload, {
            "event": "post-fork", "container": "celery",
            "process": {"kind": "worker", "id": 2, "pid": os.getpid(), "ppid": os.getppid()},
            "generation": 1, "respawn": 3, "time": 12.5,
            "settings": {"a": "1"}, "global_settings": {"here": "/x"},
        })

    def test_child_only_where_the_core_puts_it(self):
        child = {"kind": "worker", "id": 1, "pid": 42, "respawn": 0}
        pre = fs_celery.make_payload("pre-fork", "master", 0, {}, {}, child=child)
        self.assertEqual(pre["child"], {"kind": "worker", "id": 1, "respawn": 0})
        parent = fs_celery.make_payload("post-fork-parent", "master", 0, {}, {}, child=child)
        self.assertEqual(parent["child"]["pid"], 42)
        post = fs_celery.make_payload("post-fork", "worker", 1, {}, {}, child=child,
                                      reason="shutdown")
        self.assertNotIn("child", post)
        self.assertNotIn("reason", post)

    def test_child_death_status(self):
        killed = dict(kind="worker", id=1, pid=42, respawn=0,
                      status=fs_celery.status_from_exitcode(-9), cause="signal")
        payload = fs_celery.make_payload("child-death", "master", 0, {}, {}, child=killed)
        self.assertEqual(payload["child"], {"kind": "worker", "id": 1, "pid": 42, "respawn": 0,
                                            "status": 9, "signal": 9, "cause": "signal"})
        exited = dict(killed, status=fs_celery.status_from_exitcode(3), cause="exit")
        payload = fs_celery.make_payload("child-death", "master", 0, {}, {}, child=exited)
        self.assertEqual(payload["child"]["exit_code"], 3)
        self.assertEqual(payload["child"]["status"], 3 << 8)
        self.assertNotIn("signal", payload["child"])

    def test_reason_only_in_exit_events(self):
        for event in ("worker-exit", "master-exit"):
            self.assertEqual(fs_celery.make_payload(event, "worker", 1, {}, {},
                                                    reason="reload")["reason"], "reload")


class TestPureParts(unittest.TestCase):

    def test_status_from_exitcode(self):
        self.assertIsNone(fs_celery.status_from_exitcode(None))
        self.assertEqual(fs_celery.status_from_exitcode(0), 0)
        self.assertTrue(os.WIFSIGNALED(fs_celery.status_from_exitcode(-15)))
        self.assertEqual(os.WTERMSIG(fs_celery.status_from_exitcode(-15)), 15)
        self.assertEqual(os.WEXITSTATUS(fs_celery.status_from_exitcode(155)), 155)

    def test_death_cause(self):
        self.assertEqual(fs_celery.death_cause(-9), "signal")
        self.assertEqual(fs_celery.death_cause(1), "exit")
        self.assertEqual(fs_celery.death_cause(None), "unknown")
        self.assertEqual(fs_celery.death_cause(-15, controlled=True), "killed-by-master")
        self.assertEqual(fs_celery.death_cause(-15, harakiri=True, controlled=True), "harakiri")

    def test_exit_reason(self):
        reason = fs_celery.exit_reason
        self.assertEqual(reason(0), "exit")
        # the instance state counts only when it changed after the child started
        self.assertEqual(reason(0, fs_celery.STOPPING, 200, 100), "shutdown")
        self.assertEqual(reason(0, fs_celery.STOPPING, 50, 100), "exit")
        self.assertEqual(reason(0, fs_celery.RELOADING, 200, 100), "reload")
        self.assertEqual(reason(0, restart_requested=True), "reload")
        self.assertEqual(reason(0, fs_celery.STOPPING, 200, 100, flags=fs_celery.CHEAPER),
                         "cheaper")
        recycle = fs_celery.EX_RECYCLE
        self.assertEqual(reason(recycle, maxtasks=10), "max-requests")
        self.assertEqual(reason(recycle, max_memory=1000), "recycle")
        self.assertEqual(reason(recycle, maxtasks=10, max_memory=1000, rss_kb=2000), "recycle")
        self.assertEqual(reason(recycle, maxtasks=10, max_memory=1000, rss_kb=500),
                         "max-requests")

    def test_split_settings_and_subscriptions(self):
        self.assertEqual(fs_celery.split_settings(SETTINGS),
                         (SETTINGS["settings"], SETTINGS["global_settings"]))
        self.assertEqual(fs_celery.split_settings({"a": "1"}), ({"a": "1"}, {}))
        self.assertEqual(fs_celery.subscriptions_text("post-fork exec:true\n\n  * dl:x:y "),
                         ("post-fork exec:true", "* dl:x:y"))
        self.assertEqual(fs_celery.subscriptions_text(None), ())
        self.assertEqual(fs_celery.policy_code(None), fs_celery.LOGGED)
        self.assertEqual(fs_celery.policy_code("fatal"), fs_celery.FATAL)
        self.assertEqual(fs_celery.policy_code("exit"), fs_host.EXIT)


class TestSharedState(unittest.TestCase):

    def test_a_forked_child_writes_what_the_parent_reads(self):
        shared = fs_celery.SharedState(slots=4)
        shared.set_state(fs_celery.RUNNING)
        pid = os.fork()
        if pid == 0:  # the child: claim slot 2, complete worker-exit
            try:
                shared.claim(2, os.getpid())
                shared.flag(2, os.getpid(), fs_celery.EXITED)
                shared.flag(2, os.getpid() + 1, fs_celery.CHEAPER)  # not its slot: ignored
            finally:
                os._exit(0)
        _, status = os.waitpid(pid, 0)
        self.assertEqual(status, 0)
        self.assertEqual(shared.slot(2), (pid, fs_celery.EXITED))
        self.assertIsNone(shared.slot(4))
        self.assertIsNone(shared.slot(None))
        before = time.monotonic_ns()
        shared.set_state(fs_celery.STOPPING)
        state, changed = shared.state()
        self.assertEqual(state, fs_celery.STOPPING)
        self.assertGreaterEqual(changed, before)


class TestAdapter(AdapterCase):

    def test_master_start_with_settings_and_host_options(self):
        os.environ[fs_celery.GENERATION_ENV] = "2"
        adapter = self.adapter(subscriptions=["post-fork exec:true"], on_error="exit",
                               timeout=5, verbose=True, hazards="fail",
                               hazard_allow=["tcp:*:5432"])
        self.assertEqual(adapter.start(), 0)
        # no app here: Celery's threads are allowed, no broker is known
        own = ["thread:billiard-result-handler", "thread:billiard-supervisor",
               "thread:billiard-task-handler", "thread:billiard-timeout-handler",
               "thread:MainThread", "thread:Timer-[0-9]*", "thread:Autoscaler"]
        self.assertEqual(self.host.made_with, {
            "container": "celery", "settings_spec": "/srv/app/production.ini#main",
            "subscriptions": ("post-fork exec:true",),
            "source": "pyramid_forksafe.containers.celery", "on_error": "exit",
            "timeout": 5, "verbose": True, "hazards": "fail",
            "hazard_allow": own + ["tcp:*:5432"]})
        [record] = self.host.records()
        self.assertEqual((record["event"], record["kind"], record["id"], record["generation"]),
                         ("master-start", "master", 0, 2))
        self.assertEqual(adapter.settings, SETTINGS["settings"])
        self.assertEqual(adapter.global_settings, SETTINGS["global_settings"])
        self.assertTrue(adapter.is_master())

    def test_a_configuration_error_stops_the_worker_with_its_message(self):
        def factory(*args, **kwargs):
            raise fs_host.ForksafeError("/srv/app/production.ini:27: unknown event 'post_fork'")
        adapter = self.adapter(host_factory=factory)
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit) as raised:
            adapter.start()
        self.assertEqual(raised.exception.code, 1)
        self.assertEqual(err.getvalue(),
                         "[forksafe] /srv/app/production.ini:27: unknown event 'post_fork'\n")

    def test_a_missing_settings_file_says_it_came_from_the_environment(self):
        """The real core, a path that install() took from $FORKSAFE_SETTINGS:
        the error names the file and where its name came from."""
        missing = os.path.join(self.dir, "nowhere", "production.ini")
        saved = os.environ.get(fs_celery.SETTINGS_ENV)
        os.environ[fs_celery.SETTINGS_ENV] = missing
        try:
            spec, origin = fs_celery.settings_and_origin(None)
            self.assertEqual(fs_celery.settings_and_origin("/x.ini"), ("/x.ini", None))
        finally:
            os.environ.pop(fs_celery.SETTINGS_ENV, None)
            if saved is not None:
                os.environ[fs_celery.SETTINGS_ENV] = saved
        self.assertEqual(fs_celery.settings_and_origin(None), (None, None))
        adapter = fs_celery.Adapter(None, spec, settings_origin=origin)
        self.addCleanup(atexit.unregister, adapter._at_exit)
        err = io.StringIO()
        with redirect_stderr(err), self.assertRaises(SystemExit):
            adapter.start()
        message = err.getvalue()
        self.assertTrue(message.startswith("[forksafe] " + missing), message)
        self.assertIn("(the settings path %s came from $FORKSAFE_SETTINGS)" % missing, message)

    def test_no_settings_is_said_at_start(self):
        for subscriptions, tail in ((None, "no subscription either: no handler will run"),
                                    (["post-fork exec:true"], "handlers get empty settings\n")):
            self.host = FakeHost(os.path.join(self.dir, "host-%d.jsonl" % bool(subscriptions)))
            adapter = fs_celery.Adapter(None, None, subscriptions or (),
                                        host_factory=self.host.factory)
            self.addCleanup(atexit.unregister, adapter._at_exit)
            err = io.StringIO()
            with redirect_stderr(err):
                self.assertEqual(adapter.start(), 0)
            self.assertIn("[forksafe] no settings: install() got no settings_spec and "
                          "$FORKSAFE_SETTINGS is not set", err.getvalue())
            self.assertIn(tail, err.getvalue())

    def test_exit_or_fatal_at_master_start_stops_the_start(self):
        for code in (fs_celery.EXIT, fs_celery.FATAL):
            self.host.codes["master-start"] = code
            adapter = self.adapter()
            with redirect_stderr(io.StringIO()), self.assertRaises(SystemExit):
                adapter.start()

    def test_master_exit_once_and_reload_counts_a_generation(self):
        adapter = self.adapter()
        adapter.start()
        adapter.shared.set_state(fs_celery.RELOADING)
        adapter.finish()
        adapter.finish()
        exits = [r for r in self.host.records() if r["event"] == "master-exit"]
        self.assertEqual([r["reason"] for r in exits], ["reload"])
        self.assertEqual(os.environ[fs_celery.GENERATION_ENV], "1")

    def test_fatal_in_the_main_process_is_a_warm_shutdown(self):
        adapter = self.adapter()
        adapter.start()
        received = []
        previous = signal.signal(signal.SIGTERM, lambda *a: received.append(a[0]))
        self.addCleanup(signal.signal, signal.SIGTERM, previous)
        self.host.codes["pre-fork"] = fs_celery.EXIT  # exit acts as fatal in the main
        with redirect_stderr(io.StringIO()) as err:
            adapter.pre_fork(object(), 0)
        self.assertEqual(received, [signal.SIGTERM])
        self.assertIn("on-error=exit: stopping the worker after a failed pre-fork", err.getvalue())

    def test_child_death_only_without_worker_exit(self):
        adapter = self.adapter()
        adapter.start()

        class Process(object):
            def __init__(self, pid, index, exitcode):
                self.pid, self.index, self.exitcode = pid, index, exitcode

        adapter.forks = {0: 1, 1: 2}
        adapter.shared.claim(0, 1000)
        adapter.shared.flag(0, 1000, fs_celery.EXITED)
        adapter.process_gone(Process(1000, 0, 0))  # completed worker-exit
        adapter.shared.claim(1, 1001)
        adapter.process_gone(Process(1001, 1, -9))
        adapter.process_gone(Process(1001, 1, -9))  # once
        deaths = [r for r in self.host.records() if r["event"] == "child-death"]
        self.assertEqual([r["child"] for r in deaths], [{
            "kind": "worker", "id": 2, "pid": 1001, "respawn": 1, "status": 9,
            "cause": "signal"}])


#: the bound on the forked billiard pool run (a safety net: it returns as soon
#: as the pool is done).
POOL_BOUND = 180


class TestRegistry(ModulesTestCase):
    """registry= over the real core: the registry's listener joins the
    ``_forksafe`` listeners that the host's dispatch runs."""

    def setUp(self):
        super().setUp()
        self.dir = tempfile.mkdtemp(prefix="forksafe-celery-registry-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        self.ini = os.path.join(self.dir, "production.ini")
        with open(self.ini, "w") as f:
            f.write("[app:main]\nuse = call:json:dumps\nsqlalchemy.url = sqlite://\ntitle = t\n")

    def adapter(self, **kwargs):
        adapter = fs_celery.Adapter(None, self.ini + "#main", **kwargs)
        self.addCleanup(atexit.unregister, adapter._at_exit)
        self.addCleanup(lambda: adapter.host is not None and adapter.host.close())
        return adapter

    def test_pyramid_registry_hears_the_same_payload(self):
        config = Configurator(settings={"title": "t"})
        recorder = Recorder()
        config.add_subscriber(recorder, IForksafeEvent)
        wsgi_app = config.make_wsgi_app()
        adapter = self.adapter(registry=wsgi_app)  # a Router: its registry
        adapter.start()
        adapter.finish()
        self.assertEqual(recorder.names, ["master-start", "master-exit"])
        payload = recorder.events[0].payload
        self.assertEqual(set(payload), {"event", "container", "process", "generation",
                                        "respawn", "time", "settings", "global_settings"})
        self.assertEqual(payload["settings"], {"sqlalchemy.url": "sqlite://", "title": "t"})
        self.assertEqual(payload["global_settings"], {"here": self.dir, "__file__": self.ini})
        self.assertEqual(recorder.events[1].payload["reason"], "shutdown")
        state = wsgi_app.registry.pyramid_forksafe
        self.assertEqual((state["environment"], state["mechanism"]), ("celery", "forksafe"))
        self.assertIn(("containers.celery", "ApplicationMasterExit"), state["executed_hooks"])

    def test_a_failing_subscriber_is_logged_and_follows_on_error(self):
        config = Configurator()

        def boom(event):
            raise ValueError("subscriber boom")
        config.add_subscriber(boom, IForksafeEvent)
        registry = config.make_wsgi_app().registry
        for on_error, code in (("log", fs_celery.LOGGED), ("exit", fs_celery.EXIT),
                               ("fatal", fs_celery.FATAL)):
            adapter = self.adapter(registry=lambda: registry, on_error=on_error)
            err = io.StringIO()
            with redirect_stderr(err):
                adapter.open_host()
                adapter.attach_registry()
                self.assertEqual(adapter.fire("worker-ready"), code)
            self.assertIn("pyramid_forksafe subscriber failed on worker-ready", err.getvalue())
            self.assertIn("ValueError: subscriber boom", err.getvalue())

    def test_an_application_that_includes_pyramid_forksafe_hears_every_event(self):
        """As under uWSGI and gunicorn: the worker has a _forksafe module."""
        adapter = self.adapter()
        adapter.start()
        app, recorder = make_app()
        state = app.registry.pyramid_forksafe
        self.assertEqual((state["status"], state["environment"]),
                         ("forksafe listener configured", "celery"))
        adapter.finish()
        self.assertEqual(recorder.names, ["master-exit"])
        self.assertIn(("containers.celery", "ApplicationMasterExit"), state["executed_hooks"])


class TestBilliardHooks(AdapterCase):
    """A real billiard pool (the threaded one) with the hooks: the main
    process and child events, and a child that dies.  The pool runs in a
    forked process of its own group, killed after a timeout, so a stuck pool
    cannot hang the suite.  (The threaded pool is not SIGKILL-safe: a child
    killed inside a queue's lock blocks it for good, so the child here dies
    by os._exit in a task; the worker's SIGKILL is tested in
    tests/integration/test_celery.py with Celery's AsynPool.)"""

    def run_pool(self):
        from billiard.pool import Pool

        adapter = self.adapter()
        adapter.start()
        adapter.pool_hooked = True
        cls = fs_celery.hooked_pool_class(Pool, adapter)
        pool = cls(processes=1, initializer=adapter.child_started,
                   on_process_exit=lambda pid, exitcode: adapter.child_exit(exitcode),
                   threads=True, lost_worker_timeout=0.5)
        # bounds generous for a busy machine: each wait returns once met
        first = pool.apply_async(os.getpid).get(timeout=60)
        pool.apply_async(os._exit, (3,))
        second = first
        deadline = time.monotonic() + 60
        while second == first and time.monotonic() < deadline:
            second = pool.apply_async(os.getpid).get(timeout=60)
        pool.close()
        pool.join()
        with open(os.path.join(self.dir, "pids.json"), "w") as f:
            json.dump([first, second], f)

    def test_pool_lifecycle(self):
        pid, status = run_in_own_group(self.run_pool, POOL_BOUND)
        if status is None:
            self.fail("the billiard pool did not finish in %d s" % POOL_BOUND)
        self.assertEqual(status, 0)
        with open(os.path.join(self.dir, "pids.json")) as f:
            first, second = json.load(f)
        self.assertNotEqual(second, first)
        records = self.host.records()
        main = [(r["event"], (r["child"] or {}).get("pid"), (r["child"] or {}).get("respawn"))
                for r in records if r["pid"] == pid]
        self.assertEqual(main, [
            ("master-start", None, None),
            ("pre-fork", None, 0), ("post-fork-parent", first, 0),
            ("child-death", first, 0),
            ("pre-fork", None, 1), ("post-fork-parent", second, 1)])
        death = next(r for r in records if r["event"] == "child-death")
        self.assertEqual(death["child"], {"kind": "worker", "id": 1, "pid": first,
                                          "respawn": 0, "status": 3 << 8, "cause": "exit"})
        children = {}
        for r in records:
            if r["pid"] != pid:
                children.setdefault(r["pid"], []).append(
                    (r["event"], r["kind"], r["id"], r["respawn"], r["reason"]))
        self.assertEqual(children, {
            first: [("post-fork", "worker", 1, 0, None), ("worker-ready", "worker", 1, 0, None)],
            second: [("post-fork", "worker", 1, 1, None), ("worker-ready", "worker", 1, 1, None),
                     ("worker-exit", "worker", 1, 1, "shutdown")],
        })


class TestInstall(unittest.TestCase):

    def test_install_connects_the_signals_and_the_pool_step(self):
        from celery import Celery, signals
        from celery.concurrency.prefork import TaskPool
        from celery.concurrency.solo import TaskPool as SoloPool

        app = Celery("unit", broker="memory://")
        adapter = fs_celery.install(app, settings_spec="/x.ini", subscriptions="* exec:true")
        self.assertIs(fs_celery.install(app), adapter)  # once per app
        self.assertEqual(adapter.subscriptions, ("* exec:true",))
        for sig in (signals.worker_init, signals.worker_process_init,
                    signals.worker_process_shutdown, signals.worker_shutdown):
            self.assertTrue(any("pyramid_forksafe" in str(key[0]) for key, _ in sig.receivers),
                            sig.name)
        self.assertIn(adapter.step, app.steps["worker"])

        pool = TaskPool(2, app=app)
        self.assertTrue(fs_celery.hook_task_pool(pool, adapter))
        from celery.concurrency.asynpool import AsynPool, Worker
        self.assertTrue(issubclass(pool.Pool, AsynPool))
        self.assertTrue(issubclass(pool.Pool, fs_celery.PoolHooks))
        self.assertTrue(issubclass(pool.Pool.Worker, Worker))
        self.assertTrue(issubclass(pool.Pool.Worker, fs_celery.WorkerHooks))
        self.assertIs(TaskPool.Pool, AsynPool)  # the class itself is untouched
        self.assertFalse(fs_celery.hook_task_pool(SoloPool(app=app), adapter))

    def test_settings_spec_from_the_environment(self):
        from celery import Celery

        saved = os.environ.get(fs_celery.SETTINGS_ENV)
        os.environ[fs_celery.SETTINGS_ENV] = "/srv/app/production.ini#main"
        try:
            adapter = fs_celery.install(Celery("unit-env", broker="memory://"))
        finally:
            if saved is None:
                del os.environ[fs_celery.SETTINGS_ENV]
            else:
                os.environ[fs_celery.SETTINGS_ENV] = saved
        self.assertEqual(adapter.settings_spec, "/srv/app/production.ini#main")


if __name__ == "__main__":
    unittest.main()
