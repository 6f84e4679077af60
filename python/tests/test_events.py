"""The events and interfaces: pyramid_forksafe 0.2's API, and one class per
forksafe event."""
import os
import re
import unittest

from forksafe_support import REPO_ROOT, make_config, payload

from zope.interface.verify import verifyObject

import pyramid_forksafe
import pyramid_forksafe.core
from pyramid_forksafe import events, interfaces

FORKSAFE_NAMES = (
    "master-start",
    "pre-fork",
    "post-fork",
    "post-fork-parent",
    "worker-ready",
    "worker-exit",
    "child-death",
    "master-exit",
    "generation-ready",
)

CLASSES = {
    "master-start": ("ApplicationMasterStart", "IApplicationMasterStart"),
    "pre-fork": ("ApplicationPreFork", "IApplicationPreFork"),
    "post-fork": ("ApplicationPostFork", "IApplicationPostFork"),
    "post-fork-parent": ("ApplicationPostForkParent", "IApplicationPostForkParent"),
    "worker-ready": ("ApplicationPostWorkerInit", "IApplicationPostWorkerInit"),
    "worker-exit": ("ApplicationWorkerExit", "IApplicationWorkerExit"),
    "child-death": ("ApplicationChildDeath", "IApplicationChildDeath"),
    "master-exit": ("ApplicationMasterExit", "IApplicationMasterExit"),
    "generation-ready": ("ApplicationGenerationReady", "IApplicationGenerationReady"),
}


class TestCompatibility02(unittest.TestCase):
    """What code written for pyramid_forksafe 0.2 uses."""

    def setUp(self):
        self.registry = make_config(include=None).registry

    def test_constructors_take_the_registry(self):
        for cls in (events.ApplicationPreFork, events.ApplicationPostFork,
                    events.ApplicationPostWorkerInit):
            event = cls(self.registry)
            self.assertIs(event.registry, self.registry)
            self.assertIs(event.registry.settings, self.registry.settings)
            # The documented minimal payload of a 0.2-style construction.
            self.assertEqual(
                event.payload, {"event": cls.name, "container": None, "synthesized": True}
            )
            self.assertFalse(event.replayed)

    def test_interfaces(self):
        pairs = (
            (events.ApplicationPreFork, interfaces.IApplicationPreFork),
            (events.ApplicationPostFork, interfaces.IApplicationPostFork),
            (events.ApplicationPostWorkerInit, interfaces.IApplicationPostWorkerInit),
        )
        for cls, iface in pairs:
            self.assertTrue(iface.implementedBy(cls))
            event = cls(self.registry)
            self.assertTrue(iface.providedBy(event))
            self.assertIn("registry", iface)  # 0.2's attribute
            verifyObject(iface, event)

    def test_public_names(self):
        self.assertTrue(callable(pyramid_forksafe.includeme))
        self.assertTrue(callable(pyramid_forksafe.registry_setup))
        self.assertRegex(pyramid_forksafe.__VERSION__, r"^\d+\.\d+")
        from pyramid_forksafe.containers import gunicorn, uwsgi

        for name in ("includeme", "configure"):
            self.assertTrue(callable(getattr(uwsgi, name)))
        for name in ("mark_configured", "pre_fork", "post_fork", "post_worker_init"):
            self.assertTrue(callable(getattr(gunicorn, name)))

    def test_registry_setup_takes_a_configurator(self):
        config = make_config(include=None)
        state = pyramid_forksafe.registry_setup(config)
        self.assertIs(state, config.registry.pyramid_forksafe)
        self.assertEqual(state["status"], "attempting auto-configure")
        self.assertEqual(state["autoconfigure.log"], [])
        self.assertIsNone(state["environment"])
        self.assertEqual(state["executed_hooks"], set())

    def test_registry_setup_keeps_an_existing_dict(self):
        config = make_config(include=None)
        state = pyramid_forksafe.registry_setup(config)
        state["executed_hooks"].add(("x", "ApplicationPostFork"))
        self.assertIs(pyramid_forksafe.registry_setup(config.registry), state)
        self.assertEqual(state["executed_hooks"], {("x", "ApplicationPostFork")})


class TestEveryEvent(unittest.TestCase):
    def setUp(self):
        self.registry = make_config(include=None).registry

    def test_mapping_has_every_forksafe_event_in_order(self):
        self.assertEqual(tuple(events.EVENTS), FORKSAFE_NAMES)
        self.assertEqual(events.EVENT_NAMES, FORKSAFE_NAMES)
        self.assertIs(pyramid_forksafe.EVENTS, events.EVENTS)

    def test_names_match_the_c_header(self):
        header = os.path.join(REPO_ROOT, "include", "forksafe.h")
        if not os.path.exists(header):
            self.skipTest("not in a forksafe checkout")
        with open(header) as f:
            text = f.read()
        block = text[text.index("#define FORKSAFE_EVENTS(X)"):]
        block = block[: block.index("typedef")]
        self.assertEqual(tuple(re.findall(r'X\(FORKSAFE_\w+, "([a-z-]+)"\)', block)),
                         FORKSAFE_NAMES)

    def test_one_class_and_interface_per_event(self):
        for name, (class_name, iface_name) in CLASSES.items():
            cls = getattr(events, class_name)
            iface = getattr(interfaces, iface_name)
            self.assertIs(events.EVENTS[name], cls)
            self.assertEqual(cls.name, name)
            self.assertTrue(issubclass(cls, events.ForksafeEvent))
            self.assertTrue(iface.implementedBy(cls))
            self.assertTrue(iface.isOrExtends(interfaces.IForksafeEvent))
            event = cls(self.registry, payload=payload(name))
            verifyObject(iface, event)
            verifyObject(interfaces.IForksafeEvent, event)
            # No event provides another event's interface.
            for other_name, (_, other_iface) in CLASSES.items():
                if other_name != name:
                    self.assertFalse(getattr(interfaces, other_iface).providedBy(event))

    def test_payload_keyword(self):
        sent = payload("child-death", kind="master", id=0,
                       child={"kind": "worker", "id": 2, "pid": 99, "cause": "signal"})
        event = events.ApplicationChildDeath(self.registry, payload=sent)
        self.assertIs(event.payload, sent)
        self.assertEqual(event.payload["child"]["cause"], "signal")
        replayed = events.ApplicationPostFork(self.registry, payload("post-fork"), replayed=True)
        self.assertTrue(replayed.replayed)
        self.assertIn("replayed", repr(replayed))

    def test_generation_ready_carries_the_workers(self):
        sent = payload("generation-ready", kind="master", id=0)
        sent["workers"] = [{"id": 1, "pid": 101, "ms": 40}, {"id": 2, "pid": 102, "ms": 55}]
        sent["elapsed_ms"] = 70
        config = make_config(include=None)
        heard = []
        config.add_subscriber(heard.append, interfaces.IApplicationGenerationReady)
        config.commit()
        event = pyramid_forksafe.core.dispatch(config.registry, sent)
        self.assertEqual(heard, [event])
        self.assertIsInstance(event, events.ApplicationGenerationReady)
        self.assertEqual([w["pid"] for w in event.payload["workers"]], [101, 102])
        self.assertEqual(event.payload["elapsed_ms"], 70)

    def test_payload_of_another_event_is_refused(self):
        with self.assertRaises(ValueError):
            events.ApplicationPostFork(self.registry, payload=payload("pre-fork"))

    def test_worker_ready_aliases(self):
        self.assertIs(events.ApplicationWorkerReady, events.ApplicationPostWorkerInit)
        self.assertIs(interfaces.IApplicationWorkerReady, interfaces.IApplicationPostWorkerInit)


if __name__ == "__main__":
    unittest.main()
