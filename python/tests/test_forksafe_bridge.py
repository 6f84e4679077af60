"""The contract with the forksafe C plugin: the `_forksafe` module
(`version`, `container`, `listeners`, `delivered`), here created by the test
exactly as lib/python_bridge.c creates it, and walked as the plugin walks it."""
import gc
import os
import unittest
import weakref

from forksafe_support import (
    ModulesTestCase,
    Recorder,
    bridge_deliver,
    make_app,
    make_config,
    payload,
)

import pyramid_forksafe
from pyramid_forksafe import core, events
from pyramid_forksafe.containers import uwsgi as fs_uwsgi
from pyramid_forksafe.interfaces import IForksafeEvent

LIFE_OF_A_WORKER = [
    payload("master-start", kind="master", id=0),
    payload("pre-fork", kind="master", id=0, child={"kind": "worker", "id": 1, "respawn": 0}),
    payload("post-fork"),
    payload("post-fork-parent", kind="master", id=0,
            child={"kind": "worker", "id": 1, "pid": 4243, "respawn": 0}),
    payload("worker-ready"),
    payload("worker-exit", reason="shutdown"),
    payload("child-death", kind="master", id=0,
            child={"kind": "worker", "id": 1, "pid": 4243, "respawn": 0,
                   "status": 9, "signal": 9, "cause": "signal"}),
    payload("master-exit", kind="master", id=0, reason="shutdown"),
    payload("generation-ready", kind="master", id=0, elapsed_ms=12,
            workers=[{"id": 1, "pid": 4243, "ms": 10}]),
]


class BridgeTestCase(ModulesTestCase):
    def setUp(self):
        super().setUp()
        self.runtime = self.install_forksafe()

    def deliver(self, event_payload):
        bridge_deliver(self.runtime, event_payload)


class TestListener(BridgeTestCase):
    def test_include_appends_one_listener(self):
        app, _ = make_app()
        self.assertEqual(len(self.runtime.listeners), 1)
        self.assertIs(core.listener_of(self.runtime.listeners[0]).registry, app.registry)
        state = app.registry.pyramid_forksafe
        self.assertEqual(state["environment"], "uWSGI")
        self.assertEqual(state["mechanism"], "forksafe")
        self.assertEqual(state["status"], "forksafe listener configured")
        self.assertIn("forksafe %s available (uwsgi)" % pyramid_forksafe.__version__,
                      state["autoconfigure.log"])

    def test_every_event_is_delivered(self):
        app, recorder = make_app()
        for sent in LIFE_OF_A_WORKER:
            self.deliver(sent)
        self.assertEqual(recorder.names, list(events.EVENTS))
        for event, sent in zip(recorder.events, LIFE_OF_A_WORKER):
            self.assertIsInstance(event, events.EVENTS[sent["event"]])
            self.assertEqual(event.payload, sent)
            self.assertIs(event.registry, app.registry)
            self.assertFalse(event.replayed)
        self.assertEqual(
            app.registry.pyramid_forksafe["executed_hooks"],
            {(fs_uwsgi.LISTENER_SOURCE, cls.__name__) for cls in events.EVENTS.values()},
        )

    def test_unknown_events_are_ignored(self):
        app, recorder = make_app()
        self.deliver(payload("worker-sleep"))
        self.runtime.listeners[0]("not a payload")
        self.assertEqual(recorder.events, [])
        self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"], set())

    def test_subscriber_exception_reaches_the_plugin(self):
        config = make_config()

        def broken(event):
            raise RuntimeError("pool dispose failed")

        config.add_subscriber(broken, events.ApplicationPostFork)
        config.make_wsgi_app()
        with self.assertRaisesRegex(RuntimeError, "pool dispose failed"):
            self.runtime.listeners[0](payload("post-fork"))

    def test_other_containers_name_the_environment(self):
        self.runtime.container = "gunicorn"
        app, _ = make_app()
        self.assertEqual(app.registry.pyramid_forksafe["environment"], "gunicorn")


class TestSeveralApplications(BridgeTestCase):
    def test_each_registry_hears_every_event_in_list_order(self):
        heard = []
        foreign_before = lambda p: heard.append(("before", p["event"]))  # noqa: E731
        self.runtime.listeners.append(foreign_before)
        apps = []
        for name in ("a", "b", "c"):
            config = make_config({"name": name})
            config.add_subscriber(
                lambda event: heard.append((event.registry.settings["name"], event.name)),
                IForksafeEvent,
            )
            apps.append(config.make_wsgi_app())
        self.runtime.listeners.append(lambda p: heard.append(("after", p["event"])))
        self.assertEqual(len(self.runtime.listeners), 5)
        for sent in LIFE_OF_A_WORKER[:3]:
            self.deliver(sent)
        expected = []
        for sent in LIFE_OF_A_WORKER[:3]:
            expected += [(who, sent["event"]) for who in ("before", "a", "b", "c", "after")]
        self.assertEqual(heard, expected)
        for app in apps:
            self.assertEqual(len(app.registry.pyramid_forksafe["executed_hooks"]), 3)

    def test_applications_cannot_change_each_others_payload(self):
        config = make_config()

        def vandal(event):
            event.payload["settings"].clear()
            event.payload["process"]["pid"] = 0

        config.add_subscriber(vandal, events.ApplicationPostFork)
        config.make_wsgi_app()
        _, recorder = make_app()
        sent = payload("post-fork")
        self.deliver(sent)
        self.assertEqual(recorder.events[0].payload, payload("post-fork"))
        self.assertEqual(self.runtime.delivered["post-fork"], payload("post-fork"))


class TestWeakReferences(BridgeTestCase):
    def test_a_dropped_application_is_collected_and_unlisted(self):
        app, recorder = make_app()
        keep, kept = make_app()
        listener = self.runtime.listeners[0]
        ref = weakref.ref(app.registry)
        del app
        gc.collect()
        self.assertIsNone(ref())
        self.assertEqual([core.listener_of(item).registry for item in self.runtime.listeners],
                         [keep.registry])
        self.assertIsNone(listener(payload("post-fork")))  # inert if still called
        self.deliver(payload("post-fork"))
        self.assertEqual(recorder.events, [])
        self.assertEqual(kept.names, ["post-fork"])

    def test_collected_during_a_delivery(self):
        # A garbage collection inside a delivery must not shift the list the
        # plugin is walking: the dead listener stays (inert) until the next
        # include prunes it.
        heard = []
        config = make_config()
        doomed = {}

        def drop_b(event):
            heard.append("a")
            doomed.clear()
            gc.collect()

        config.add_subscriber(drop_b, events.ApplicationPostFork)
        config.make_wsgi_app()
        doomed["app"], recorder_b = make_app()
        ref = weakref.ref(doomed["app"].registry)
        config_c = make_config()
        config_c.add_subscriber(lambda event: heard.append("c"), events.ApplicationPostFork)
        config_c.make_wsgi_app()
        self.assertEqual(len(self.runtime.listeners), 3)
        self.deliver(payload("post-fork"))
        self.assertIsNone(ref())
        self.assertEqual(heard, ["a", "c"])
        self.assertEqual(recorder_b.events, [])
        self.assertEqual(len(self.runtime.listeners), 3)
        make_app()
        self.assertEqual(len(self.runtime.listeners), 3)  # pruned one, added one
        self.assertTrue(all(core.listener_of(item).registry is not None
                            for item in self.runtime.listeners))

    def test_listener_does_not_keep_the_registry_alive(self):
        app, _ = make_app()
        ref = weakref.ref(app.registry)
        listeners = list(self.runtime.listeners)  # the plugin's own reference
        del app
        gc.collect()
        self.assertIsNone(ref())
        self.assertEqual(len(listeners), 1)


class TestLazyAppsReplay(BridgeTestCase):
    """With lazy-apps the worker loads the application after its post-fork
    was delivered: it is replayed when the application is created."""

    def test_post_fork_is_replayed_then_worker_ready_arrives_live(self):
        self.deliver(payload("post-fork"))  # before the app exists
        config = make_config()  # include
        recorder = Recorder()
        config.add_subscriber(recorder, IForksafeEvent)  # after the include
        self.assertEqual(recorder.events, [])
        app = config.make_wsgi_app()
        self.assertEqual(recorder.names, ["post-fork"])
        self.assertTrue(recorder.events[0].replayed)
        self.assertEqual(recorder.events[0].payload, payload("post-fork"))
        self.deliver(payload("worker-ready"))
        self.assertEqual(recorder.names, ["post-fork", "worker-ready"])
        self.assertFalse(recorder.events[1].replayed)
        self.assertEqual(app.registry.pyramid_forksafe["executed_hooks"], {
            (fs_uwsgi.REPLAY_SOURCE, "ApplicationPostFork"),
            (fs_uwsgi.LISTENER_SOURCE, "ApplicationPostWorkerInit"),
        })

    def test_every_lazy_application_gets_the_replay(self):
        self.deliver(payload("post-fork"))
        recorders = [make_app()[1] for _ in range(3)]
        for recorder in recorders:
            self.assertEqual(recorder.names, ["post-fork"])

    def test_preloaded_application_has_nothing_to_replay(self):
        self.deliver(payload("master-start", kind="master", id=0))
        _, recorder = make_app()
        self.assertEqual(recorder.events, [])

    def test_no_replay_of_another_process_post_fork(self):
        self.deliver(payload("post-fork", pid=os.getpid() + 1))
        _, recorder = make_app()
        self.assertEqual(recorder.events, [])

    def test_no_replay_after_a_live_delivery(self):
        config = make_config()
        recorder = Recorder()
        config.add_subscriber(recorder, events.ApplicationPostFork)
        config.commit()
        self.deliver(payload("post-fork"))  # heard live, before make_wsgi_app
        config.make_wsgi_app()
        config.make_wsgi_app()
        self.assertEqual(len(recorder.events), 1)
        self.assertFalse(recorder.events[0].replayed)

    def test_replayed_once_per_registry(self):
        self.deliver(payload("post-fork"))
        config = make_config()
        config.include("pyramid_forksafe.containers.uwsgi")
        recorder = Recorder()
        config.add_subscriber(recorder, events.ApplicationPostFork)
        config.make_wsgi_app()
        config.make_wsgi_app()
        self.assertEqual(len(recorder.events), 1)


if __name__ == "__main__":
    unittest.main()
