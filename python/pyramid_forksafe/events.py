"""The fork lifecycle as Pyramid events.

One class per forksafe event name; :data:`EVENTS` maps the names to the
classes, in forksafe's order (a process's life, then generation-ready,
the instance-wide moment added last).  Every event has:

``registry``
    the registry of the Pyramid application (settings: ``registry.settings``);
``payload``
    a dict.  Delivered by the forksafe uWSGI plugin it is the plugin's payload
    (``event``, ``container``, ``process`` {kind, id, pid, ppid},
    ``generation``, ``respawn``, ``time``, ``settings``, ``global_settings``,
    ``child`` / ``reason`` for the events that have them, ``workers`` and
    ``elapsed_ms`` for generation-ready; see
    ``include/forksafe.h``).  Built in Python (the uwsgidecorators fallback,
    the gunicorn hooks) it has ``event``, ``container``, ``process``, ``time``
    and ``"synthesized": True``.  An event constructed the 0.2 way,
    ``ApplicationPostFork(registry)``, gets the minimal payload
    ``{"event": "post-fork", "container": None, "synthesized": True}``.
    Each event owns its payload: changing it affects no other subscriber of
    another application;
``replayed``
    True when the event happened before the application existed and is
    delivered late (the post-fork of a lazy-apps worker, see the README).

The constructors stay those of pyramid_forksafe 0.2: ``Event(registry)``, with
``payload=`` and ``replayed=`` as new optional keywords.
"""
from zope.interface import implementer

from . import interfaces


@implementer(interfaces.IForksafeEvent)
class ForksafeEvent(object):
    """Base class of every pyramid_forksafe event."""

    #: the forksafe event name ("post-fork"); set on each subclass.
    name = None

    def __init__(self, registry, payload=None, replayed=False):
        if payload is None:
            payload = minimal_payload(self.name)
        elif payload.get("event", self.name) != self.name:
            raise ValueError(
                "%s is the %r event, not %r"
                % (type(self).__name__, self.name, payload.get("event"))
            )
        self.registry = registry
        self.payload = payload
        self.replayed = replayed

    def __repr__(self):
        process = self.payload.get("process") or {}
        return "<%s %s in %s %s (pid %s)%s>" % (
            type(self).__name__,
            self.name,
            process.get("kind"),
            process.get("id"),
            process.get("pid"),
            " replayed" if self.replayed else "",
        )


def minimal_payload(name):
    """The payload of an event built without one (0.2-style construction)."""
    return {"event": name, "container": None, "synthesized": True}


@implementer(interfaces.IApplicationMasterStart)
class ApplicationMasterStart(ForksafeEvent):
    """In the master: configuration loaded (apps preloaded), before the first
    fork; again after every reload."""

    name = "master-start"


@implementer(interfaces.IApplicationPreFork)
class ApplicationPreFork(ForksafeEvent):
    """In the master, right before a worker (mule, spooler) is forked;
    ``payload["child"]`` names it (no pid yet)."""

    name = "pre-fork"


@implementer(interfaces.IApplicationPostFork)
class ApplicationPostFork(ForksafeEvent):
    """In the child, right after the fork: dispose of connection pools,
    reseed RNGs, restart threads here."""

    name = "post-fork"


@implementer(interfaces.IApplicationPostForkParent)
class ApplicationPostForkParent(ForksafeEvent):
    """In the master, after a fork; ``payload["child"]["pid"]`` is the child's pid."""

    name = "post-fork-parent"


@implementer(interfaces.IApplicationPostWorkerInit)
class ApplicationPostWorkerInit(ForksafeEvent):
    """forksafe's ``worker-ready``: in a worker, applications loaded, before
    the first request (0.2's name, from gunicorn's post_worker_init)."""

    name = "worker-ready"


#: forksafe's name for the same class.
ApplicationWorkerReady = ApplicationPostWorkerInit


@implementer(interfaces.IApplicationWorkerExit)
class ApplicationWorkerExit(ForksafeEvent):
    """In a worker, mule or spooler exiting gracefully;
    ``payload["reason"]`` says why."""

    name = "worker-exit"


@implementer(interfaces.IApplicationChildDeath)
class ApplicationChildDeath(ForksafeEvent):
    """In the master: a child ended without completing worker-exit;
    ``payload["child"]`` has its status and cause."""

    name = "child-death"


@implementer(interfaces.IApplicationMasterExit)
class ApplicationMasterExit(ForksafeEvent):
    """In the master, on shutdown and before a reload; ``payload["reason"]``."""

    name = "master-exit"


@implementer(interfaces.IApplicationGenerationReady)
class ApplicationGenerationReady(ForksafeEvent):
    """In the master, once per generation: every worker of it has reached
    worker-ready.  ``payload["workers"]`` lists them ({id, pid, ms from the
    generation's start}), ``payload["elapsed_ms"]`` is the time since
    master-start: register with a load balancer, notify systemd here."""

    name = "generation-ready"


#: forksafe event name -> event class, in forksafe's order.
EVENTS = {
    cls.name: cls
    for cls in (
        ApplicationMasterStart,
        ApplicationPreFork,
        ApplicationPostFork,
        ApplicationPostForkParent,
        ApplicationPostWorkerInit,
        ApplicationWorkerExit,
        ApplicationChildDeath,
        ApplicationMasterExit,
        ApplicationGenerationReady,
    )
}

#: the event names, in forksafe's order.
EVENT_NAMES = tuple(EVENTS)


__all__ = (
    "EVENTS",
    "EVENT_NAMES",
    "ForksafeEvent",
    "ApplicationMasterStart",
    "ApplicationPreFork",
    "ApplicationPostFork",
    "ApplicationPostForkParent",
    "ApplicationPostWorkerInit",
    "ApplicationWorkerReady",
    "ApplicationWorkerExit",
    "ApplicationChildDeath",
    "ApplicationMasterExit",
    "ApplicationGenerationReady",
)
