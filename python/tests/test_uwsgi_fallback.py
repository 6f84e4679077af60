"""uWSGI without the forksafe plugin: uwsgidecorators.postfork, post-fork
only, with a warning.  A real uWSGI cannot be imported outside uWSGI, so
`uwsgi` is a stand-in module with the functions pyramid_forksafe and
uwsgidecorators call; `uwsgidecorators` is uWSGI 2.0's module itself when it
is installed (Debian: python3-uwsgidecorators), else a stand-in with the
same postfork API.  The integration tests cover the real server."""
import gc
import importlib.util
import os
import shutil
import sys
import tempfile
import types
import unittest
import weakref

from forksafe_support import ModulesTestCase, make_app, make_config

from pyramid_forksafe import events
from pyramid_forksafe.containers import uwsgi as fs_uwsgi

REAL_DECORATORS = importlib.util.find_spec("uwsgidecorators")

# uWSGI 2.0's postfork API (uwsgidecorators.py), for machines without it.
STAND_IN_DECORATORS = '''
import uwsgi

if uwsgi.masterpid() == 0:
    raise Exception("you have to enable the uWSGI master process to use this module")

postfork_chain = []


def postfork_chain_hook():
    for f in postfork_chain:
        f()


uwsgi.post_fork_hook = postfork_chain_hook


class postfork(object):
    def __init__(self, f):
        if callable(f):
            self.wid = 0
            self.f = f
        else:
            self.f = None
            self.wid = f
        postfork_chain.append(self)

    def __call__(self, *args, **kwargs):
        if self.f:
            if self.wid > 0 and self.wid != uwsgi.worker_id():
                return
            return self.f()
        self.f = args[0]
'''


class FakeUwsgi(types.ModuleType):
    """The `uwsgi` module as far as the fallback uses it."""

    def __init__(self, master_pid=4240):
        super().__init__("uwsgi")
        self.current_worker = 0
        self.current_mule = 0
        self.master_pid = master_pid

    def masterpid(self):
        return self.master_pid

    def worker_id(self):
        return self.current_worker

    def mule_id(self):
        return self.current_mule

    def fork_worker(self, worker_id):
        """What happens in a new worker: uWSGI's python plugin calls
        uwsgi.post_fork_hook (installed by uwsgidecorators)."""
        self.current_worker = worker_id
        hook = getattr(self, "post_fork_hook", None)
        if hook is not None:
            hook()


class FallbackTestCase(ModulesTestCase):
    real = False

    def setUp(self):
        super().setUp()
        self.uwsgi = FakeUwsgi()
        sys.modules["uwsgi"] = self.uwsgi
        del sys.modules["uwsgidecorators"]
        if self.real:
            module = importlib.util.module_from_spec(REAL_DECORATORS)
            REAL_DECORATORS.loader.exec_module(module)
        else:
            module = types.ModuleType("uwsgidecorators")
            exec(compile(STAND_IN_DECORATORS, "<uwsgidecorators>", "exec"), module.__dict__)
        sys.modules["uwsgidecorators"] = module
        self.decorators = module

    def make_app_logged(self, **kwargs):
        with self.assertLogs("pyramid_forksafe", "WARNING") as logs:
            result = make_app(**kwargs)
        self.assertIn("falling back to uwsgidecorators.postfork", logs.output[0])
        return result


class TestPreloaded(FallbackTestCase):
    def test_post_fork_in_each_worker(self):
        app, recorder = self.make_app_logged()
        state = app.registry.pyramid_forksafe
        self.assertEqual(state["environment"], "uWSGI")
        self.assertEqual(state["mechanism"], "uwsgidecorators")
        self.assertEqual(state["status"], "uWSGI hook configured")
        self.assertEqual(state["autoconfigure.log"], ["uWSGI available", "uWSGI hook configured"])
        self.assertEqual(len(self.decorators.postfork_chain), 1)
        self.assertEqual(recorder.events, [])  # in the master: nothing yet
        self.uwsgi.fork_worker(1)
        self.assertEqual(recorder.names, ["post-fork"])
        event = recorder.events[0]
        self.assertIsInstance(event, events.ApplicationPostFork)
        self.assertFalse(event.replayed)
        self.assertEqual(event.payload["container"], "uwsgi")
        self.assertTrue(event.payload["synthesized"])
        self.assertEqual(event.payload["process"]["kind"], "worker")
        self.assertEqual(event.payload["process"]["id"], 1)
        self.assertEqual(event.payload["process"]["pid"], os.getpid())
        # Exactly 0.2's record.
        self.assertEqual(state["executed_hooks"],
                         {("containers.uwsgi.post_fork_hook", "ApplicationPostFork")})

    def test_several_applications_warn_once(self):
        apps = [self.make_app_logged()]
        with self.assertNoLogs("pyramid_forksafe", "WARNING"):
            apps.append(make_app())
        self.uwsgi.fork_worker(2)
        for _, recorder in apps:
            self.assertEqual(recorder.names, ["post-fork"])
            self.assertEqual(recorder.events[0].payload["process"]["id"], 2)

    def test_included_twice_hooks_once(self):
        with self.assertLogs("pyramid_forksafe", "WARNING"):
            config = make_config()
        config.include("pyramid_forksafe.containers.uwsgi")
        config.make_wsgi_app()
        self.assertEqual(len(self.decorators.postfork_chain), 1)

    def test_dropped_application_leaves_the_chain(self):
        app, recorder = self.make_app_logged()
        keep, kept = make_app()
        ref = weakref.ref(app.registry)
        del app
        gc.collect()
        self.assertIsNone(ref())
        self.assertEqual(len(self.decorators.postfork_chain), 1)
        self.uwsgi.fork_worker(1)
        self.assertEqual(recorder.events, [])
        self.assertEqual(kept.names, ["post-fork"])


class TestLazyApps(FallbackTestCase):
    def test_post_fork_replayed_when_the_worker_loads_the_app(self):
        self.uwsgi.fork_worker(3)  # uWSGI forked, then loads the app
        app, recorder = self.make_app_logged()
        self.assertEqual(self.decorators.postfork_chain, [])  # would never fire
        self.assertEqual(recorder.names, ["post-fork"])
        event = recorder.events[0]
        self.assertTrue(event.replayed)
        self.assertEqual(event.payload["process"], {
            "kind": "worker", "id": 3, "pid": os.getpid(), "ppid": os.getppid()})
        self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"],
                         {(fs_uwsgi.POST_FORK_REPLAY_SOURCE, "ApplicationPostFork")})

    def test_in_a_mule(self):
        self.uwsgi.current_mule = 1
        _, recorder = self.make_app_logged()
        self.assertEqual(recorder.events[0].payload["process"]["kind"], "mule")


@unittest.skipUnless(REAL_DECORATORS, "uwsgidecorators is not installed (python3-uwsgidecorators)")
class TestPreloadedRealDecorators(TestPreloaded):
    real = True


@unittest.skipUnless(REAL_DECORATORS, "uwsgidecorators is not installed (python3-uwsgidecorators)")
class TestLazyAppsRealDecorators(TestLazyApps):
    real = True


class TestNoDecorators(ModulesTestCase):
    def setUp(self):
        super().setUp()
        sys.modules["uwsgi"] = FakeUwsgi()

    def test_missing_module(self):
        with self.assertLogs("pyramid_forksafe", "WARNING") as logs:
            app, recorder = make_app()
        self.assertIn("no fork events will be delivered", logs.output[0])
        state = app.registry.pyramid_forksafe
        self.assertEqual(state["status"], "uWSGI error")
        self.assertIsNone(state["environment"])

    def test_without_master(self):
        # uwsgidecorators refuses to load without the master process; 0.2
        # recorded that as a "uWSGI error", and so does this version.
        sys.modules["uwsgi"] = FakeUwsgi(master_pid=0)
        del sys.modules["uwsgidecorators"]
        directory = tempfile.mkdtemp()
        self.addCleanup(shutil.rmtree, directory)
        with open(os.path.join(directory, "uwsgidecorators.py"), "w") as f:
            f.write(STAND_IN_DECORATORS)
        sys.path.insert(0, directory)
        self.addCleanup(sys.path.remove, directory)
        with self.assertLogs("pyramid_forksafe", "WARNING"):
            app, _ = make_app()
        state = app.registry.pyramid_forksafe
        self.assertEqual(state["status"], "uWSGI error")
        self.assertEqual(state["autoconfigure.log"], [
            "uWSGI error: you have to enable the uWSGI master process to use this module"])


class TestPluginWins(FallbackTestCase):
    def test_forksafe_module_is_preferred(self):
        runtime = self.install_forksafe()
        with self.assertNoLogs("pyramid_forksafe", "WARNING"):
            app, _ = make_app()
        self.assertEqual(len(runtime.listeners), 1)
        self.assertEqual(self.decorators.postfork_chain, [])
        self.assertEqual(app.registry.pyramid_forksafe["mechanism"], "forksafe")


if __name__ == "__main__":
    unittest.main()
