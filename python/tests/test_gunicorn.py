"""pyramid_forksafe.containers.gunicorn and pyramid_forksafe.host.

TestHooks: 0.2's hooks called the 0.2 way, with stand-ins for gunicorn's
objects (`server.app.wsgi()`, `worker.app.wsgi()`) around a real Pyramid
application: the synthesized payloads and 0.2's records, unchanged.

The rest: the pure-Python parts of the adapter (hooks(), options, wait
statuses, causes, reasons, ids, policy) and the adapter driven in this
process by a fake arbiter whose forks are simulated, over the real core
(build/libforksafe.so through pyramid_forksafe.host).  A real gunicorn is
tests/integration/test_gunicorn.py's."""
import os
import shutil
import signal
import sys
import tempfile
import textwrap
import types
import unittest
from unittest import mock

from forksafe_support import ModulesTestCase, make_app

from pyramid_forksafe import events
from pyramid_forksafe import host as fs_host
from pyramid_forksafe.containers import gunicorn


class GunicornApplication(object):
    """gunicorn.app.base.Application: wsgi() returns the loaded WSGI app."""

    def __init__(self, wsgi_app):
        self._wsgi_app = wsgi_app

    def wsgi(self):
        return self._wsgi_app


class Arbiter(object):
    def __init__(self, app):
        self.app = app


class Worker(object):
    def __init__(self, app, age=1):
        self.app = app
        self.age = age


class TestHooks(ModulesTestCase):
    def setUp(self):
        super().setUp()
        self.app, self.recorder = make_app()
        self.gunicorn_app = GunicornApplication(self.app)
        self.server = Arbiter(self.gunicorn_app)
        self.worker = Worker(self.gunicorn_app)

    def test_the_three_hooks(self):
        gunicorn.pre_fork(self.server, self.worker)
        gunicorn.post_fork(self.server, self.worker)
        gunicorn.post_worker_init(self.worker)
        self.assertEqual([type(e) for e in self.recorder.events], [
            events.ApplicationPreFork,
            events.ApplicationPostFork,
            events.ApplicationPostWorkerInit,
        ])
        for event in self.recorder.events:
            self.assertIs(event.registry, self.app.registry)
            self.assertEqual(event.payload["container"], "gunicorn")
            self.assertTrue(event.payload["synthesized"])
        self.assertEqual(self.recorder.events[0].payload["process"]["kind"], "master")
        self.assertEqual(self.recorder.events[0].payload["child"], {"kind": "worker"})
        self.assertEqual(self.recorder.events[1].payload["process"]["kind"], "worker")
        state = self.app.registry.pyramid_forksafe
        # Exactly 0.2's records.
        self.assertEqual(state["executed_hooks"], {
            ("containers.gunicorn.pre_fork", "ApplicationPreFork"),
            ("containers.gunicorn.post_fork", "ApplicationPostFork"),
            ("containers.gunicorn.post_worker_init", "ApplicationPostWorkerInit"),
        })
        self.assertEqual(state["environment"], "gunicorn")

    def test_mark_configured(self):
        gunicorn.mark_configured(self.app.registry)
        state = self.app.registry.pyramid_forksafe
        self.assertEqual(state["environment"], "gunicorn")
        self.assertEqual(state["status"], "gunicorn mark_configured")
        self.assertEqual(state["autoconfigure.log"][-1], "gunicorn mark_configured")

    def test_application_without_the_include(self):
        app, recorder = make_app(include=None)
        gunicorn.post_fork(Arbiter(GunicornApplication(app)), None)
        self.assertEqual(recorder.names, ["post-fork"])
        self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"],
                         {("containers.gunicorn.post_fork", "ApplicationPostFork")})


# ---------------------------------------------------------------- helpers


class Capture(object):
    """A `python:_fs_capture:record` handler: a module in sys.modules that
    records the payloads the core hands to python: handlers."""

    NAME = "_fs_capture"

    def __init__(self, testcase, fail_on=()):
        self.payloads = []
        module = types.ModuleType(self.NAME)
        fail_on = set(fail_on)

        def record(payload):
            self.payloads.append(payload)
            if payload["event"] in fail_on:
                raise RuntimeError("failing on purpose")

        module.record = record
        sys.modules[self.NAME] = module
        testcase.addCleanup(sys.modules.pop, self.NAME, None)

    @property
    def names(self):
        return [p["event"] for p in self.payloads]


def write_ini(testcase, text):
    directory = tempfile.mkdtemp(prefix="forksafe-unit-")
    testcase.addCleanup(shutil.rmtree, directory, True)
    path = os.path.join(directory, "app.ini")
    with open(path, "w") as f:
        f.write(textwrap.dedent(text))
    return path


class AdapterCase(ModulesTestCase):
    """Resets the adapter's process state around each test."""

    def setUp(self):
        super().setUp()
        gunicorn._reset_for_tests()
        self.addCleanup(gunicorn._reset_for_tests)
        sys.modules.pop("__config__", None)
        self.addCleanup(sys.modules.pop, "__config__", None)


# ------------------------------------------------------------ hooks()


class TestHooksHelper(AdapterCase):
    def test_every_hook_with_gunicorns_arity(self):
        from gunicorn.config import validate_callable

        result = gunicorn.hooks()
        self.assertEqual(set(result), set(gunicorn.HOOKS))
        for name, hook in result.items():
            self.assertIs(hook, getattr(gunicorn, name))
            self.assertIs(validate_callable(gunicorn.SERVER_HOOKS[name])(hook), hook)

    def test_combined_hooks_run_forksafes_part_then_the_users(self):
        from gunicorn.config import validate_callable

        calls = []
        patched = {}
        for name, arity in gunicorn.HOOKS.items():
            def ours(*args, _name=name):
                calls.append(("forksafe", _name, args))
            patched[name] = ours

        def user(tag, arity):
            if arity == 1:
                return lambda a: calls.append((tag, a)) or tag
            return lambda a, b: calls.append((tag, a, b)) or tag

        with mock.patch.multiple(gunicorn, **patched):
            result = gunicorn.hooks(on_starting=user("mine", 1), post_fork=user("mine", 2),
                                    child_exit=None)
        self.assertEqual(result["on_starting"]("server"), "mine")
        self.assertEqual(calls, [("forksafe", "on_starting", ("server",)), ("mine", "server")])
        del calls[:]
        self.assertEqual(result["post_fork"]("server", "worker"), "mine")
        self.assertEqual(calls, [("forksafe", "post_fork", ("server", "worker")),
                                 ("mine", "server", "worker")])
        self.assertIs(result["child_exit"], patched["child_exit"])  # None: ours alone
        for name in ("on_starting", "post_fork"):
            validate_callable(gunicorn.SERVER_HOOKS[name])(result[name])
            self.assertEqual(result[name].__name__, name)

    def test_other_gunicorn_hooks_pass_through(self):
        def pre_request(worker, req):
            pass

        result = gunicorn.hooks(pre_request=pre_request)
        self.assertIs(result["pre_request"], pre_request)

    def test_refusals(self):
        with self.assertRaisesRegex(TypeError, "not gunicorn server hooks: post_frok"):
            gunicorn.hooks(post_frok=lambda s, w: None)
        with self.assertRaisesRegex(TypeError, "post_fork hook must be callable"):
            gunicorn.hooks(post_fork="nope")

    def test_import_star_gives_the_hooks(self):
        namespace = {}
        exec("from pyramid_forksafe.containers.gunicorn import *", namespace)
        self.assertTrue(set(gunicorn.HOOKS) <= set(namespace))


# ------------------------------------------------------------ options


class Cfg(object):
    def __init__(self, paste=None, config="./gunicorn.conf.py"):
        self.paste = paste
        self.config = config
        self.preload_app = True


class App(object):
    """gunicorn's WSGIApplication: app_uri, cfg, wsgi() and its cache."""

    def __init__(self, wsgi_app=None, app_uri=None, cfg=None, loader=None):
        self.callable = wsgi_app
        self.app_uri = app_uri
        self.cfg = cfg or Cfg(paste=app_uri)
        self.loader = loader

    def wsgi(self):
        if self.callable is None:
            if self.loader is None:
                raise AssertionError("the application must not be loaded here")
            self.callable = self.loader()
        return self.callable


class TestOptions(AdapterCase):
    def server(self, **kwargs):
        app = App(**kwargs)
        return types.SimpleNamespace(app=app, cfg=app.cfg)

    def test_settings_from_paste(self):
        options = gunicorn.read_options(self.server(app_uri="/srv/app/production.ini#main"))
        self.assertEqual(options, {"settings_spec": "/srv/app/production.ini#main"})

    def test_no_paste_no_settings(self):
        self.assertEqual(gunicorn.read_options(self.server()), {})

    def test_config_file_names(self):
        module = types.ModuleType("__config__")
        module.__file__ = "/srv/app/gunicorn.conf.py"
        module.forksafe_subscribe = "post-fork exec:true"
        module.forksafe_on_error = "fatal"
        module.forksafe_timeout = 5
        module.forksafe_verbose = True
        module.forksafe_settings = "/srv/app/settings.json"
        module.workers = 4
        sys.modules["__config__"] = module
        options = gunicorn.read_options(self.server(app_uri="/srv/app/production.ini"))
        self.assertEqual(options, {
            "settings_spec": "/srv/app/settings.json",
            "subscriptions": ["post-fork exec:true"],
            "on_error": "fatal",
            "timeout": 5,
            "verbose": True,
            "source": "/srv/app/gunicorn.conf.py (forksafe_subscribe)",
        })

    def test_python_module_config_and_configure(self):
        module = types.ModuleType("myconf")
        module.forksafe_subscribe = ["a", "b"]
        sys.modules["myconf"] = module
        self.addCleanup(sys.modules.pop, "myconf", None)
        server = self.server()
        server.cfg.config = "python:myconf"
        gunicorn.configure(forksafe_on_error="exit", subscriptions=["c"])
        options = gunicorn.read_options(server)
        self.assertEqual(options["subscriptions"], ["c"])
        self.assertEqual(options["on_error"], "exit")
        with self.assertRaisesRegex(TypeError, "unknown forksafe option 'workers'"):
            gunicorn.configure(workers=3)


# ----------------------------------------------- statuses, causes, reasons


class TestStatuses(unittest.TestCase):
    def child(self, how):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            if how == "exit":
                os._exit(3)
            signal.pause()
            os._exit(0)
        if how == "kill":
            os.kill(pid, signal.SIGKILL)
        return pid

    def test_wait_status_from_waitid_equals_waitpids(self):
        for how in ("exit", "kill"):
            with self.subTest(how=how):
                pid = self.child(how)
                info = None
                while info is None:
                    info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)
                status = gunicorn.wait_status(info.si_code, info.si_status)
                _, real = os.waitpid(pid, 0)
                self.assertEqual(status, real)

    def test_death_cause(self):
        killed = signal.SIGKILL  # raw status of a SIGKILL death
        self.assertEqual(gunicorn.death_cause(None), "unknown")
        self.assertEqual(gunicorn.death_cause(3 << 8), "exit")
        self.assertEqual(gunicorn.death_cause(killed), "signal")
        self.assertEqual(gunicorn.death_cause(killed, signal.SIGKILL), "killed-by-master")
        self.assertEqual(gunicorn.death_cause(killed, signal.SIGTERM), "signal")
        self.assertEqual(gunicorn.death_cause(killed, signal.SIGKILL, "harakiri"), "harakiri")


# --------------------------------------------------------------- host.py


class TestHostLibrary(unittest.TestCase):
    def setUp(self):
        saved = fs_host._library
        self.addCleanup(setattr, fs_host, "_library", saved)
        fs_host._library = None

    def test_missing_library_is_a_clear_error(self):
        with mock.patch.dict(os.environ, {"FORKSAFE_LIBRARY": "/nonexistent/libforksafe.so"}):
            with self.assertRaises(fs_host.LibraryNotFound) as caught:
                fs_host.Host("gunicorn")
        message = str(caught.exception)
        self.assertIn("/nonexistent/libforksafe.so ($FORKSAFE_LIBRARY): no such file", message)
        self.assertIn("make", message)
        self.assertIsInstance(caught.exception, OSError)

    def test_candidates(self):
        with mock.patch.dict(os.environ, {"FORKSAFE_LIBRARY": ""}):
            candidates = [path for _, path in fs_host.library_candidates()]
        self.assertEqual(candidates[0], os.path.join(
            os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(fs_host.__file__)))),
            "build", "libforksafe.so"))
        self.assertEqual(candidates[1:], ["libforksafe.so", "libforksafe.so.0"])

    def test_library_without_the_host_api(self):
        libc = "libc.so.6"  # loads fine, but is not forksafe
        with mock.patch.dict(os.environ, {"FORKSAFE_LIBRARY": libc}):
            with self.assertRaisesRegex(fs_host.LibraryNotFound, "no forksafe host API"):
                fs_host.load_library()


class TestHost(unittest.TestCase):
    INI = """
        [DEFAULT]
        shared = yes

        [app:main]
        use = call:json:dumps
        db.url = postgresql://app:secret@db/app
        here_too = %(here)s/var
        multi =
            one
            two

        [forksafe]
        post-fork = python:_fs_capture:record
        """

    def test_settings_equal_pastedeploys(self):
        from paste.deploy import appconfig

        Capture(self)
        path = write_ini(self, self.INI)
        with fs_host.Host("gunicorn", path) as host:
            conf = appconfig("config:" + path)
            self.assertEqual(host.app_settings, dict(conf.local_conf))
            self.assertEqual(host.global_settings, dict(conf.global_conf))
            self.assertEqual(host.settings, {"settings": dict(conf.local_conf),
                                             "global_settings": dict(conf.global_conf)})
        self.assertTrue(host.closed)
        host.close()  # idempotent

    def test_python_payload_is_the_cores(self):
        capture = Capture(self)
        path = write_ini(self, self.INI)
        host = fs_host.Host("gunicorn", path, ["child-death python:_fs_capture:record"])
        self.addCleanup(host.close)
        cases = [
            ("post-fork", "worker", 2, dict(respawn=3, generation=1)),
            ("child-death", "master", 0,
             dict(child={"kind": "worker", "id": 2, "pid": 4242, "respawn": 1,
                         "status": signal.SIGKILL, "cause": "signal"})),
            ("child-death", "master", 0,
             dict(child={"kind": "worker", "id": 1, "pid": 4243, "status": 7 << 8,
                         "cause": "exit"})),
            ("child-death", "master", 0,
             dict(child={"kind": "worker", "id": 1, "pid": 4244, "cause": "unknown"})),
        ]
        for event, kind, wid, kwargs in cases:
            with self.subTest(event=event, kwargs=kwargs):
                self.assertEqual(host.dispatch(event, kind, wid, **kwargs), fs_host.OK)
                core = capture.payloads[-1]
                mine = host.payload(event, kind, wid, **kwargs)
                self.assertEqual(set(mine), set(core))
                self.assertAlmostEqual(mine.pop("time"), core.pop("time"), delta=5)
                self.assertEqual(mine, core)

    def test_stats_count_what_forked_children_ran(self):
        Capture(self)
        path = write_ini(self, self.INI)
        host = fs_host.Host("gunicorn", path, ["worker-ready exec:/bin/false"])
        self.addCleanup(host.close)
        pids = []
        for wid in (1, 2):
            pid = os.fork()
            if pid == 0:
                try:
                    host.dispatch("post-fork", "worker", wid)
                    host.dispatch("worker-ready", "worker", wid)
                finally:
                    os._exit(0)
            os.waitpid(pid, 0)
            pids.append(pid)
        stats = host.stats()
        self.assertEqual(stats["events"]["post-fork"]["fired"], 2)
        self.assertEqual(stats["events"]["post-fork"]["handlers"], 2)
        self.assertEqual(stats["events"]["worker-ready"]["failed"], 2)
        self.assertEqual([(h["event"], h["process"]["pid"], h["result"]) for h in stats["history"]],
                         [("post-fork", pids[0], "ok"), ("worker-ready", pids[0], "failed"),
                          ("post-fork", pids[1], "ok"), ("worker-ready", pids[1], "failed")])
        self.assertEqual([s["handler"] for s in stats["subscriptions"]],
                         ["python:_fs_capture:record", "exec:/bin/false"])
        host.close()
        with self.assertRaises(fs_host.ForksafeError):
            host.stats()

    def test_metrics_are_the_same_counters_with_each_process_memory(self):
        Capture(self)
        host = fs_host.Host("gunicorn", None, ["worker-ready exec:/bin/false"])
        self.addCleanup(host.close)
        pid = os.fork()
        if pid == 0:
            try:
                host.dispatch("worker-ready", "worker", 1)
            finally:
                os._exit(0)
        os.waitpid(pid, 0)
        text = host.metrics([("master", 0, 0), ("worker", 1, pid), ("nonsense", 2, 1)], 4)
        lines = text.splitlines()
        self.assertTrue([l for l in lines if l.startswith('forksafe_info{version="')
                         and l.endswith('",container="gunicorn"} 1')], text)
        self.assertIn("forksafe_generation 4", lines)
        self.assertIn('forksafe_handler_failures_total{event="worker-ready"} 1', lines)
        self.assertIn('forksafe_handler_duration_seconds_count{event="worker-ready"} 1', lines)
        # This process (pid 0) is there; the reaped child and the unknown kind are not.
        self.assertIn('forksafe_process_pid{kind="master",id="0"} %d' % os.getpid(), lines)
        self.assertNotIn('id="1"} ', "\n".join(l for l in lines if l.startswith("forksafe_process")))
        self.assertEqual(fs_host.METRICS_CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")
        host.close()
        with self.assertRaises(fs_host.ForksafeError):
            host.metrics()

    def test_pre_fork_child_has_no_pid_and_reasons(self):
        capture = Capture(self)
        host = fs_host.Host("celery", None, ["pre-fork,worker-exit python:_fs_capture:record"])
        self.addCleanup(host.close)
        host.dispatch("pre-fork", "master", 0, child={"kind": "worker", "id": 1, "pid": 99})
        host.dispatch("worker-exit", "worker", 1, reason="shutdown")
        # this test process has no thread or connection to leak: no hazard
        for core, event, kwargs in zip(capture.payloads, ("pre-fork", "worker-exit"), (
                dict(child={"kind": "worker", "id": 1, "pid": 99}, hazards=[]),
                dict(reason="shutdown"))):
            mine = host.payload(event, core["process"]["kind"], core["process"]["id"], **kwargs)
            mine.pop("time"), core.pop("time")
            self.assertEqual(mine, core)
        self.assertEqual(capture.payloads[0]["child"], {"kind": "worker", "id": 1, "respawn": 0})
        self.assertEqual(capture.payloads[0]["container"], "celery")
        self.assertEqual(capture.payloads[0]["settings"], {})

    def test_policy_codes(self):
        Capture(self, fail_on={"post-fork"})
        for policy, code in (("log", fs_host.LOG), ("exit", fs_host.EXIT),
                             ("fatal", fs_host.FATAL)):
            with self.subTest(policy=policy):
                host = fs_host.Host("gunicorn", None, ["post-fork python:_fs_capture:record",
                                                       "worker-ready exec:true"],
                                    on_error=policy)
                self.addCleanup(host.close)
                self.assertEqual(host.dispatch("post-fork", "worker", 1), code)
                self.assertEqual(host.dispatch("worker-ready", "worker", 1), fs_host.OK)
                self.assertEqual(host.dispatch("master-exit", "master", 0), fs_host.OK)
                self.assertEqual(host.failure_code, code)
        host = fs_host.Host("gunicorn", None, ["post-fork on-error=fatal exec:exit 1",
                                               "post-fork on-error=exit exec:exit 1"])
        self.addCleanup(host.close)
        self.assertEqual(host.dispatch("post-fork", "worker", 1), fs_host.FATAL)

    def test_errors(self):
        with self.assertRaisesRegex(fs_host.ForksafeError,
                                    r"^conf\.py:2: unknown event 'post_fork' "
                                    r"\(did you mean 'post-fork'\?\)"):
            fs_host.Host("gunicorn", None, ["post-fork exec:true", "post_fork exec:true"],
                         source="conf.py")
        with self.assertRaisesRegex(fs_host.ForksafeError, "on-error must be log, exit or fatal"):
            fs_host.Host("gunicorn", None, on_error="crash")
        with self.assertRaisesRegex(fs_host.ForksafeError, "/nonexistent.ini"):
            fs_host.Host("gunicorn", "/nonexistent.ini")
        host = fs_host.Host("gunicorn")
        self.addCleanup(host.close)
        with self.assertRaises(ValueError):
            host.dispatch("post_fork", "worker", 1)
        with self.assertRaises(ValueError):
            host.dispatch("post-fork", "arbiter", 1)
        host.close()
        with self.assertRaisesRegex(ValueError, "closed"):
            host.dispatch("post-fork", "worker", 1)

    def test_subscription_text(self):
        self.assertIsNone(fs_host.subscription_text(None))
        self.assertIsNone(fs_host.subscription_text([]))
        self.assertEqual(fs_host.subscription_text(["a b", "c d\n"]), "a b\nc d")
        self.assertEqual(fs_host.subscription_text("a b\nc d"), "a b\nc d")
        with self.assertRaises(TypeError):
            fs_host.subscription_text([b"post-fork exec:true"])
        with self.assertRaises(ValueError):
            fs_host.subscription_text(["post-fork exec:true\nworker-ready exec:true"])


# ----------------------------------------------- the adapter, simulated


class FakeWorker(object):
    def __init__(self, age, ppid, app, cfg):
        self.age = age
        self.ppid = ppid
        self.app = app
        self.cfg = cfg
        self.pid = None
        self.aborted = False
        self.nr = 0
        self.max_requests = sys.maxsize


class FakeArbiter(object):
    """gunicorn's Arbiter, minus the fork: spawn_worker gives the worker a
    made-up pid; the hooks are called as gunicorn calls them."""

    def __init__(self, app):
        self.app = app
        self.cfg = app.cfg
        self.pid = os.getpid()
        self.WORKERS = {}
        self.pidfile = None
        self.worker_age = 0
        self.next_pid = 900000
        self.killed = []

    def spawn_worker(self):
        self.worker_age += 1
        worker = FakeWorker(self.worker_age, self.pid, self.app, self.cfg)
        gunicorn.pre_fork(self, worker)
        self.next_pid += 1
        worker.pid = self.next_pid
        self.WORKERS[worker.pid] = worker
        return worker.pid

    def reap_workers(self):
        pass

    def kill_worker(self, pid, sig):
        self.killed.append((pid, sig))

    def stop(self, graceful=True):
        for pid in list(self.WORKERS):
            self.kill_worker(pid, signal.SIGTERM)

    def reap(self, pid, status=None):
        """What reap_workers does for PID (its status peeked first)."""
        if status is not None:
            gunicorn._state.statuses[pid] = status
        worker = self.WORKERS.pop(pid)
        gunicorn.child_exit(self, worker)
        return worker


class TestAdapter(AdapterCase):
    def arbiter(self, preload=True, subscriptions=("* python:_fs_capture:record",), **options):
        self.capture = Capture(self)
        self.app, self.recorder = make_app()
        app = App(self.app if preload else None, loader=None if preload else self.fail_load)
        gunicorn.configure(subscriptions=list(subscriptions), **options)
        server = FakeArbiter(app)
        gunicorn.on_starting(server)
        gunicorn.when_ready(server)
        return server

    def fail_load(self):
        raise AssertionError("the application was loaded in the arbiter")

    def as_worker(self, server, pid):
        """Continue as if in worker PID, right after its fork."""
        worker = server.WORKERS[pid]
        gunicorn._state.master_pid = -1  # this process is no longer the arbiter
        gunicorn.post_fork(server, worker)
        return worker

    def test_arbiter_sequence_and_payloads(self):
        server = self.arbiter()
        first = server.spawn_worker()
        second = server.spawn_worker()
        self.assertEqual(self.capture.names, ["master-start", "pre-fork", "post-fork-parent",
                                              "pre-fork", "post-fork-parent"])
        self.assertEqual([p["child"] for p in self.capture.payloads[1:]], [
            {"kind": "worker", "id": 1, "respawn": 0},
            {"kind": "worker", "id": 1, "pid": first, "respawn": 0},
            {"kind": "worker", "id": 2, "respawn": 0},
            {"kind": "worker", "id": 2, "pid": second, "respawn": 0},
        ])
        # the preloaded registry heard the same events, payloads alike
        self.assertEqual(self.recorder.names, self.capture.names)
        for event, core in zip(self.recorder.events, self.capture.payloads):
            mine = dict(event.payload)
            core = dict(core)
            mine.pop("time"), core.pop("time")
            self.assertEqual(mine, core)
        self.assertEqual(self.app.registry.pyramid_forksafe["executed_hooks"], {
            ("containers.gunicorn.on_starting", "ApplicationMasterStart"),
            ("containers.gunicorn.pre_fork", "ApplicationPreFork"),
            ("containers.gunicorn.spawn_worker", "ApplicationPostForkParent"),
        })
        # when_ready after on_starting: no second master-start
        gunicorn.when_ready(server)
        self.assertEqual(self.capture.names.count("master-start"), 1)

    def test_ids_and_respawns(self):
        server = self.arbiter()
        pids = [server.spawn_worker() for _ in range(3)]
        server.reap(pids[1], status=signal.SIGKILL)
        new = server.spawn_worker()
        worker = server.WORKERS[new]
        self.assertEqual((worker._forksafe_id, worker._forksafe_respawn), (2, 1))
        death = self.capture.payloads[-3]
        self.assertEqual(death["event"], "child-death")
        self.assertEqual(death["child"], {"kind": "worker", "id": 2, "pid": pids[1],
                                          "respawn": 0, "status": 9, "signal": 9,
                                          "cause": "signal"})
        self.assertEqual(self.capture.payloads[-2]["child"],
                         {"kind": "worker", "id": 2, "respawn": 1})

    def test_worker_exit_completed_is_no_child_death(self):
        server = self.arbiter()
        pid = server.spawn_worker()
        gunicorn._shared_set(1, 0, 1)  # what the worker's worker_exit leaves
        server.reap(pid, status=0)
        self.assertNotIn("child-death", self.capture.names)

    def test_worker_gone_before_its_signal(self):
        # gunicorn calls worker_exit in the arbiter for a worker it could not
        # signal (ESRCH): a death nobody saw, status unknown
        server = self.arbiter()
        pid = server.spawn_worker()
        worker = server.WORKERS.pop(pid)
        gunicorn.worker_exit(server, worker)
        self.assertEqual(self.capture.payloads[-1]["event"], "child-death")
        self.assertEqual(self.capture.payloads[-1]["child"],
                         {"kind": "worker", "id": 1, "pid": pid, "respawn": 0,
                          "cause": "unknown"})

    def test_reasons_written_by_the_arbiter(self):
        server = self.arbiter()
        pids = [server.spawn_worker() for _ in range(4)]
        server.kill_worker(pids[0], signal.SIGTERM)  # TTOU: fewer workers
        server.kill_worker(pids[1], signal.SIGABRT)  # worker timeout
        gunicorn.on_reload(server)
        server.kill_worker(pids[2], signal.SIGTERM)  # an old worker after HUP
        server.stop()
        reasons = [gunicorn._exit_reason(server.WORKERS[pid]) for pid in pids]
        self.assertEqual(reasons, ["cheaper", "harakiri", "reload", "shutdown"])
        self.assertEqual(self.capture.names[-3:], ["post-fork-parent", "master-exit",
                                                   "master-start"])
        self.assertEqual(self.capture.payloads[-1]["generation"], 1)
        self.assertEqual(self.capture.payloads[-2]["reason"], "reload")

    def test_reasons_a_worker_finds_itself(self):
        worker = FakeWorker(1, 0, None, None)
        worker._forksafe_id = 7
        self.assertEqual(gunicorn._exit_reason(worker), "exit")
        worker.max_requests, worker.nr = 100, 100
        self.assertEqual(gunicorn._exit_reason(worker), "max-requests")

    def test_worker_events_and_the_replay_without_preload(self):
        server = self.arbiter(preload=False)
        pid = server.spawn_worker()
        self.assertEqual(self.recorder.events, [], "no registry exists in the arbiter")
        worker = self.as_worker(server, pid)
        self.assertEqual(self.capture.names[-1], "post-fork")
        self.assertEqual(self.capture.payloads[-1]["process"]["kind"], "worker")
        self.assertEqual(self.capture.payloads[-1]["process"]["id"], 1)
        # gunicorn loads the app in the worker, then post_worker_init
        worker.wsgi = server.app.callable = self.app
        gunicorn.post_worker_init(worker)
        self.assertEqual([(e.name, e.replayed) for e in self.recorder.events],
                         [("post-fork", True), ("worker-ready", False)])
        gunicorn.worker_exit(server, worker)
        self.assertEqual(self.recorder.events[-1].payload["reason"], "exit")
        self.assertEqual(gunicorn._shared_get(1, 0), 1, "worker-exit completed")
        self.assertEqual(self.app.registry.pyramid_forksafe["executed_hooks"], {
            ("containers.gunicorn.post_fork_replay", "ApplicationPostFork"),
            ("containers.gunicorn.post_worker_init", "ApplicationPostWorkerInit"),
            ("containers.gunicorn.worker_exit", "ApplicationWorkerExit"),
        })

    def test_included_registries_hear_through_forksafe(self):
        runtime = gunicorn.install_runtime()
        self.assertEqual(runtime.container, "gunicorn")
        server = self.arbiter()
        # make_app() included pyramid_forksafe after _forksafe existed
        self.assertEqual(self.app.registry.pyramid_forksafe["status"],
                         "forksafe listener configured")
        self.assertEqual(self.app.registry.pyramid_forksafe["environment"], "gunicorn")
        server.spawn_worker()
        self.assertEqual(self.recorder.names, ["master-start", "pre-fork", "post-fork-parent"])
        self.assertEqual(sorted(runtime.delivered),
                         ["master-start", "post-fork-parent", "pre-fork"])

    def test_subscriber_failure_follows_on_error(self):
        self.capture = Capture(self)
        app, recorder = make_app()

        def boom(event):
            raise RuntimeError("subscriber failed")

        app.registry.registerHandler(boom, (events.ApplicationPostForkParent,))
        gunicorn.configure(on_error="fatal")
        server = FakeArbiter(App(app))
        gunicorn.on_starting(server)
        with mock.patch.object(gunicorn.os, "kill") as kill, \
                mock.patch.object(gunicorn.sys, "stderr") as stderr:
            server.spawn_worker()
        kill.assert_called_once_with(os.getpid(), signal.SIGINT)
        written = "".join(c.args[0] for c in stderr.write.call_args_list)
        self.assertIn("pyramid_forksafe subscriber failed on post-fork-parent in master 0", written)
        self.assertIn("RuntimeError: subscriber failed", written)
        self.assertIn("on-error=fatal: stopping gunicorn", written)

    def test_policy_in_the_arbiter(self):
        server = self.arbiter()
        with mock.patch.object(gunicorn.os, "kill") as kill, mock.patch.object(gunicorn, "_say"):
            gunicorn._apply(fs_host.LOG, "pre-fork", server)
            kill.assert_not_called()
            gunicorn._apply(fs_host.EXIT, "pre-fork", server)  # exit acts as fatal here
            kill.assert_called_once_with(os.getpid(), signal.SIGINT)
            with self.assertRaises(SystemExit) as caught:
                gunicorn._apply(fs_host.FATAL, "master-start", server)
            self.assertEqual(caught.exception.code, 1)
        with self.assertRaises(SystemExit):
            gunicorn.on_exit(server)  # a fatal policy stopped it: exit status 1

    def test_policy_in_a_worker(self):
        server = self.arbiter()
        pid = server.spawn_worker()
        self.as_worker(server, pid)
        gunicorn._state.master_pid = 424242
        with mock.patch.object(gunicorn.os, "kill") as kill, mock.patch.object(gunicorn, "_say"):
            with self.assertRaises(SystemExit):
                gunicorn._apply(fs_host.EXIT, "worker-ready", server)
            kill.assert_not_called()
            gunicorn._apply(fs_host.EXIT, "worker-exit", server)  # already exiting
            kill.assert_not_called()
            with self.assertRaises(SystemExit):
                gunicorn._apply(fs_host.FATAL, "post-fork", server)
            kill.assert_called_once_with(424242, signal.SIGINT)
            gunicorn._apply(fs_host.FATAL, "worker-exit", server)  # no SystemExit
        self.assertTrue(gunicorn._shared_fatal())

    def test_a_delivery_during_a_delivery_waits(self):
        server = self.arbiter()
        pid = server.spawn_worker()
        order = []

        def during(event):
            order.append(("start", event.name))
            if event.name == "pre-fork":
                # SIGCHLD: gunicorn's handler reaps a worker in the middle
                server.reap(pid, status=signal.SIGKILL)
            order.append(("end", event.name))

        self.app.registry.registerHandler(during, (events.ApplicationPreFork,))
        self.app.registry.registerHandler(during, (events.ApplicationChildDeath,))
        server.spawn_worker()
        self.assertEqual(order, [("start", "pre-fork"), ("end", "pre-fork"),
                                 ("start", "child-death"), ("end", "child-death")])

    def test_bad_configuration_stops_the_start(self):
        self.capture = Capture(self)
        gunicorn.configure(subscriptions=["post_fork exec:true"])
        server = FakeArbiter(App(None, loader=self.fail_load))
        with mock.patch.object(gunicorn, "_say") as say:
            with self.assertRaises(SystemExit) as caught:
                gunicorn.on_starting(server)
        self.assertEqual(caught.exception.code, 1)
        say.assert_called_once_with(
            "forksafe_subscribe:1: unknown event 'post_fork' (did you mean 'post-fork'?)")


if __name__ == "__main__":
    unittest.main()
