"""gunicorn: the forksafe events from gunicorn's server hooks.

In the gunicorn config file (``gunicorn --paste production.ini -c
gunicorn.conf.py``)::

    from pyramid_forksafe.containers.gunicorn import *      # every hook

or, to keep hooks of your own (forksafe's part runs first)::

    from pyramid_forksafe.containers import gunicorn as forksafe
    globals().update(forksafe.hooks(post_fork=my_post_fork, on_exit=my_on_exit))

and optionally, in the same file, subscriptions in the
``forksafe-subscribe`` syntax and the other options::

    forksafe_subscribe = ["post-fork exec:/usr/local/bin/notify-fork",
                          "worker-ready kind=worker id=1 python:myapp.warm:cache"]
    forksafe_on_error = "log"          # log | exit | fatal
    forksafe_timeout = 10              # seconds, exec handlers
    forksafe_verbose = False
    forksafe_settings = None           # PATH[#NAME]; default: the --paste file

The settings are the ``[app:main]`` (or ``#name``) of the paste ini gunicorn
loaded (``--paste``), and its ``[forksafe]`` section is subscribed first,
exactly as the uWSGI plugin reads them: the same C core does it
(:mod:`pyramid_forksafe.host`, over ``build/libforksafe.so``), so the
handler kinds (``exec:``, ``dl:``, ``symbol:``, ``python:``), the payload
and the on-error words are the same.  Every event also reaches the Pyramid
registries: those that include ``pyramid_forksafe`` (listeners of a
``_forksafe`` module this adapter provides, as the uWSGI plugin does) and
the registry of the application gunicorn loaded, once it is loaded.

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
=====================  ========  ============================================

gunicorn has no hook in the arbiter after a fork (``post_fork`` runs in the
child).  ``on_starting`` therefore wraps four methods of the arbiter
*instance* (not the class): ``spawn_worker`` (post-fork-parent right after
``os.fork()`` returns the child's pid), ``reap_workers`` (peeks at dead
workers with ``waitid(WNOWAIT)`` before gunicorn reaps them, so child-death
has the wait status), ``kill_worker`` and ``stop`` (the worker-exit
``reason``: ``shutdown``, ``reload``, ``cheaper``, ``harakiri`` for
gunicorn's worker timeout; a worker that ends by itself says
``max-requests`` or ``exit``).

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
import mmap
import os
import signal
import sys
import traceback
import types
import warnings

from .. import core
from .. import host as fs_host
from ..core import log

#: registry.pyramid_forksafe["environment"] under gunicorn, as in 0.2.
ENVIRONMENT = "gunicorn"
#: the payload's "container".
CONTAINER = "gunicorn"

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
}

#: registry.pyramid_forksafe["executed_hooks"] sources (0.2's for its three).
SOURCES = {
    "master-start": "containers.gunicorn.on_starting",
    "pre-fork": "containers.gunicorn.pre_fork",
    "post-fork": "containers.gunicorn.post_fork",
    "post-fork-parent": "containers.gunicorn.spawn_worker",
    "worker-ready": "containers.gunicorn.post_worker_init",
    "worker-exit": "containers.gunicorn.worker_exit",
    "child-death": "containers.gunicorn.child_exit",
    "master-exit": "containers.gunicorn.on_exit",
}
REPLAY_SOURCE = "containers.gunicorn.post_fork_replay"

#: worker-exit reasons the arbiter writes for a worker (shared memory).
REASONS = (None, "shutdown", "reload", "cheaper", "harakiri")
#: ids beyond this have no shared flags (their death is always child-death).
#: The shared memory has two bytes per id; id 0's first byte says that a
#: worker's fatal policy stopped gunicorn.
MAX_WORKER_ID = 4096

_EXITING_EVENTS = ("worker-exit", "master-exit")


class _State(object):
    """This process's forksafe state (the arbiter's, inherited by workers)."""

    def __init__(self):
        self.host = None
        self.generation = 0
        self.master_pid = None
        self.master_started = False  # master-start delivered in this generation
        self.slot_forks = {}  # worker id -> forks of that id so far (arbiter)
        self.shared = None  # mmap: per id [worker-exit completed, reason]
        self.statuses = {}  # pid -> wait status peeked before gunicorn reaps
        self.signalled = {}  # pid -> last signal the arbiter sent it
        self.stopping = False
        self.fatal = False  # a fatal policy asked the arbiter to stop
        self.worker = None  # (id, respawn) in a worker
        self.busy = False
        self.pending = []
        self.options = {}  # configure(**options)
        self.lazy_warned = False
        self.post_fork_payload = None  # this worker's post-fork, for the replay


_state = _State()


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
    ``timeout``, ``verbose`` (the names of :class:`~pyramid_forksafe.host.Host`)
    or the ``forksafe_*`` names.  Read at the next start or reload."""
    for key, value in options.items():
        key = OPTIONS.get(key, key)
        if key not in OPTIONS.values():
            raise TypeError("unknown forksafe option %r (known: %s)"
                            % (key, ", ".join(sorted(OPTIONS))))
        _state.options[key] = value


def mark_configured(registry):
    """For developers: records in ``registry.pyramid_forksafe`` that the
    gunicorn hooks are installed (0.2)."""
    log.debug("mark_configured")
    state = core.state_of(registry)
    state["environment"] = ENVIRONMENT
    state["mechanism"] = "gunicorn-hooks"
    state["autoconfigure.log"].append("gunicorn mark_configured")
    state["status"] = "gunicorn mark_configured"


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


def _post_fork(server, worker):
    if not _ready(server, "post_fork"):
        _legacy(server.app, "post-fork", kind="worker")
        return
    _become_worker(worker)
    _fire(server, "post-fork", worker=worker, apps=[server.app])


def _post_worker_init(worker):
    if not _ready(worker, "post_worker_init"):
        _legacy(worker.app, "worker-ready", kind="worker", loader=True)
        return
    if _state.worker is None:  # post_fork is not installed
        _become_worker(worker)
    apps = [_wsgi_of(worker), worker.app]
    if _state.post_fork_payload is not None:
        # The application was loaded after the post-fork (preload_app off):
        # its registry hears that post-fork now, before worker-ready.
        for listener in _listeners(apps):
            _guard_listener(listener.replay, _state.post_fork_payload, REPLAY_SOURCE)
    _fire(worker, "worker-ready", worker=worker, apps=apps)


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
    install_runtime()
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
        install_runtime()
        _state.host = _new_host(server_or_worker)
    return True


def _new_host(server):
    options = read_options(server)
    return fs_host.Host(
        CONTAINER,
        options.get("settings_spec"),
        subscriptions=options.get("subscriptions"),
        source=options.get("source", "forksafe_subscribe"),
        on_error=options.get("on_error"),
        timeout=options.get("timeout") or 0,
        verbose=bool(options.get("verbose")),
    )


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
    """Provides the ``_forksafe`` module as the uWSGI plugin does
    (``listeners``, ``delivered``, ``version``, ``container``), so that
    ``config.include("pyramid_forksafe")`` connects every registry of the
    process.  Returns it (an existing one is kept)."""
    runtime = sys.modules.get("_forksafe")
    if runtime is None:
        runtime = types.ModuleType("_forksafe")
        runtime.listeners = []
        runtime.delivered = {}
        runtime.version = "0.1.0"
        runtime.container = CONTAINER
        runtime.__doc__ = "pyramid_forksafe's gunicorn adapter: the forksafe bridge module"
        sys.modules["_forksafe"] = runtime
    return runtime


# ------------------------------------------------------------- arbiter


def _in_arbiter(server):
    """True in gunicorn's arbiter process (not in a worker, which inherits
    the arbiter object)."""
    if _state.master_pid is not None:
        return os.getpid() == _state.master_pid
    return _is_arbiter(server) and os.getpid() == server.pid


def _is_arbiter(server):
    return all(hasattr(server, name) for name in ("cfg", "app", "WORKERS", "spawn_worker"))


def _wrap_arbiter(server):
    """Wraps four methods of this arbiter instance (see the module doc)."""
    if getattr(server, "_forksafe_wrapped", False):
        return
    server._forksafe_wrapped = True
    spawn_worker = server.spawn_worker
    reap_workers = server.reap_workers
    kill_worker = server.kill_worker
    stop = server.stop

    def forksafe_spawn_worker():
        pid = spawn_worker()
        # Only the arbiter gets here: the child leaves with SystemExit.
        _guard(_post_fork_parent, server, pid)
        return pid

    def forksafe_reap_workers():
        if os.getpid() == server.pid:
            _guard(_peek_dead_workers, server)
        return reap_workers()

    def forksafe_kill_worker(pid, sig):
        if os.getpid() == server.pid:
            _guard(_note_kill, server, pid, sig)
        return kill_worker(pid, sig)

    def forksafe_stop(*args, **kwargs):
        _state.stopping = True
        return stop(*args, **kwargs)

    server.spawn_worker = forksafe_spawn_worker
    server.reap_workers = forksafe_reap_workers
    server.kill_worker = forksafe_kill_worker
    server.stop = forksafe_stop


def _post_fork_parent(server, pid):
    worker = server.WORKERS.get(pid)
    if not pid or worker is None or _state.host is None:
        return
    child = {
        "kind": "worker",
        "id": _worker_id(worker),
        "pid": pid,
        "respawn": getattr(worker, "_forksafe_respawn", 0),
    }
    _fire(server, "post-fork-parent", child=child, apps=[server.app])


def _peek_dead_workers(server):
    for pid in list(server.WORKERS):
        if pid in _state.statuses:
            continue
        try:
            info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
        except (ChildProcessError, OSError):
            continue
        if info is not None and info.si_pid:
            _state.statuses[pid] = wait_status(info.si_code, info.si_status)


def wait_status(si_code, si_status):
    """A waitpid() status from waitid()'s si_code and si_status."""
    if si_code == os.CLD_EXITED:
        return (si_status & 0xFF) << 8
    if si_code == os.CLD_DUMPED:
        return (si_status & 0x7F) | 0x80
    return si_status & 0x7F  # CLD_KILLED


def _note_kill(server, pid, sig):
    worker = server.WORKERS.get(pid)
    if worker is None:
        return
    _state.signalled[pid] = sig
    if _state.stopping:
        reason = "shutdown"
    elif sig == signal.SIGABRT or (sig == signal.SIGKILL and getattr(worker, "aborted", False)):
        reason = "harakiri"
    elif getattr(worker, "_forksafe_generation", _state.generation) < _state.generation:
        reason = "reload"
    else:
        reason = "cheaper"
    wid = _worker_id(worker)
    if not _shared_get(wid, 1):
        _shared_set(wid, 1, REASONS.index(reason))


def _free_id(server):
    used = {getattr(w, "_forksafe_id", None) for w in list(server.WORKERS.values())}
    wid = 1
    while wid in used:
        wid += 1
    return wid


def _child_death(server, worker, status):
    pid = getattr(worker, "pid", 0)
    sent = _state.signalled.pop(pid, None)
    child = {
        "kind": "worker",
        "id": _worker_id(worker),
        "pid": pid,
        "respawn": getattr(worker, "_forksafe_respawn", 0),
        "status": status,
        "cause": death_cause(status, sent, REASONS[_shared_get(_worker_id(worker), 1) or 0]),
    }
    _fire(server, "child-death", child=child, apps=[server.app])


def death_cause(status, sent_signal=None, reason=None):
    """child-death's cause: ``exit``, ``signal``, ``harakiri`` (gunicorn's
    worker timeout killed it), ``killed-by-master`` (gunicorn signalled it
    and it died of that signal), ``unknown`` (status not known)."""
    if status is None:
        return "unknown"
    if os.WIFEXITED(status):
        return "exit"
    if os.WIFSIGNALED(status):
        if reason == "harakiri":
            return "harakiri"
        if sent_signal is not None and os.WTERMSIG(status) == sent_signal:
            return "killed-by-master"
        return "signal"
    return "unknown"


# ------------------------------------------------------------- workers


def _become_worker(worker):
    wid = _worker_id(worker)
    _state.worker = (wid, getattr(worker, "_forksafe_respawn", 0))
    _state.busy = False
    _state.pending = []
    _state.statuses = {}
    _state.signalled = {}
    _state.post_fork_payload = None


def _worker_id(worker):
    wid = getattr(worker, "_forksafe_id", None)
    if wid is None:
        # pre_fork is not installed: gunicorn's own spawn counter
        wid = getattr(worker, "age", 0) or 0
    return wid


def _exit_reason(worker):
    code = _shared_get(_worker_id(worker), 1)
    if code:
        return REASONS[code]
    max_requests = getattr(worker, "max_requests", sys.maxsize)
    if max_requests != sys.maxsize and getattr(worker, "nr", 0) >= max_requests:
        return "max-requests"
    return "exit"


# ---------------------------------------------------------- shared flags


def _shared_init():
    if _state.shared is None:
        _state.shared = mmap.mmap(-1, 2 * (MAX_WORKER_ID + 1))


def _shared_set_fatal():
    """A worker's fatal policy stopped gunicorn: the arbiter's on_exit makes
    the exit status 1 (byte 0: id 0 is the arbiter's, never a worker's)."""
    if _state.shared is not None:
        _state.shared[0] = 1


def _shared_fatal():
    return _state.shared is not None and _state.shared[0] == 1


def _shared_reset(wid):
    _shared_set(wid, 0, 0)
    _shared_set(wid, 1, 0)


def _shared_set(wid, field, value):
    if _state.shared is not None and wid is not None and 0 < wid <= MAX_WORKER_ID:
        _state.shared[2 * wid + field] = value


def _shared_get(wid, field):
    if _state.shared is not None and wid is not None and 0 < wid <= MAX_WORKER_ID:
        return _state.shared[2 * wid + field]
    return 0


# ------------------------------------------------------------- delivery


def _identity(worker=None):
    """(kind, id, respawn) of this process."""
    if _state.master_pid is not None and os.getpid() == _state.master_pid:
        return "master", 0, 0
    if _state.worker is not None:
        return ("worker",) + _state.worker
    if worker is not None:
        return "worker", _worker_id(worker), getattr(worker, "_forksafe_respawn", 0)
    return "master", 0, 0


def _fire(owner, event, worker=None, child=None, reason=None, apps=()):
    """Delivers EVENT in this process: the core's subscriptions, then the
    Pyramid registries; then acts on the policy.  A delivery started while
    another runs (a SIGCHLD hook in the middle of one) waits for it."""
    _state.pending.append((event, worker, child, reason, list(apps)))
    if _state.busy:
        return
    _state.busy = True
    try:
        while _state.pending:
            item = _state.pending.pop(0)
            code = _deliver(*item)
            _apply(code, item[0], owner)
    finally:
        _state.busy = False


def _deliver(event, worker, child, reason, apps):
    host = _state.host
    kind, wid, respawn = _identity(worker)
    arguments = dict(respawn=respawn, generation=_state.generation, child=child, reason=reason)
    code = host.dispatch(event, kind, wid, **arguments)
    payload = host.payload(event, kind, wid, **arguments)
    runtime = sys.modules.get("_forksafe")
    if runtime is not None and getattr(runtime, "container", None) == CONTAINER:
        if event == "post-fork":
            runtime.delivered.clear()
        runtime.delivered[event] = payload
    if event == "post-fork":
        _state.post_fork_payload = payload
    failed = False
    for target in _targets(apps, runtime):
        try:
            if isinstance(target, core.RegistryListener):
                _mark(target.registry)
                target.deliver(payload, SOURCES[event])
            else:
                target(payload)
        except Exception:
            failed = True
            _say(
                "pyramid_forksafe subscriber failed on %s in %s %s (pid %d):\n%s"
                % (event, kind, wid, os.getpid(), traceback.format_exc().rstrip())
            )
    if failed:
        code = max(code, host.failure_code)
    return code


def _targets(apps, runtime):
    """The listeners of _forksafe (included registries and any callable),
    then the registries of APPS not among them, each once."""
    seen = []
    targets = []
    items = list(getattr(runtime, "listeners", ()) or ()) if runtime is not None else []
    for item in items:
        listener = core.listener_of(item)
        target = listener if listener is not None else item
        if any(t is target for t in targets):
            continue
        targets.append(target)
        if listener is not None:
            seen.append(listener)
    for listener in _listeners(apps):
        if not any(listener is s for s in seen):
            targets.append(listener)
            seen.append(listener)
    return targets


def _listeners(apps):
    """The registry listeners of the loaded applications among APPS (WSGI
    apps or gunicorn applications; never loads one)."""
    result = []
    for app in apps:
        registry = _registry_of(app)
        if registry is None:
            continue
        listener = core.listener_for(registry)
        if not any(listener is r for r in result):
            result.append(listener)
    return result


def _registry_of(app, loader=False):
    if app is None:
        return None
    if hasattr(app, "wsgi") and hasattr(app, "cfg"):  # a gunicorn application
        app = getattr(app, "callable", None)
    elif hasattr(app, "wsgi") and not hasattr(app, "registry"):
        # A stand-in without gunicorn's cache (0.2's tests): 0.2 loaded it.
        app = app.wsgi() if (loader or not hasattr(app, "callable")) else app.callable
    registry = getattr(app, "registry", None)
    return registry if hasattr(registry, "notify") else None


def _wsgi_of(worker):
    return getattr(worker, "wsgi", None)


def _mark(registry):
    if registry is None:
        return
    state = core.state_of(registry)
    if state["environment"] is None:
        state["environment"] = ENVIRONMENT
        state["mechanism"] = "gunicorn-hooks"


def _guard_listener(call, *args):
    try:
        call(*args)
    except Exception:
        _say("pyramid_forksafe: replaying post-fork failed:\n%s" % traceback.format_exc().rstrip())


def _apply(code, event, owner):
    """Acts on a policy code as the uWSGI plugin does: exit ends a worker
    (gunicorn forks another), fatal -- or exit in the arbiter, which nobody
    would restart -- stops gunicorn (SIGINT to the arbiter)."""
    if code <= fs_host.LOG:
        return
    exiting = event in _EXITING_EVENTS
    kind, wid, _ = _identity()
    if code == fs_host.EXIT and kind != "master":
        if exiting:
            return
        _say("on-error=exit: worker %s (pid %d) exits after a failed %s handler"
             % (wid, os.getpid(), event))
        raise SystemExit(1)
    _say("on-error=%s: stopping gunicorn after a failed %s handler"
         % ("fatal" if code == fs_host.FATAL else "exit", event))
    if kind == "master":
        _state.fatal = True
        if event == "master-start" and not _state.generation:
            if getattr(owner, "pidfile", None) is not None:
                try:
                    owner.pidfile.unlink()
                except Exception:
                    pass
            raise SystemExit(1)
        if event == "master-exit" and _state.stopping:
            raise SystemExit(1)
        os.kill(os.getpid(), signal.SIGINT)
        return
    master = _state.master_pid or os.getppid()
    _shared_set_fatal()
    try:
        os.kill(master, signal.SIGINT)
    except OSError:
        pass
    if not exiting:
        raise SystemExit(1)


# ---------------------------------------------------------------- misc


def _guard(function, *args):
    """Runs a hook body; only SystemExit (a policy) leaves it: gunicorn stops
    on an exception from a hook in the arbiter."""
    try:
        function(*args)
    except SystemExit:
        raise
    except fs_host.ForksafeError as exc:
        _say("%s" % exc)
    except Exception:
        _say("internal error in the gunicorn adapter (%s):\n%s"
             % (function.__name__.lstrip("_"), traceback.format_exc().rstrip()))


def _say(message):
    try:
        sys.stderr.write("[forksafe] %s\n" % message)
        sys.stderr.flush()
    except Exception:
        pass


def _legacy(application, event, kind=None, id=None, loader=False, **extra):
    """0.2's delivery, outside a gunicorn (stand-in objects): a synthesized
    payload to the application's registry, loading it as 0.2 did."""
    log.debug("%s(gunicorn) - %s", event, SOURCES[event])
    registry = _registry_of(application, loader=True)
    if registry is None:
        return None
    _mark(registry)
    payload = core.make_payload(event, CONTAINER, kind=kind, id=id, **extra)
    return core.dispatch(registry, payload, source=SOURCES[event])


def _reset_for_tests():
    """Forgets this process's state (unit tests)."""
    global _state
    if _state.host is not None:
        _state.host.close()
    _state = _State()


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
