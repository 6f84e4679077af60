"""pyramid_forksafe.containers.gunicorn: 0.2's hooks for a gunicorn config
file.  gunicorn is not needed: the hooks only use `server.app.wsgi()` and
`worker.app.wsgi()`, gunicorn's Application API, given here by a small
stand-in around a real Pyramid application."""
import unittest

from forksafe_support import ModulesTestCase, make_app

from pyramid_forksafe import events
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


if __name__ == "__main__":
    unittest.main()
