"""gunicorn: the forksafe events from gunicorn's server hooks.

In the gunicorn config file (``gunicorn --paste production.ini -c
gunicorn.conf.py``)::

    from forksafe.gunicorn import *      # every hook

or, to keep hooks of your own (forksafe's part runs first)::

    from forksafe import gunicorn as forksafe
    globals().update(forksafe.hooks(post_fork=my_post_fork, on_exit=my_on_exit))

and optionally, in the same file, subscriptions in the
``forksafe-subscribe`` syntax and the other options::

    forksafe_subscribe = ["post-fork exec:/usr/local/bin/notify-fork",
                          "worker-ready kind=worker id=1 python:myapp.warm:cache"]
    forksafe_on_error = "log"          # log | exit | fatal
    forksafe_timeout = 10              # seconds, exec handlers
    forksafe_verbose = False
    forksafe_settings = None           # PATH[#NAME]; default: the --paste file
    forksafe_hazards = "warn"          # warn | fail | off
    forksafe_hazard_allow = ["tcp:*:5432", "thread:metrics-*"]

The settings are the ``[app:main]`` (or ``#name``) of the paste ini gunicorn
loaded (``--paste``), and its ``[forksafe]`` section is subscribed first,
exactly as the uWSGI plugin reads them: the same C core does it
(:mod:`forksafe.host`, over ``build/libforksafe.so``), so the handler
kinds (``exec:``, ``dl:``, ``symbol:``, ``python:``), the payload and the
on-error words are the same.  Every event also reaches the callables in
``_forksafe.listeners`` (a module this adapter provides, as the uWSGI
plugin does).  With pyramid_forksafe installed it reaches the Pyramid
registries too: those that include ``pyramid_forksafe`` and the registry of
the application gunicorn loaded, once it is loaded.  Nothing here needs
Pyramid: a Flask, Django or plain WSGI application gets every event
through its handlers.  ``pyramid_forksafe.containers.gunicorn`` (0.2's
path) is this module.

The hooks and the events (``child`` and ``reason`` as in the main README):

=====================  ========  ============================================
gunicorn hook          runs in   forksafe event
=====================  ========  ============================================
``on_starting``        arbiter   ``master-start`` (settings and subscriptions
                                 read here; a bad one stops gunicorn)
``when_ready``         arbiter   ``master-start`` if ``on_starting`` is not
                                 installed
``pre_fork``           arbiter   ``pre-fork`` (``child``: id, respawn)
(``spawn_worker``)     arbiter   ``post-fork-parent`` (``child.pid``)
``post_fork``          worker    ``post-fork``
``post_worker_init``   worker    ``worker-ready`` (after replaying post-fork
                                 to a registry loaded after it)
``worker_exit``        worker    ``worker-exit`` (``reason``)
``child_exit``         arbiter   ``child-death`` when the worker did not
                                 complete worker-exit (``child.status``...)
``on_reload``          arbiter   ``master-exit`` (reload), then the settings
                                 are read again, then ``master-start``
``on_exit``            arbiter   ``master-exit`` (shutdown)
(``manage_workers``)   arbiter   ``generation-ready``: the workers forked
                                 since master-start all past worker-ready
=====================  ========  ============================================

Fork hazards (the uWSGI options ``forksafe-hazards`` and
``forksafe-hazard-allow``, the same words): before each fork the arbiter
looks for what the worker is about to inherit and must not share -- threads
other than the forking one, connected TCP and UNIX stream sockets (an
application loaded with ``--preload`` that connected to its database) --
and says each, once per worker id and reload, naming the worker; the
pre-fork payload has them as ``"hazards"``.  gunicorn's own sockets are
not hazards (its syslog handler over ``tcp://`` or a UNIX socket is allowed
by its address).  ``"fail"``: before the first worker gunicorn halts with
status 1 and forks nothing; once workers run, a hazard that appears later
stops gunicorn (status 1), and the worker being forked exits at once.

gunicorn has no hook in the arbiter after a fork (``post_fork`` runs in the
child).  ``on_starting`` therefore wraps five methods of the arbiter
*instance* (not the class): ``spawn_worker`` (post-fork-parent right after
``os.fork()`` returns the child's pid), ``reap_workers`` (peeks at dead
workers with ``waitid(WNOWAIT)`` before gunicorn reaps them, so child-death
has the wait status), ``kill_worker`` and ``stop`` (the worker-exit
``reason``: ``shutdown``, ``reload``, ``cheaper``, ``harakiri`` for
gunicorn's worker timeout; a worker that ends by itself says
``max-requests`` or ``exit``) and ``manage_workers`` (generation-ready; a
ready worker wakes the arbiter through gunicorn's own pipe).

Workers get forksafe ids like uWSGI's: a worker takes the lowest id no live
worker has, and ``respawn`` counts the earlier forks of that id.  After a
HUP the new workers get fresh ids while the old ones are still alive.

With ``preload_app`` off gunicorn loads the application in each worker, and
this adapter never loads it in the arbiter: arbiter events reach only the
registries that exist there.  In a worker the registry exists after
``post_fork``; ``post_worker_init`` replays that post-fork to it (with
``event.replayed``) before ``worker-ready``.

pyramid_forksafe 0.2's ``pre_fork``, ``post_fork`` and ``post_worker_init``
keep their names, records and meaning; imported alone they configure
forksafe on first use (master-start is then missed, and a warning says so).
"""
import os
import signal
import sys
import warnings

from . import adapter
from . import host as fs_host
from ._gunicorn import CONTAINER
from ._gunicorn import ENVIRONMENT
from ._gunicorn import MAX_WORKER_ID  # noqa: F401
from ._gunicorn import REASONS  # noqa: F401
from ._gunicorn import _apply  # noqa: F401
from ._gunicorn import _become_worker
from ._gunicorn import _child_death
from ._gunicorn import _exit_reason
from ._gunicorn import _fire
from ._gunicorn import _free_id
from ._gunicorn import _guard
from ._gunicorn import _in_arbiter
from ._gunicorn import _processes
from ._gunicorn import _is_arbiter
from ._gunicorn import _mark_ready
from ._gunicorn import _refuse_hazards
from ._gunicorn import _refused_worker_exits
from ._gunicorn import _replay_post_fork
from ._gunicorn import _say
from ._gunicorn import _shared_fatal
from ._gunicorn import _shared_get
from ._gunicorn import _shared_init
from ._gunicorn import _shared_reset
from ._gunicorn import _shared_set
from ._gunicorn import _state
from ._gunicorn import _worker_id
from ._gunicorn import _wrap_arbiter
from ._gunicorn import _wsgi_of
from ._gunicorn import death_cause  # noqa: F401
from ._gunicorn import hazard_options
from ._gunicorn import wait_status  # noqa: F401

#: the gunicorn hooks this module provides, with their arity.
HOOKS = {
    "on_starting": 1,
    "when_ready": 1,
    "pre_fork": 2,
    "post_fork": 2,
    "post_worker_init": 1,
    "worker_exit": 2,
    "child_exit": 2,
    "on_reload": 1,
    "on_exit": 1,
}

#: every gunicorn server hook (hooks() passes the others through).
SERVER_HOOKS = {
    "on_starting": 1,
    "on_reload": 1,
    "when_ready": 1,
    "pre_fork": 2,
    "post_fork": 2,
    "post_worker_init": 1,
    "worker_int": 1,
    "worker_abort": 1,
    "pre_exec": 1,
    "pre_request": 2,
    "post_request": 4,
    "child_exit": 2,
    "worker_exit": 2,
    "nworkers_changed": 3,
    "on_exit": 1,
}

#: the config file's forksafe options: name -> Host argument.
OPTIONS = {
    "forksafe_subscribe": "subscriptions",
    "forksafe_settings": "settings_spec",
    "forksafe_on_error": "on_error",
    "forksafe_timeout": "timeout",
    "forksafe_verbose": "verbose",
    "forksafe_hazards": "hazards",
    "forksafe_hazard_allow": "hazard_allow",
}
# ------------------------------------------------------------------ hooks


def on_starting(server):
    """gunicorn's on_starting(server): in the arbiter, before the listeners
    are open: reads the settings and subscriptions (a bad one stops
    gunicorn with forksafe's one-line message), then master-start."""
    _guard(_on_starting, server)


def when_ready(server):
    """gunicorn's when_ready(server): master-start, unless on_starting gave it."""
    _guard(_when_ready, server)


def pre_fork(server, worker):
    """gunicorn's pre_fork(server, worker): in the arbiter, before the fork."""
    _guard(_pre_fork, server, worker)


def post_fork(server, worker):
    """gunicorn's post_fork(server, worker): in the new worker."""
    _guard(_post_fork, server, worker)


def post_worker_init(worker):
    """gunicorn's post_worker_init(worker): in the worker, app loaded."""
    _guard(_post_worker_init, worker)


def worker_exit(server, worker):
    """gunicorn's worker_exit(server, worker): in the exiting worker."""
    _guard(_worker_exit, server, worker)


def child_exit(server, worker):
    """gunicorn's child_exit(server, worker): in the arbiter, worker reaped."""
    _guard(_child_exit, server, worker)


def on_reload(server):
    """gunicorn's on_reload(server): in the arbiter, on HUP."""
    _guard(_on_reload, server)


def on_exit(server):
    """gunicorn's on_exit(server): in the arbiter, just before it exits."""
    _guard(_on_exit, server)


def hooks(**user_hooks):
    """Every forksafe hook, combined with the gunicorn hooks given (the same
    names as in the config file): ``globals().update(hooks(post_fork=mine))``.

    A combined hook runs forksafe's part, then yours (an exception of yours
    propagates as gunicorn would have it).  Other gunicorn hooks
    (``pre_request``, ``worker_abort``, ...) are passed through as given."""
    unknown = sorted(set(user_hooks) - set(SERVER_HOOKS))
    if unknown:
        raise TypeError(
            "not gunicorn server hooks: %s (known: %s)"
            % (", ".join(unknown), ", ".join(sorted(SERVER_HOOKS)))
        )
    ours = {name: globals()[name] for name in HOOKS}
    result = dict(ours)
    for name, user in user_hooks.items():
        if user is None:
            continue
        if not callable(user):
            raise TypeError("the %s hook must be callable, not %r" % (name, user))
        result[name] = _combine(name, ours[name], user) if name in ours else user
    return result


def _combine(name, forksafe_hook, user_hook):
    if HOOKS[name] == 1:

        def combined(arg):
            forksafe_hook(arg)
            return user_hook(arg)

    else:

        def combined(arg, other):
            forksafe_hook(arg, other)
            return user_hook(arg, other)

    combined.__name__ = name
    combined.__qualname__ = "forksafe+" + getattr(user_hook, "__qualname__", name)
    combined.__doc__ = "forksafe's %s, then %r" % (name, user_hook)
    combined.forksafe_hook = forksafe_hook
    combined.user_hook = user_hook
    return combined


def configure(**options):
    """The config file's options given from code (a custom gunicorn
    application): ``subscriptions``, ``settings_spec``, ``on_error``,
    ``timeout``, ``verbose``, ``hazards``, ``hazard_allow`` (the names of
    :class:`~forksafe.host.Host`) or the ``forksafe_*`` names.  Read at the
    next start or reload."""
    for key, value in options.items():
        key = OPTIONS.get(key, key)
        if key not in OPTIONS.values():
            raise TypeError("unknown forksafe option %r (known: %s)"
                            % (key, ", ".join(sorted(OPTIONS))))
        _state.options[key] = value


def mark_configured(registry):
    """For developers: records in ``registry.pyramid_forksafe`` that the
    gunicorn hooks are installed (0.2)."""
    adapter.framework("mark_configured").mark_configured(registry, ENVIRONMENT)


# ---------------------------------------------------------- hook bodies


def _on_starting(server):
    if not _is_arbiter(server):
        return
    _start(server, lazily=False)


def _when_ready(server):
    if not _is_arbiter(server):
        return
    if _state.host is None:
        _start(server, lazily=False)
    elif not _state.master_started:
        _master_start(server)


def _pre_fork(server, worker):
    if not _ready(server, "pre_fork"):
        _legacy(server.app, "pre-fork", kind="master", id=0, child={"kind": "worker"})
        return
    wid = _free_id(server)
    respawn = _state.slot_forks.get(wid, 0)
    _state.slot_forks[wid] = respawn + 1
    worker._forksafe_id = wid
    worker._forksafe_respawn = respawn
    worker._forksafe_generation = _state.generation
    _shared_reset(wid)
    child = {"kind": "worker", "id": wid, "respawn": respawn}
    _fire(server, "pre-fork", child=child, apps=[server.app])
    _refuse_hazards(server)


def _post_fork(server, worker):
    if not _ready(server, "post_fork"):
        _legacy(server.app, "post-fork", kind="worker")
        return
    _refused_worker_exits(worker)
    _become_worker(worker)
    _fire(server, "post-fork", worker=worker, apps=[server.app])


def _post_worker_init(worker):
    if not _ready(worker, "post_worker_init"):
        _legacy(worker.app, "worker-ready", kind="worker", loader=True)
        return
    if _state.worker is None:  # post_fork is not installed
        _refused_worker_exits(worker)
        _become_worker(worker)
    apps = [_wsgi_of(worker), worker.app]
    # The application was loaded after the post-fork (preload_app off): its
    # registry hears that post-fork now, before worker-ready.
    _replay_post_fork(apps)
    _fire(worker, "worker-ready", worker=worker, apps=apps)
    _mark_ready(worker)


def _worker_exit(server, worker):
    if _in_arbiter(server):
        # gunicorn calls worker_exit in the arbiter for a worker that was
        # already gone when it tried to signal it: that worker never ran its
        # worker-exit here -- it died unseen.
        if _ready(server, "worker_exit"):
            _child_death(server, worker, status=None)
        return
    if not _ready(server, "worker_exit"):
        return
    if _state.worker is None:
        _become_worker(worker)
    reason = _exit_reason(worker)
    _fire(server, "worker-exit", worker=worker, reason=reason,
          apps=[getattr(worker, "wsgi", None), server.app])
    _shared_set(_worker_id(worker), 0, 1)


def _child_exit(server, worker):
    if not _ready(server, "child_exit"):
        return
    wid = _worker_id(worker)
    pid = getattr(worker, "pid", 0)
    status = _state.statuses.pop(pid, None)
    if _shared_get(wid, 0):
        _state.signalled.pop(pid, None)
        return  # it completed worker-exit
    _child_death(server, worker, status)


def _on_reload(server):
    if not _ready(server, "on_reload"):
        return
    _fire(server, "master-exit", reason="reload", apps=[server.app])
    old = _state.host
    try:
        new = _new_host(server)
    except fs_host.ForksafeError as exc:
        _say("%s" % exc)
        _say("on reload: the new configuration is refused; stopping gunicorn")
        _state.fatal = True
        os.kill(os.getpid(), signal.SIGINT)
        return
    _state.host = new
    _state.generation += 1
    _state.master_started = False
    if old is not None:
        old.close()
    _master_start(server)


def _on_exit(server):
    if not _ready(server, "on_exit"):
        return
    _fire(server, "master-exit", reason="shutdown", apps=[server.app])
    if _state.fatal or _shared_fatal():
        # a fatal policy stopped gunicorn: say so in the exit status
        raise SystemExit(1)


# ------------------------------------------------------------- starting


def _start(server, lazily):
    """Creates the host from the config (exit 1 on a bad one), wraps the
    arbiter, provides the _forksafe module, then master-start (not when
    configured lazily from a later hook: that moment has passed)."""
    _state.master_pid = os.getpid()
    _state.generation = 0
    _state.master_started = False
    _state.stopping = False
    try:
        _state.host = _new_host(server)
    except fs_host.ForksafeError as exc:
        _say("%s" % exc)
        if getattr(server, "pidfile", None) is not None:
            try:
                server.pidfile.unlink()
            except Exception:
                pass
        raise SystemExit(1)
    _shared_init()
    _wrap_arbiter(server)
    if not lazily:
        _master_start(server)


def _master_start(server):
    _state.master_started = True
    _state.gen.master_started()
    _fire(server, "master-start", apps=[server.app])


def _ready(server_or_worker, hook):
    """True when forksafe is configured in this process (configuring it now
    in a gunicorn arbiter whose on_starting hook is not installed); False
    outside gunicorn (0.2-style calls with stand-in objects)."""
    if _state.host is not None:
        return True
    cfg = getattr(server_or_worker, "cfg", None)
    if cfg is None or not hasattr(server_or_worker, "app"):
        return False
    if not _state.lazy_warned:
        _state.lazy_warned = True
        warnings.warn(
            "pyramid_forksafe: the gunicorn on_starting hook is not installed: forksafe is "
            "configured late (in %s) and master-start was not delivered. Install every "
            "hook: `from pyramid_forksafe.containers.gunicorn import *` or "
            "`globals().update(hooks(...))` in the gunicorn config file." % hook,
            RuntimeWarning,
            stacklevel=3,
        )
    if _is_arbiter(server_or_worker) and os.getpid() == server_or_worker.pid:
        _start(server_or_worker, lazily=True)
    else:
        # in a worker of an arbiter that never configured forksafe
        _state.host = _new_host(server_or_worker)
    return True


def _new_host(server):
    """The host of SERVER's configuration; its dispatch runs the
    ``_forksafe`` listeners too (the module is made if there is none)."""
    options = read_options(server)
    cfg = getattr(server, "cfg", None)
    module = config_module(cfg)
    where = getattr(module, "__file__", None) or getattr(module, "__name__", "configure()")
    hazards, hazard_allow = hazard_options(cfg, options, where)
    host = fs_host.Host(
        CONTAINER,
        options.get("settings_spec"),
        subscriptions=options.get("subscriptions"),
        source=options.get("source", "forksafe_subscribe"),
        on_error=options.get("on_error"),
        timeout=options.get("timeout") or 0,
        verbose=bool(options.get("verbose")),
        hazards=hazards,
        hazard_allow=hazard_allow,
    )
    try:
        _state.runtime = host.python_bridge()
    except BaseException:
        host.close()
        raise
    return host


def read_options(server):
    """The Host arguments for this gunicorn: the settings from ``--paste``
    (or ``forksafe_settings``), the ``forksafe_*`` names of the config file,
    then what :func:`configure` was given."""
    options = {}
    app = getattr(server, "app", None)
    cfg = getattr(server, "cfg", None)
    if cfg is not None and getattr(cfg, "paste", None) and getattr(app, "app_uri", None):
        options["settings_spec"] = app.app_uri
    module = config_module(cfg)
    if module is not None:
        found = False
        for name, key in OPTIONS.items():
            if name in vars(module):
                options[key] = getattr(module, name)
                found = True
        if found:
            where = getattr(module, "__file__", None) or module.__name__
            options["source"] = "%s (forksafe_subscribe)" % where
    options.update(_state.options)
    subscriptions = options.get("subscriptions")
    if isinstance(subscriptions, str):
        options["subscriptions"] = [subscriptions]
    return options


def config_module(cfg):
    """The module gunicorn executed as its config file (``-c FILE``, the
    default ./gunicorn.conf.py, or ``-c python:MODULE``), or None."""
    location = getattr(cfg, "config", None) if cfg is not None else None
    if isinstance(location, str) and location.startswith("python:"):
        return sys.modules.get(location[len("python:"):])
    return sys.modules.get("__config__")


def install_runtime():
    """Provides the ``_forksafe`` module now, as the uWSGI plugin does
    (``listeners``, ``delivered``, ``version``, ``container``,
    ``recorded()``: the core's own), so that
    ``config.include("pyramid_forksafe")`` in an application preloaded
    before ``on_starting`` connects its registry.  Returns it (an existing
    one is kept), or None when the core library cannot be loaded:
    ``on_starting`` then says why and stops gunicorn."""
    runtime = sys.modules.get("_forksafe")
    if runtime is None:
        try:
            with fs_host.Host(CONTAINER) as host:
                runtime = host.python_bridge()
        except fs_host.ForksafeError:
            return None
    return runtime


# ---------------------------------------------------------------- misc


def _legacy(application, event, kind=None, id=None, loader=False, **extra):
    """0.2's delivery, outside a gunicorn (stand-in objects): a synthesized
    payload to the application's registry, loading it as 0.2 did."""
    framework = adapter.framework()
    if framework is None:
        return None
    return framework.legacy(application, event, ENVIRONMENT, kind=kind, id=id, **extra)


# ------------------------------------------------------------- counters


def stats():
    """The counters and dispatch history of this gunicorn, from the arbiter
    or any worker (they share them): :meth:`forksafe.host.Host.stats`.
    Raises :class:`~forksafe.host.ForksafeError` before the arbiter started
    forksafe."""
    return _started_host().stats()


def metrics():
    """The same counters, the reload count and the memory of the arbiter
    and of each worker running now (``/proc/PID/smaps_rollup``: private,
    shared, Pss, resident bytes) in Prometheus' text format 0.0.4, as the
    uWSGI plugin's ``forksafe-metrics`` serves them; from the arbiter or
    any worker, e.g. behind a ``/metrics`` route with ``Content-Type:``
    :data:`forksafe.host.METRICS_CONTENT_TYPE`."""
    return _started_host().metrics(_processes(), _state.generation)


def _started_host():
    if _state.host is None:
        raise fs_host.ForksafeError("forksafe has not started in this gunicorn")
    return _state.host


def _reset_for_tests():
    """Forgets this process's state (unit tests)."""
    if _state.host is not None:
        _state.host.close()
    _state.__init__()


# gunicorn executes the config file (which imports this module) before it
# preloads the application: the _forksafe module must exist by then for
# config.include("pyramid_forksafe") to connect the registry.
if "gunicorn.arbiter" in sys.modules:
    install_runtime()


__all__ = (
    "child_exit",
    "hooks",
    "mark_configured",
    "on_exit",
    "on_reload",
    "on_starting",
    "post_fork",
    "post_worker_init",
    "pre_fork",
    "when_ready",
    "worker_exit",
)

