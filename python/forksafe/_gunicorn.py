"""The gunicorn adapter's insides (:mod:`forksafe.gunicorn` is what a
gunicorn config file imports): the state of this process, the arbiter's
wrapped methods, worker ids and reasons, the shared flags, the dispatch,
the policy, and what the arbiter does about fork hazards."""
import os
import signal
import sys
import traceback

from . import adapter
from . import host as fs_host
from ._generation import Generation
from ._generation import ReadyBoard

#: registry.pyramid_forksafe["environment"] under gunicorn, as in 0.2.
ENVIRONMENT = "gunicorn"
#: the payload's "container".
CONTAINER = "gunicorn"

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
        self.runtime = None  # the _forksafe module the host's dispatch runs
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
        # forksafe_hazards = "fail" found a hazard while workers ran: the
        # arbiter stops, and a worker forked from here on exits at once.
        self.hazard_refused = False
        # generation-ready: the workers' marks, the arbiter's bookkeeping,
        # and the arbiter's wake-up pipe (inherited by every worker).
        self.ready = None
        self.gen = Generation()
        self.wake_fd = None


_state = _State()

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
    """Wraps five methods of this arbiter instance (see the module doc)."""
    if getattr(server, "_forksafe_wrapped", False):
        return
    server._forksafe_wrapped = True
    spawn_worker = server.spawn_worker
    reap_workers = server.reap_workers
    kill_worker = server.kill_worker
    stop = server.stop
    manage_workers = getattr(server, "manage_workers", None)

    def forksafe_spawn_worker():
        # the pipe a ready worker wakes the arbiter with (made after on_starting)
        _state.wake_fd = server.PIPE[1] if getattr(server, "PIPE", None) else None
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

    def forksafe_manage_workers():
        result = manage_workers()
        # Every turn of the arbiter's loop, after its spawns: a worker
        # that reached worker-ready woke the loop up.
        if os.getpid() == server.pid:
            _guard(_check_generation, server)
        return result

    server.spawn_worker = forksafe_spawn_worker
    if manage_workers is not None:
        server.manage_workers = forksafe_manage_workers
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


def _check_generation(server):
    """generation-ready, once every worker forked in this generation is
    alive and ready, and there are as many as gunicorn wants."""
    if _state.host is None or _state.ready is None or _state.stopping:
        return
    members = [(_worker_id(w), pid) for pid, w in list(server.WORKERS.items())
               if getattr(w, "_forksafe_generation", None) == _state.generation
               and pid not in _state.statuses]
    done = _state.gen.complete(_state.ready, members, server.num_workers)
    if done is not None:
        workers, elapsed_ms = done
        _fire(server, "generation-ready", apps=[server.app],
              extra={"workers": workers, "elapsed_ms": elapsed_ms})


def _mark_ready(worker):
    """In a worker whose worker-ready handlers ran: marked, and the
    arbiter's loop woken up to look."""
    if _state.ready is None:
        return
    _state.ready.mark(_worker_id(worker), os.getpid())
    if _state.wake_fd is not None:
        try:
            os.write(_state.wake_fd, b".")
        except OSError:
            pass  # full (the arbiter wakes anyway) or gone


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


wait_status = adapter.wait_status


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
    killed = (status is not None and sent_signal is not None and os.WIFSIGNALED(status)
              and os.WTERMSIG(status) == sent_signal)
    return adapter.death_cause(status, harakiri=reason == "harakiri", killed_by_master=killed)


# ------------------------------------------------------------- workers


def _become_worker(worker):
    wid = _worker_id(worker)
    if _tracked(wid):
        # Any process can then list the workers' pids (metrics()).
        _state.shared.set_pid(wid, os.getpid())
    _state.worker = (wid, getattr(worker, "_forksafe_respawn", 0))
    _state.busy = False
    _state.pending = []
    _state.statuses = {}
    _state.signalled = {}


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
# One slot per worker id (slot 0 is the arbiter's, never a worker's): the
# EXITED flag (worker-exit completed) and the REASONS code the arbiter
# wrote; the header's fatal flag: a worker's fatal policy stopped gunicorn.


def _shared_init():
    if _state.shared is None:
        _state.shared = adapter.SharedState(MAX_WORKER_ID + 1)
    if _state.ready is None:
        _state.ready = ReadyBoard(MAX_WORKER_ID + 1)
    # The generation counts from here (master-start, right after, says it
    # again; with 0.2's hooks alone forksafe starts later and misses it).
    _state.gen.master_started()


def _shared_set_fatal():
    """A worker's fatal policy stopped gunicorn: the arbiter's on_exit makes
    the exit status 1."""
    if _state.shared is not None:
        _state.shared.set_fatal()


def _shared_fatal():
    return _state.shared is not None and _state.shared.fatal()


def _tracked(wid):
    return _state.shared is not None and wid is not None and 0 < wid <= MAX_WORKER_ID


def _shared_reset(wid):
    if _tracked(wid):
        _state.shared.claim(wid, 0)


def _shared_set(wid, field, value):
    """Field 0: worker-exit completed (1) or not (0); field 1: the reason."""
    if not _tracked(wid):
        return
    if field == 1:
        _state.shared.set_reason(wid, value)
    elif value:
        _state.shared.flag(wid, None, adapter.EXITED)
    else:
        reason = _state.shared.reason(wid)
        _state.shared.claim(wid, 0)
        _state.shared.set_reason(wid, reason)


def _shared_get(wid, field):
    if not _tracked(wid):
        return 0
    if field == 1:
        return _state.shared.reason(wid)
    return 1 if _state.shared.slot(wid)[1] & adapter.EXITED else 0


def _processes():
    """(kind, id, pid) of the arbiter and of each worker running now."""
    found = [("master", 0, _state.master_pid)] if _state.master_pid else []
    if _state.shared is not None:
        found += [("worker", wid, pid) for wid, pid in _state.shared.running() if wid > 0]
    return found


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


def _fire(owner, event, worker=None, child=None, reason=None, apps=(), extra=None):
    """Dispatches EVENT in this process (the core's subscriptions, then the
    ``_forksafe`` listeners, which APPS' registries join), then acts on the
    policy.  A dispatch started while another runs (a SIGCHLD hook in the
    middle of one) waits for it."""
    _state.pending.append((event, worker, child, reason, list(apps), extra or {}))
    if _state.busy:
        return
    _state.busy = True
    try:
        while _state.pending:
            item = _state.pending.pop(0)
            code = _dispatch(*item)
            _apply(code, item[0], owner)
    finally:
        _state.busy = False


def _dispatch(event, worker, child, reason, apps, extra):
    kind, wid, respawn = _identity(worker)
    _connect(apps)
    return _state.host.dispatch(event, kind, wid, respawn=respawn,
                                generation=_state.generation, child=child, reason=reason,
                                **extra)


def _connect(apps):
    """The registry of a loaded application hears every event, whether it
    included pyramid_forksafe or not: its listener joins the ``_forksafe``
    listeners (once)."""
    framework = adapter.framework()
    if framework is None or _state.runtime is None:
        return
    for listener in adapter.app_listeners([_app_of(app) for app in apps]):
        framework.connect(listener, _state.runtime.listeners, ENVIRONMENT)


def _app_of(app):
    """The WSGI application of a gunicorn application (None: not loaded
    yet; never loads one), or APP itself."""
    if app is not None and hasattr(app, "wsgi") and hasattr(app, "cfg"):
        return getattr(app, "callable", None)
    return app


def _wsgi_of(worker):
    return getattr(worker, "wsgi", None)


def _replay_post_fork(apps):
    """The application was loaded after the post-fork (preload_app off): its
    listeners hear that post-fork now, before worker-ready."""
    framework = adapter.framework()
    if framework is None or _state.runtime is None:
        return
    listeners = adapter.app_listeners([_app_of(app) for app in apps])
    payload = recorded(_state.runtime, "post-fork") if listeners else None
    if payload is None:
        return
    for listener in listeners:
        try:
            framework.replay(listener, payload)
        except Exception:
            _say("pyramid_forksafe: replaying post-fork failed:\n%s"
                 % traceback.format_exc().rstrip())


def recorded(runtime, event):
    """The payload of EVENT as last dispatched in this process, from the
    ``_forksafe`` module RUNTIME (the core keeps an unheard post-fork until
    asked for it; a module made elsewhere keeps ``delivered`` only)."""
    ask = getattr(runtime, "recorded", None)
    if ask is not None:
        return ask(event)
    return (getattr(runtime, "delivered", None) or {}).get(event)


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
         % (adapter.policy_word(code), event))
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


# ----------------------------------------------------------- fork hazards
# What the arbiter holds when it forks, measured under gunicorn 20.1 (sync
# and gthread workers, --preload, max_requests respawns, statsd, syslog):
# no thread but the one that forks (gunicorn starts its reloader and the
# gthread pool in the workers), and sockets that are not hazards: the
# listeners, the pipe it wakes itself with, UDP for statsd and syslog.  The
# one exception is gunicorn's syslog handler over TCP or a UNIX stream
# socket, which the workers log through by design: allowed by its address
# (own_rules).  Whatever else is found was opened by the application, which
# only --preload loads in the arbiter.


def own_rules(cfg):
    """Allow rules for the connections gunicorn itself holds in the
    arbiter: its syslog handler's, when ``syslog_addr`` is ``tcp://`` or a
    UNIX socket that may be a stream one (``#dgram`` says it is not)."""
    if cfg is None or not getattr(cfg, "syslog", False):
        return []
    address = getattr(cfg, "syslog_addr", None) or ""
    if address.startswith("unix://"):
        path, _, kind = address[len("unix://"):].partition("#")
        return [] if kind == "dgram" else adapter.peer_rules(path=path)
    if address.startswith("tcp://"):
        try:
            from gunicorn.glogging import parse_syslog_address

            _, (host, port) = parse_syslog_address(address)
        except Exception:  # gunicorn refuses it at start-up itself
            return []
        return adapter.peer_rules(host, port)
    return []


def hazard_options(cfg, options, where):
    """(hazards, hazard_allow) for the Host: the ``forksafe_hazards`` word
    and gunicorn's own rules, then ``forksafe_hazard_allow``'s."""
    mode = adapter.hazard_mode(options.get("hazards"), where, "forksafe_hazards")
    rules = own_rules(cfg) + adapter.allow_rules(options.get("hazard_allow"), where,
                                                 "forksafe_hazard_allow")
    return mode, rules


def _refuse_hazards(server):
    """forksafe_hazards = "fail", after a pre-fork dispatch in the arbiter
    that found hazards no rule allows (the core has said each): before the
    first worker, gunicorn halts (exit 1, listeners closed, pidfile
    removed, on_exit: master-exit) and nothing is forked; with workers
    running, gunicorn stops as on a fatal policy and the worker about to be
    forked exits at once (_refused_worker_exits)."""
    host = _state.host
    if host is None or getattr(host, "hazards", None) != "fail" or not _in_arbiter(server):
        return
    count = host.hazards_found()
    if not count:
        return
    plural = "" if count == 1 else "s"
    _state.fatal = True
    if not server.WORKERS:
        _say("forksafe-hazards = fail: the arbiter refuses to fork with %d hazard%s (above); "
             "exiting" % (count, plural))
        from gunicorn.errors import HaltServer

        # gunicorn's own way out of its main loop (as when a worker fails
        # to boot): it closes the listeners, removes the pidfile and calls
        # on_exit, whose master-exit then says status 1.
        raise HaltServer("forksafe-hazards = fail", 1)
    if not _state.hazard_refused:
        _say("forksafe-hazards = fail: %d hazard%s appeared (above); stopping gunicorn"
             % (count, plural))
        os.kill(os.getpid(), signal.SIGINT)
    _state.hazard_refused = True


def _refused_worker_exits(worker):
    """In a worker forked after the arbiter refused its hazards: it must not
    start on what it inherited; it exits before the application runs (no
    post-fork, no worker-exit: the arbiter reports its death)."""
    if not _state.hazard_refused:
        return
    _say("worker %s (pid %d) forked with fork hazards exits (forksafe-hazards = fail)"
         % (_worker_id(worker), os.getpid()))
    os._exit(1)


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


_say = adapter.say
