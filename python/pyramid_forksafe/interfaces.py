"""Interfaces of the pyramid_forksafe events.

Every event interface extends :class:`IForksafeEvent`, so a subscriber
registered for ``IForksafeEvent`` hears every event.  The three interfaces of
pyramid_forksafe 0.2 (``IApplicationPreFork``, ``IApplicationPostFork``,
``IApplicationPostWorkerInit``) keep their names.
"""
from zope.interface import Attribute
from zope.interface import Interface


class IForksafeEvent(Interface):
    """Any fork lifecycle event."""

    registry = Attribute("The registry of the Pyramid application the event is for")
    payload = Attribute(
        "The forksafe payload: a dict with at least 'event' (the event name); "
        "see pyramid_forksafe.events for its keys"
    )
    replayed = Attribute(
        "True when the event happened before the application was created and "
        "is delivered late (lazy-apps post-fork)"
    )


class IApplicationMasterStart(IForksafeEvent):
    """master-start: in the master, configuration loaded, before the first fork."""


class IApplicationPreFork(IForksafeEvent):
    """pre-fork: in the master, right before a worker, mule or spooler is forked."""


class IApplicationPostFork(IForksafeEvent):
    """post-fork: in the child, right after it was forked."""


class IApplicationPostForkParent(IForksafeEvent):
    """post-fork-parent: in the master, after a fork, with the child's pid."""


class IApplicationPostWorkerInit(IForksafeEvent):
    """worker-ready: in a worker, applications loaded, before the first request."""


#: forksafe's name for the same event.
IApplicationWorkerReady = IApplicationPostWorkerInit


class IApplicationWorkerExit(IForksafeEvent):
    """worker-exit: in a worker, mule or spooler that exits gracefully."""


class IApplicationChildDeath(IForksafeEvent):
    """child-death: in the master, a child ended without completing worker-exit."""


class IApplicationMasterExit(IForksafeEvent):
    """master-exit: in the master, on shutdown and before a reload."""


class IApplicationGenerationReady(IForksafeEvent):
    """generation-ready: in the master, every worker of a generation is ready."""


__all__ = (
    "IForksafeEvent",
    "IApplicationMasterStart",
    "IApplicationPreFork",
    "IApplicationPostFork",
    "IApplicationPostForkParent",
    "IApplicationPostWorkerInit",
    "IApplicationWorkerReady",
    "IApplicationWorkerExit",
    "IApplicationChildDeath",
    "IApplicationMasterExit",
    "IApplicationGenerationReady",
)
