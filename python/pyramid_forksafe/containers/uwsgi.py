"""uWSGI.

With the forksafe plugin (``plugins = python3,forksafe``) every process has a
``_forksafe`` module; including pyramid_forksafe appends the registry's
listener to ``_forksafe.listeners`` and the registry hears every event.

Without the plugin, ``uwsgidecorators.postfork`` (Debian:
python3-uwsgidecorators) still gives post-fork, with a warning.

With lazy-apps the application is loaded in the worker after the post-fork
was delivered: when the application is created (Pyramid's
ApplicationCreated, so every subscriber is registered by then) that
post-fork is replayed to the new registry, with ``event.replayed`` true.
"""
import sys

from pyramid.events import ApplicationCreated

from .. import core
from ..core import log
from ..core import registry_setup

#: registry.pyramid_forksafe["environment"] under uWSGI, as in 0.2.
ENVIRONMENT = "uWSGI"

#: the hooks recorded in registry.pyramid_forksafe["executed_hooks"].
LISTENER_SOURCE = "containers.uwsgi.forksafe_listener"
REPLAY_SOURCE = "containers.uwsgi.forksafe_replay"
POST_FORK_HOOK_SOURCE = "containers.uwsgi.post_fork_hook"  # 0.2's name
POST_FORK_REPLAY_SOURCE = "containers.uwsgi.post_fork_replay"

_fallback_warned = False


def includeme(config):
    """``config.include("pyramid_forksafe.containers.uwsgi")``, as in 0.2."""
    log.debug("Configuring pyramid_forksafe for uWSGI - includeme")
    registry_setup(config)
    configure(config)


def configure(config):
    """Connects the registry to whatever this process offers."""
    state = registry_setup(config)
    runtime = sys.modules.get("_forksafe")
    if runtime is not None:
        _configure_forksafe(config, runtime, state)
        return
    try:
        import uwsgi
    except ImportError:
        state["autoconfigure.log"].append("uWSGI not available")
        state["status"] = "no container: no fork events"
        log.debug("not running under uWSGI: no fork events")
        return
    _configure_uwsgidecorators(config, uwsgi, state)


def _configure_forksafe(config, runtime, state):
    listener = core.listener_for(config.registry)
    listener.source = LISTENER_SOURCE
    listeners = runtime.listeners
    core.prune(listeners)
    listener.attach(listeners)
    container = getattr(runtime, "container", "uwsgi")
    state["environment"] = ENVIRONMENT if container == "uwsgi" else container
    state["mechanism"] = "forksafe"
    state["autoconfigure.log"].append(
        "forksafe %s available (%s)" % (getattr(runtime, "version", "?"), container)
    )
    state["autoconfigure.log"].append("forksafe listener configured")
    state["status"] = "forksafe listener configured"
    _schedule_replay(config, listener)


def _configure_uwsgidecorators(config, uwsgi, state):
    try:
        import uwsgidecorators
    except Exception as exc:  # ImportError, or its "enable the master" Exception
        state["autoconfigure.log"].append("uWSGI error: %s" % exc)
        state["status"] = "uWSGI error"
        log.warning(
            "pyramid_forksafe: running under uWSGI without the forksafe plugin and "
            "without uwsgidecorators (%s): no fork events will be delivered",
            exc,
        )
        return
    global _fallback_warned
    if not _fallback_warned:  # once per process, not once per application
        _fallback_warned = True
        log.warning(
            "pyramid_forksafe: the forksafe uWSGI plugin is not loaded (no _forksafe "
            "module); falling back to uwsgidecorators.postfork: only post-fork "
            "(ApplicationPostFork) is delivered. Load the plugin with "
            "`plugins = python3,forksafe` for every event."
        )
    listener = core.listener_for(config.registry)
    state["autoconfigure.log"].append("uWSGI available")
    state["environment"] = ENVIRONMENT
    state["mechanism"] = "uwsgidecorators"
    if _process(uwsgi)[0] is None:
        # Preloaded in the master: the hook runs in each child after fork.
        chain = getattr(uwsgidecorators, "postfork_chain", None)
        if chain is None or not any(core.listener_of(item) is listener for item in chain):
            hook = uwsgidecorators.postfork(_PostForkHook(listener))
            if chain is not None:
                core.prune(chain)
                listener.attach(chain, hook)
    # else: loaded in a child (lazy-apps), after its post-fork: replayed.
    state["autoconfigure.log"].append("uWSGI hook configured")
    state["status"] = "uWSGI hook configured"
    _schedule_replay(config, listener)


class _PostForkHook(object):
    """What uwsgidecorators.postfork calls in each child."""

    def __init__(self, listener):
        self.listener = listener

    def __call__(self):
        self.listener.deliver(_synthesized_post_fork(), POST_FORK_HOOK_SOURCE)


class _Replay(object):
    """ApplicationCreated subscriber: hands the new registry the post-fork of
    this process if it was delivered before the application existed."""

    def __init__(self, listener):
        self.listener = listener

    def __call__(self, _event):
        runtime = sys.modules.get("_forksafe")
        if runtime is not None:
            recorded = getattr(runtime, "recorded", None)
            if recorded is not None:
                # The plugin keeps an unheard post-fork as JSON until asked.
                payload = recorded("post-fork")
            else:
                payload = (getattr(runtime, "delivered", None) or {}).get("post-fork")
            if payload:
                self.listener.replay(payload, REPLAY_SOURCE)
            return
        uwsgi = sys.modules.get("uwsgi")
        if uwsgi is not None and _process(uwsgi)[0] is not None:
            self.listener.replay(_synthesized_post_fork(), POST_FORK_REPLAY_SOURCE)


def _schedule_replay(config, listener):
    if getattr(listener, "replay_scheduled", False):
        return
    listener.replay_scheduled = True
    config.add_subscriber(_Replay(listener), ApplicationCreated)


def _process(uwsgi):
    """(kind, id) of this process as uwsgidecorators-era uWSGI tells it:
    ("worker", N), ("mule", N), or (None, None) in the master."""
    for kind, function in (("worker", "worker_id"), ("mule", "mule_id")):
        try:
            number = getattr(uwsgi, function)()
        except Exception:
            continue
        if number:
            return kind, number
    return None, None


def _synthesized_post_fork():
    kind, number = _process(sys.modules.get("uwsgi"))
    return core.make_payload("post-fork", "uwsgi", kind=kind, id=number)


__all__ = ("configure", "includeme")
