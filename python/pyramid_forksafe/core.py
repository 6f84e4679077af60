"""What every container shares: the state dict on the registry, dispatch,
and the listener that delivers events to one registry held weakly."""
import copy
import logging
import os
import time
import weakref
from collections.abc import Mapping

from .events import EVENTS

log = logging.getLogger("pyramid_forksafe")

#: the registry attribute that keeps the registry's one listener.
_LISTENER_ATTRIBUTE = "_pyramid_forksafe_listener"

#: how many deliveries are running in this process (see _registry_gone).
_delivering = 0

#: The hook recorded in ``executed_hooks`` for an event that a server
#: adapter of the forksafe package dispatched, by the payload's
#: "container": gunicorn's hooks as 0.2 named them, and Celery's adapter.
#: Under uWSGI the listener records its own source (containers.uwsgi).
ADAPTER_SOURCES = {
    "gunicorn": {
        "master-start": "containers.gunicorn.on_starting",
        "pre-fork": "containers.gunicorn.pre_fork",
        "post-fork": "containers.gunicorn.post_fork",
        "post-fork-parent": "containers.gunicorn.spawn_worker",
        "worker-ready": "containers.gunicorn.post_worker_init",
        "worker-exit": "containers.gunicorn.worker_exit",
        "child-death": "containers.gunicorn.child_exit",
        "master-exit": "containers.gunicorn.on_exit",
        "generation-ready": "containers.gunicorn.manage_workers",
    },
    "celery": dict.fromkeys(EVENTS, "containers.celery"),
}
#: ... and for a post-fork replayed to an application loaded after it.
ADAPTER_REPLAY_SOURCES = {
    "gunicorn": "containers.gunicorn.post_fork_replay",
    "celery": "containers.celery",
}


def source_of(payload, default, replayed=False):
    """The source ``executed_hooks`` records for PAYLOAD: the server
    adapter's hook for it, else DEFAULT."""
    if not isinstance(payload, Mapping):
        return default
    container = payload.get("container")
    if replayed:
        return ADAPTER_REPLAY_SOURCES.get(container, default)
    return ADAPTER_SOURCES.get(container, {}).get(payload.get("event"), default)


def _new_state():
    return {
        # pyramid_forksafe 0.2's keys, same meaning:
        "status": "attempting auto-configure",  # what the auto-configuration did
        "autoconfigure.log": [],  # its steps, human readable
        "environment": None,  # "uWSGI", "gunicorn" or None
        "executed_hooks": set(),  # {(hook, event class name)} delivered here
        # new: how events reach the registry ("forksafe", "uwsgidecorators",
        # "gunicorn-hooks" or None).
        "mechanism": None,
    }


def state_of(registry):
    """Returns ``registry.pyramid_forksafe``, creating it if needed (and
    completing a dict made by another version)."""
    state = getattr(registry, "pyramid_forksafe", None)
    if not isinstance(state, dict):
        state = _new_state()
        registry.pyramid_forksafe = state
    else:
        for key, value in _new_state().items():
            state.setdefault(key, value)
    return state


def registry_setup(config):
    """pyramid_forksafe 0.2's set-up: puts the state dict on the registry.

    Takes a Configurator (as 0.2 did) or a registry.  Unlike 0.2 an existing
    dict is kept, so including the package twice loses nothing."""
    log.debug("registry_setup")
    return state_of(getattr(config, "registry", config))


def make_payload(event, container=None, kind=None, id=None, **extra):
    """A payload built in Python, for containers that have no forksafe
    plugin: the keys that can be known here, and ``"synthesized": True``."""
    payload = {
        "event": event,
        "container": container,
        "process": {"kind": kind, "id": id, "pid": os.getpid(), "ppid": os.getppid()},
        "time": time.time(),
        "synthesized": True,
    }
    payload.update(extra)
    return payload


def dispatch(registry, payload, source="dispatch", replayed=False):
    """Builds the event for ``payload["event"]``, notifies ``registry`` and
    records ``(source, event class name)`` in the registry's
    ``pyramid_forksafe["executed_hooks"]`` (after the subscribers ran, as 0.2
    did).  Returns the event.

    The event gets a deep copy of ``payload``.  A subscriber's exception
    propagates (the forksafe plugin logs it and applies its on-error policy).
    Raises ``ValueError`` for a name that is not a forksafe event."""
    if not isinstance(payload, Mapping):
        raise TypeError("a forksafe payload is a mapping, not %r" % type(payload).__name__)
    name = payload.get("event")
    cls = EVENTS.get(name)
    if cls is None:
        raise ValueError("%r is not a forksafe event (one of: %s)" % (name, ", ".join(EVENTS)))
    event = cls(registry, copy.deepcopy(dict(payload)), replayed=replayed)
    registry.notify(event)
    state_of(registry)["executed_hooks"].add((source, cls.__name__))
    return event


class RegistryListener(object):
    """Delivers forksafe payloads to one registry, which it holds weakly.

    Called with a payload (the ``_forksafe.listeners`` contract) it
    dispatches with the source of the server adapter that dispatched it
    (:data:`ADAPTER_SOURCES`), else ``self.source``; payloads of events this
    version does not know are ignored.  When the registry is garbage collected the listener
    takes itself out of the lists it was attached to, and until then (or if
    that cannot be done safely) it does nothing."""

    def __init__(self, registry, source="dispatch"):
        self.source = source
        #: event name -> pid of the process it was last delivered in.
        self.heard = {}
        self._attached = []
        self._ref = weakref.ref(registry, self._registry_gone)

    @property
    def registry(self):
        return self._ref()

    def __call__(self, payload):
        return self.deliver(payload, source_of(payload, self.source))

    def deliver(self, payload, source, replayed=False):
        global _delivering
        registry = self._ref()
        if registry is None:
            return None
        name = payload.get("event") if isinstance(payload, Mapping) else None
        if name not in EVENTS:
            log.debug("ignoring %r: not an event this pyramid_forksafe knows", name)
            return None
        # Before the subscribers run: a failed delivery is not replayed.
        self.heard[name] = os.getpid()
        _delivering += 1
        try:
            return dispatch(registry, payload, source=source, replayed=replayed)
        finally:
            _delivering -= 1

    def replay(self, payload, source):
        """Delivers an event that happened before the registry existed,
        unless this listener already delivered that event in this process or
        the payload is another process's.  Returns the event or None."""
        if not isinstance(payload, Mapping):
            return None
        pid = os.getpid()
        process = payload.get("process")
        if isinstance(process, Mapping) and process.get("pid", pid) != pid:
            return None
        if self.heard.get(payload.get("event")) == pid:
            return None
        return self.deliver(payload, source, replayed=True)

    def attach(self, sequence, item=None):
        """Appends ``item`` (default: the listener) to the list ``sequence``
        unless it is there, and remembers to remove it when the registry goes."""
        item = self if item is None else item
        if not any(existing is item for existing in sequence):
            sequence.append(item)
        if not any(s is sequence and i is item for s, i in self._attached):
            self._attached.append((sequence, item))

    def detach(self):
        attached, self._attached = self._attached, []
        for sequence, item in attached:
            _remove(sequence, item)

    def _registry_gone(self, _ref):
        # The registry can be collected while a list of listeners is being
        # walked (a garbage collection during a delivery); removing an item
        # then would make the walker skip the next one.  The dead listener
        # stays inert until prune() runs at the next attach.
        if not _delivering:
            self.detach()


def listener_for(registry):
    """The registry's one listener (made on first use): several includes,
    or several mechanisms, never deliver an event twice to one registry."""
    listener = registry.__dict__.get(_LISTENER_ATTRIBUTE)
    if listener is None or listener.registry is not registry:
        listener = RegistryListener(registry)
        setattr(registry, _LISTENER_ATTRIBUTE, listener)
    return listener


def listener_of(item):
    """The RegistryListener behind an item of a hook list, or None: the
    listener itself, an object with a ``listener`` attribute, or either
    wrapped by ``uwsgidecorators.postfork`` (which keeps it as ``f``)."""
    for candidate in (item, getattr(item, "f", None)):
        if isinstance(candidate, RegistryListener):
            return candidate
        inner = getattr(candidate, "listener", None)
        if isinstance(inner, RegistryListener):
            return inner
    return None


def prune(sequence):
    """Removes from ``sequence`` the listeners whose registry is gone."""
    for item in list(sequence):
        listener = listener_of(item)
        if listener is not None and listener.registry is None:
            _remove(sequence, item)


def _remove(sequence, item):
    for index, existing in enumerate(sequence):
        if existing is item:
            del sequence[index]
            return


__all__ = (
    "dispatch",
    "listener_for",
    "make_payload",
    "prune",
    "registry_setup",
    "source_of",
    "state_of",
    "RegistryListener",
)
