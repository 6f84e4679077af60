"""Including the package outside any server, the ways of including it, and
0.2's behaviour when the auto-configuration fails."""
import sys
import unittest

from forksafe_support import ModulesTestCase, Recorder, make_app, make_config

from pyramid.config import Configurator
from pyramid.request import Request

from pyramid_forksafe.events import ApplicationPostFork


class TestOutsideAnyServer(ModulesTestCase):
    def test_nothing_happens_and_the_status_says_so(self):
        app, recorder = make_app()
        state = app.registry.pyramid_forksafe
        self.assertEqual(set(state), {"status", "autoconfigure.log", "environment",
                                      "executed_hooks", "mechanism"})
        self.assertEqual(state["status"], "no container: no fork events")
        self.assertEqual(state["autoconfigure.log"], ["uWSGI not available"])
        self.assertIsNone(state["environment"])
        self.assertIsNone(state["mechanism"])
        self.assertEqual(state["executed_hooks"], set())
        self.assertNotIn("_forksafe", sys.modules)
        self.assertEqual(recorder.events, [])

    def test_application_serves_requests(self):
        config = make_config()
        config.add_route("home", "/")
        config.add_view(lambda request: request.response, route_name="home")
        app = config.make_wsgi_app()
        self.assertEqual(Request.blank("/").get_response(app).status_code, 200)

    def test_v02_manual_notify(self):
        # pyramid_forksafe 0.2's own test: no hook ran, then a mimicked fork.
        app, recorder = make_app(subscribe=ApplicationPostFork)
        self.assertFalse(app.registry.pyramid_forksafe["executed_hooks"])
        self.assertEqual(recorder.events, [])
        app.registry.notify(ApplicationPostFork(app.registry))
        self.assertEqual(len(recorder.events), 1)


class TestWaysToInclude(ModulesTestCase):
    def test_pyramid_includes_setting(self):
        for spec in ("pyramid_forksafe", "pyramid_forksafe.containers.uwsgi"):
            with self.subTest(include=spec):
                runtime = self.install_forksafe()
                config = Configurator(settings={"pyramid.includes": spec})
                app = config.make_wsgi_app()
                self.assertEqual(app.registry.pyramid_forksafe["environment"], "uWSGI")
                self.assertEqual(len(runtime.listeners), 1)

    def test_config_include_of_the_uwsgi_container(self):
        app, _ = make_app(include="pyramid_forksafe.containers.uwsgi")
        self.assertEqual(app.registry.pyramid_forksafe["status"], "no container: no fork events")

    def test_included_twice_listens_once(self):
        runtime = self.install_forksafe()
        config = Configurator(settings={"pyramid.includes": "pyramid_forksafe"})
        config.include("pyramid_forksafe.containers.uwsgi")
        config.include("pyramid_forksafe")
        recorder = Recorder()
        config.add_subscriber(recorder, ApplicationPostFork)
        app = config.make_wsgi_app()
        self.assertEqual(len(runtime.listeners), 1)
        runtime.listeners[0]({"event": "post-fork"})
        self.assertEqual(len(recorder.events), 1)
        self.assertIs(recorder.events[0].registry, app.registry)


class TestFailedAutoConfiguration(ModulesTestCase):
    def test_a_broken_forksafe_module_does_not_stop_the_application(self):
        broken = self.install_forksafe()
        del broken.listeners
        with self.assertLogs("pyramid_forksafe", "ERROR"):
            app, _ = make_app()
        state = app.registry.pyramid_forksafe
        self.assertEqual(state["status"], "uWSGI error")
        self.assertTrue(state["autoconfigure.log"][-1].startswith("uWSGI error: "))


if __name__ == "__main__":
    unittest.main()
