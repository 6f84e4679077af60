"""The main-process part of the Celery adapter (:mod:`forksafe.celery` is
what an application imports): its constants, the pure functions, and
:class:`MainProcess`: the host, the delivery, and what the main process
knows about the pool's children, and what it does about fork hazards."""
import atexit
import os
import signal
import threading
import traceback

from . import adapter
from ._celery_own import own_rules
from ._generation import Generation
from ._generation import ReadyBoard
from ._generation import drain
from ._generation import exited
from ._celery_own import refresh_main_thread_id
from .adapter import CHEAPER
from .adapter import EXITED
from .adapter import RELOADING
from .adapter import RUNNING
from .adapter import STOPPING
from .adapter import SharedState
from .adapter import status_from_exitcode
from .host import CHILD_EVENTS  # noqa: F401
from .host import REASON_EVENTS  # noqa: F401
from .host import ForksafeError
from .host import make_payload as _make_payload

#: payload["container"] and registry.pyramid_forksafe["environment"].
CONTAINER = ENVIRONMENT = "celery"
#: the source recorded in registry.pyramid_forksafe["executed_hooks"].
SOURCE = "containers.celery"
#: the environment variables read by install() and the worker.
SETTINGS_ENV = "FORKSAFE_SETTINGS"
GENERATION_ENV = "FORKSAFE_GENERATION"

#: policy codes returned by Host.dispatch.
OK, LOGGED, EXIT, FATAL = adapter.OK, adapter.LOG, adapter.EXIT, adapter.FATAL

#: billiard's exit codes (billiard.pool).
EX_OK = 0
EX_RECYCLE = 0x9B

# ------------------------------------------------------------- pure parts


def make_payload(event, kind, id, settings, global_settings, pid=None, ppid=None,
                 respawn=0, generation=0, child=None, reason=None, now=None):
    """The payload, with the keys and rules of the C core (lib/event.c):
    ``child`` only in pre-fork, post-fork-parent and child-death (no pid
    in pre-fork or when not known), ``reason`` only in the exit events."""
    return _make_payload(CONTAINER, event, kind, id, settings, global_settings, pid=pid,
                         ppid=ppid, respawn=respawn, generation=generation, child=child,
                         reason=reason, now=now)


def death_cause(exitcode, harakiri=False, controlled=False):
    """child-death's ``cause`` for a billiard exit code."""
    if harakiri:
        return "harakiri"
    if controlled:
        return "killed-by-master"
    return adapter.death_cause(status_from_exitcode(exitcode))


policy_code = adapter.policy_code


def split_settings(value):
    """``Host.settings`` as (settings, global_settings): either the JSON
    object of forksafe_host_settings_json ({"settings", "global_settings"})
    or the settings map alone."""
    if (isinstance(value, dict) and set(value) == {"settings", "global_settings"}
            and isinstance(value["settings"], dict)
            and isinstance(value["global_settings"], dict)):
        return dict(value["settings"]), dict(value["global_settings"])
    return dict(value or {}), {}


def subscriptions_text(subscriptions):
    """A str (lines) or an iterable of lines, as a tuple of lines."""
    if subscriptions is None:
        return ()
    if isinstance(subscriptions, str):
        subscriptions = subscriptions.splitlines()
    return tuple(line for line in (s.strip() for s in subscriptions) if line)


# ---------------------------------------------------------- main process


class MainProcess(object):
    """The adapter's main-process part (:class:`forksafe.celery.Adapter`
    adds the pool child's): the host, the process this is, the delivery,
    and what the main process knows about its children."""

    def __init__(self, app, settings_spec=None, subscriptions=(), registry=None,
                 on_error=None, timeout=0, verbose=False, host_factory=None,
                 settings_origin=None, hazards=None, hazard_allow=()):
        self.app = app
        self.settings_spec = settings_spec
        # Where settings_spec came from ("$FORKSAFE_SETTINGS"), for errors.
        self.settings_origin = settings_origin
        self.subscriptions = subscriptions_text(subscriptions)
        self.registry_source = registry
        self.on_error = on_error
        self.timeout = timeout
        self.verbose = verbose
        self.host_factory = host_factory
        self.hazards = hazards
        self.hazard_allow = hazard_allow
        # hazards = "fail" found a hazard once pool processes ran: the worker
        # stops, and a pool process forked from here on exits at once.
        self.hazard_refused = False
        self.host = None
        self.runtime = None  # the _forksafe module the host's dispatch runs
        self.registry = None
        self.listener = None  # the registry's, from the framework
        self.settings, self.global_settings = {}, {}
        self.shared = None
        self.lock = threading.RLock()
        # This process.
        self.kind, self.id, self.respawn = "master", 0, 0
        self.generation = 0
        self.master_pid = None
        self.worker = None  # the WorkController
        self.started_ns = 0
        self.master_exited = False
        self.worker_exited = False
        self.ready_sent = False
        # Main process: forks per slot, the children it made, what it told.
        self.forks = {}
        self.children = {}  # pid -> billiard Process
        self.reported = set()  # pids whose death was handled
        self.harakiri = set()  # pids the hard time limit is killing
        # Child: what the pool it came from was configured with.
        self.pool_limits = (None, None)
        self.restart_event = None
        self.pool_hooked = False
        self.index = None
        # generation-ready: the children's marks, the main process's
        # bookkeeping, and the pipe a child wakes the event loop with.
        self.ready_board = None
        self.gen = Generation()
        self.ready_pipe = None

    # ---- start-up, in the main process

    def start(self, worker=None):
        """worker_init: makes the host and the shared page, then master-start."""
        self.worker = worker
        self.master_pid = os.getpid()
        refresh_main_thread_id()
        self.generation = _int(os.environ.get(GENERATION_ENV), 0)
        if not self.settings_spec:
            # Not an error (handlers may come from install()'s subscriptions
            # and need no settings), but a worker that starts with nothing
            # to run must not look protected.
            self._say("no settings: install() got no settings_spec and $%s is not set, so "
                      "no [forksafe] section is read and handlers get empty settings%s"
                      % (SETTINGS_ENV, "" if self.subscriptions else
                         "; no subscription either: no handler will run"))
        self.open_host()
        self.shared = SharedState()
        self.shared.set_state(RUNNING)
        self.ready_board = ReadyBoard(adapter.SLOTS + 1)
        self.ready_pipe = os.pipe()
        for fd in self.ready_pipe:
            os.set_blocking(fd, False)
        try:
            self.attach_registry()
        except Exception:
            # Celery would log a receiver's exception and start anyway.
            self._say("cannot attach the Pyramid registry:\n%s" % traceback.format_exc().rstrip())
            raise SystemExit(1)
        atexit.register(self._at_exit)
        self.gen.master_started()
        result = self.fire("master-start")
        if result >= EXIT:
            self._say("on-error=%s: the worker does not start after a failed master-start "
                      "handler" % _word(result))
            raise SystemExit(1)
        return result

    def open_host(self):
        factory = self.host_factory
        if factory is None:
            from .host import Host as factory
        try:
            where = "install()"
            self.host = factory(
                CONTAINER,
                self.settings_spec,
                subscriptions=self.subscriptions,
                source="pyramid_forksafe.containers.celery",
                on_error=self.on_error,
                timeout=self.timeout or 0,
                verbose=bool(self.verbose),
                hazards=adapter.hazard_mode(self.hazards, where, "hazards"),
                # Celery's own threads and connections first (_celery_own).
                hazard_allow=own_rules(self.app)
                + adapter.allow_rules(self.hazard_allow, where, "hazard_allow"),
            )
        except SystemExit:
            raise
        except Exception as exc:
            # A bad configuration stops the worker before anything forks,
            # with the core's "FILE:LINE: what is wrong", and where the
            # path came from when it was not install()'s argument.
            origin = ""
            if self.settings_origin and self.settings_spec:
                origin = " (the settings path %s came from %s)" % (self.settings_spec,
                                                                   self.settings_origin)
            self._say(str(exc) + origin)
            raise SystemExit(1)
        self.settings, self.global_settings = split_settings(self.host.settings)
        # Every process of the worker has the _forksafe module, as under
        # uWSGI and gunicorn: an application that includes pyramid_forksafe
        # hears every event, and registry= joins its listeners.
        self.runtime = self.host.python_bridge()

    def attach_registry(self):
        """``registry=``: a registry, a Router, a callable returning one, or
        "bootstrap", reached through the framework (pyramid_forksafe)."""
        source = self.registry_source
        if source is None:
            return None
        framework = adapter.framework("install(registry=...)")
        if self.runtime is None:
            raise ValueError("install(registry=...) needs the core's _forksafe module: "
                             "the host has none")
        if isinstance(source, str):
            if source != "bootstrap":
                raise ValueError("registry must be a registry, a callable or 'bootstrap'")
            source = self._bootstrap
        if not hasattr(source, "notify") and hasattr(source, "registry"):
            source = source.registry  # a Pyramid Router
        elif not hasattr(source, "notify") and callable(source):
            source = source()
        self.registry = source
        self.listener = framework.attach(source, ENVIRONMENT, "celery worker (containers.celery)",
                                         self.runtime.listeners)
        return self.registry

    def _bootstrap(self):
        return adapter.framework("registry='bootstrap'").bootstrap(self.settings_spec)

    # ---- delivery

    def fire(self, event, child=None, reason=None, **extra):
        """Dispatches EVENT in this process: the core's subscriptions, then
        the ``_forksafe`` listeners (the registry among them).  EXTRA: the
        generation-ready fields.  Returns the strongest policy code."""
        with self.lock:
            if self.host is None:
                return OK
            try:
                return self.host.dispatch(
                    event, self.kind, self.id, respawn=self.respawn,
                    generation=self.generation, child=child, reason=reason, **extra)
            except ValueError as exc:  # an unknown event or kind: a bug here
                self._say("%s: %s" % (event, exc))
                return OK

    # ---- counters, in any process of the worker (they share them)

    def stats(self):
        """The counters and dispatch history: :meth:`forksafe.host.Host.stats`."""
        return self._started_host().stats()

    def metrics(self):
        """The same counters, the restart count and the memory of the main
        process and of each pool process running now (``smaps_rollup``) in
        Prometheus' text format 0.0.4, as uWSGI's ``forksafe-metrics``
        serves them."""
        processes = [("master", 0, self.master_pid)] if self.master_pid else []
        if self.shared is not None:
            processes += [("worker", index + 1, pid) for index, pid in self.shared.running()]
        return self._started_host().metrics(processes, self.generation)

    def _started_host(self):
        if self.host is None:
            raise ForksafeError("forksafe has not started in this Celery worker")
        return self.host

    def _say(self, message):
        adapter.say(message)

    def stop_worker(self, event, result):
        """fatal (or exit in the main process): a warm shutdown."""
        if self.master_pid is None:
            return
        self._say("on-error=%s: stopping the worker after a failed %s handler" % (
            _word(result), event))
        try:
            os.kill(self.master_pid, signal.SIGTERM)
        except OSError:
            pass

    def master_policy(self, event, result):
        if result >= EXIT:
            self.stop_worker(event, result)

    # ---- main process: the pool

    def set_state(self, state):
        if self.shared is not None and self.is_master():
            self.shared.set_state(state)

    def is_master(self):
        return self.master_pid is not None and os.getpid() == self.master_pid

    def pre_fork(self, pool, index):
        respawn = self.forks.get(index, 0)
        self.forks[index] = respawn + 1
        # Inherited by the child: the limits that explain its exit.
        self.pool_limits = (getattr(pool, "_maxtasksperchild", None),
                            getattr(pool, "_max_memory_per_child", None))
        child = {"kind": "worker", "id": index + 1, "respawn": respawn}
        self.master_policy("pre-fork", self.fire("pre-fork", child=child))
        self.refuse_hazards(index)
        return respawn

    def watch_readiness(self, hub, pool):
        """Under the event loop: a pool child that marked itself ready
        wakes the main process through the pipe, whose read end the hub
        watches, and the generation is looked at there and then."""
        if self.ready_pipe is None:
            return

        def woken(*_args):
            drain(self.ready_pipe[0])
            self.check_generation(pool)

        hub.add_reader(self.ready_pipe[0], woken)

    def check_generation(self, pool):
        """generation-ready, once every live pool process of the generation
        (as many as the pool wants) has reached worker-ready."""
        if self.host is None or self.ready_board is None or not self.is_master():
            return
        if self.shared is not None and self.shared.state()[0] == STOPPING:
            return
        members = [(process.index + 1, process.pid) for process in list(pool._pool)
                   if process.pid and getattr(process, "index", None) is not None
                   and not exited(process.pid)]
        done = self.gen.complete(self.ready_board, members,
                                 getattr(pool, "_processes", None) or len(members))
        if done is not None:
            workers, elapsed_ms = done
            self.master_policy("generation-ready", self.fire(
                "generation-ready", workers=workers, elapsed_ms=elapsed_ms))

    def refuse_hazards(self, index):
        """hazards = "fail", after a pre-fork that found hazards no rule
        allows (the core has said each).  Before any pool process: the
        worker stops with status 1 (SystemExit out of the pool's start,
        which Celery turns into a stop, master-exit included) and forks
        nothing.  Later: the worker stops (warm shutdown, status 1), and the
        pool process about to be forked exits at once (refused_child_exits)
        if it is forked at all (Celery's SIGTERM handler raises in a worker
        with one thread: here).  billiard's supervisor thread forks respawns
        without the event loop: an exception there would only end that
        thread."""
        if self.hazards != "fail" or self.host is None:
            return
        count = self.host.hazards_found()
        if not count:
            return
        plural = "" if count == 1 else "s"
        refused, self.hazard_refused = self.hazard_refused, True  # finish(): status 1
        if not self.children and threading.current_thread() is threading.main_thread():
            self._say("forksafe-hazards = fail: the worker refuses to fork pool process %d with "
                      "%d hazard%s (above); exiting" % (index + 1, count, plural))
            raise SystemExit(1)
        if not refused:
            self._say("forksafe-hazards = fail: %d hazard%s appeared (above); stopping the "
                      "worker" % (count, plural))
            try:
                os.kill(self.master_pid, signal.SIGTERM)
            except OSError:
                pass

    def post_fork_parent(self, process, index, respawn):
        self.children[process.pid] = process
        child = {"kind": "worker", "id": index + 1, "pid": process.pid, "respawn": respawn}
        self.master_policy("post-fork-parent", self.fire("post-fork-parent", child=child))

    def process_gone(self, process):
        """A pool child was reaped: child-death unless it completed
        worker-exit."""
        pid = process.pid
        if pid is None or pid in self.reported:
            return
        self.reported.add(pid)
        self.children.pop(pid, None)
        index = getattr(process, "index", None)
        slot = self.shared.slot(index) if self.shared is not None else None
        if slot is not None and slot[0] == pid and slot[1] & EXITED:
            return
        exitcode = process.exitcode
        child = {
            "kind": "worker",
            "id": (index + 1) if index is not None else 0,
            "pid": pid,
            "respawn": max(self.forks.get(index, 1) - 1, 0),
            "status": status_from_exitcode(exitcode),
            "cause": death_cause(exitcode, harakiri=pid in self.harakiri,
                                 controlled=getattr(process, "_controlled_termination", False)),
        }
        self.harakiri.discard(pid)
        self.master_policy("child-death", self.fire("child-death", child=child))

    def reap_report(self):
        """At master-exit: children reaped without the pool's bookkeeping."""
        for pid, process in list(self.children.items()):
            if getattr(process, "exitcode", None) is not None:
                self.process_gone(process)

    def finish(self, reason=None):
        """master-exit, once."""
        if self.master_exited or not self.is_master():
            return OK
        self.master_exited = True
        self.reap_report()
        if reason is None:
            state, _changed = self.shared.state() if self.shared else (RUNNING, 0)
            reason = "reload" if state == RELOADING else "shutdown"
        if reason == "reload":
            os.environ[GENERATION_ENV] = str(self.generation + 1)
        result = self.fire("master-exit", reason=reason)
        if result >= EXIT:
            self._say("on-error=%s: the worker exits with status 1 after a failed "
                      "master-exit handler" % _word(result))
        if (result >= EXIT or self.hazard_refused) and self.worker is not None:
            self.worker.exitcode = 1
            # Celery 5.2's `celery worker` exits 0 whatever worker.exitcode
            # says (click ignores what its command returns); a SystemExit
            # from this worker_shutdown receiver, the last step of the stop
            # (Celery's signal dispatch catches Exception only), does not.
            raise SystemExit(1)
        return result

    def _at_exit(self):
        # A cold shutdown sends no worker_shutdown.
        if self.is_master() and not self.master_exited:
            try:
                result = self.finish()
            except SystemExit:  # status 1 (atexit ignores SystemExit)
                result = FATAL
            if result >= EXIT:
                os._exit(1)


_word = adapter.policy_word


def _int(text, default):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _mark_stopping(owner):
    if owner is None or owner.shared is None or not owner.is_master():
        return
    if owner.shared.state()[0] != RELOADING:
        owner.set_state(STOPPING)


def _wrap_terminate_controlled(owner, process):
    """Autoscale's shrink ends a child with terminate_controlled(): mark its
    slot so its worker-exit says "cheaper"."""
    original = getattr(process, "terminate_controlled", None)
    if original is None:
        return

    def terminate_controlled():
        if owner.shared is not None:
            owner.shared.flag(getattr(process, "index", None), process.pid, CHEAPER)
        return original()

    process.terminate_controlled = terminate_controlled


