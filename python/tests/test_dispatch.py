"""dispatch(registry, payload): every forksafe event name, through real
Pyramid subscribers."""
import unittest

from forksafe_support import ModulesTestCase, Recorder, make_app, make_config, payload

from pyramid_forksafe import dispatch, events, interfaces
from pyramid_forksafe.core import make_payload


class TestDispatch(ModulesTestCase):
    def test_every_event_name_reaches_its_subscribers(self):
        for name, cls in events.EVENTS.items():
            with self.subTest(event=name):
                config = make_config({"app.name": "demo"})
                by_class, by_interface, by_any = Recorder(), Recorder(), Recorder()
                iface = getattr(interfaces, "I" + cls.__name__)
                config.add_subscriber(by_class, cls)
                config.add_subscriber(by_interface, iface)
                config.add_subscriber(by_any, interfaces.IForksafeEvent)
                app = config.make_wsgi_app()
                sent = payload(name)
                event = dispatch(app.registry, sent)
                self.assertIsInstance(event, cls)
                for recorder in (by_class, by_interface, by_any):
                    self.assertEqual(recorder.events, [event])
                self.assertIs(event.registry, app.registry)
                self.assertEqual(event.registry.settings["app.name"], "demo")
                self.assertEqual(event.payload, sent)
                self.assertFalse(event.replayed)
                self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"],
                                 {("dispatch", cls.__name__)})

    def test_only_the_matching_class_hears_an_event(self):
        config = make_config()
        post_fork, pre_fork = Recorder(), Recorder()
        config.add_subscriber(post_fork, events.ApplicationPostFork)
        config.add_subscriber(pre_fork, interfaces.IApplicationPreFork)
        app = config.make_wsgi_app()
        for name in events.EVENTS:
            dispatch(app.registry, payload(name))
        self.assertEqual(post_fork.names, ["post-fork"])
        self.assertEqual(pre_fork.names, ["pre-fork"])

    def test_source_and_replayed_are_recorded(self):
        app, recorder = make_app()
        dispatch(app.registry, payload("post-fork"), source="here", replayed=True)
        self.assertTrue(recorder.events[0].replayed)
        self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"],
                         {("here", "ApplicationPostFork")})

    def test_unknown_event_and_bad_payload(self):
        app, recorder = make_app()
        with self.assertRaises(ValueError):
            dispatch(app.registry, payload("post_fork"))
        with self.assertRaises(ValueError):
            dispatch(app.registry, {})
        with self.assertRaises(TypeError):
            dispatch(app.registry, '{"event": "post-fork"}')
        self.assertEqual(recorder.events, [])
        self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"], set())

    def test_event_owns_a_copy_of_the_payload(self):
        app, recorder = make_app()
        sent = payload("post-fork")
        event = dispatch(app.registry, sent)
        event.payload["settings"]["sqlalchemy.url"] = "changed"
        event.payload["process"]["kind"] = "changed"
        self.assertEqual(sent, payload("post-fork"))

    def test_subscriber_exception_propagates_and_is_not_recorded(self):
        config = make_config()

        def broken(event):
            raise RuntimeError("cannot reconnect")

        config.add_subscriber(broken, events.ApplicationPostFork)
        app = config.make_wsgi_app()
        with self.assertRaisesRegex(RuntimeError, "cannot reconnect"):
            dispatch(app.registry, payload("post-fork"))
        self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"], set())

    def test_registry_without_the_include_gets_the_state(self):
        config = make_config(include=None)
        recorder = Recorder()
        config.add_subscriber(recorder, events.ApplicationMasterExit)
        app = config.make_wsgi_app()
        self.assertFalse(hasattr(app.registry, "pyramid_forksafe"))
        dispatch(app.registry, payload("master-exit", kind="master", id=0, reason="shutdown"))
        self.assertEqual(recorder.events[0].payload["reason"], "shutdown")
        state = app.registry.pyramid_forksafe
        self.assertEqual(state["executed_hooks"], {("dispatch", "ApplicationMasterExit")})
        self.assertIsNone(state["environment"])

    def test_make_payload(self):
        made = make_payload("pre-fork", "gunicorn", kind="master", id=0,
                            child={"kind": "worker"})
        self.assertEqual(made["event"], "pre-fork")
        self.assertEqual(made["container"], "gunicorn")
        self.assertEqual(made["process"]["kind"], "master")
        self.assertEqual(made["child"], {"kind": "worker"})
        self.assertTrue(made["synthesized"])
        app, recorder = make_app()
        dispatch(app.registry, made)
        self.assertEqual(recorder.names, ["pre-fork"])


if __name__ == "__main__":
    unittest.main()
