"""Celery: the forksafe events of a Celery worker with the prefork pool.

In the Celery app module::

    from celery import Celery
    from pyramid_forksafe.containers.celery import install

    app = Celery("proj", broker="redis://...")
    install(app)            # settings from $FORKSAFE_SETTINGS (PATH[#NAME])
    # or: install(app, settings_spec="/srv/app/production.ini#main",
    #             subscriptions=["post-fork python:proj.db:dispose_engine"],
    #             registry="bootstrap")

and run ``celery -A proj worker`` (prefork pool, the default).  The events go
to the subscriptions of the ``[forksafe]`` section of the settings file and
of ``subscriptions`` (the same ``exec:``, ``dl:``, ``symbol:`` and
``python:`` handlers as under uWSGI: the same C core runs them, through
:mod:`pyramid_forksafe.host`), then, when a Pyramid registry is attached, to
its subscribers through :func:`pyramid_forksafe.dispatch`.

Where each event comes from (``main`` is Celery's MainProcess, ``child`` a
billiard pool process):

================== ======= ==================================================
event              process Celery / billiard moment
================== ======= ==================================================
master-start       main    ``worker_init`` signal: app loaded, before the
                           bootsteps are built and before the pool forks
pre-fork           main    ``Pool._create_worker_process(i)`` before
                           ``Process.start()`` (our pool subclass)
post-fork-parent   main    the same method, after ``start()``: real pid
post-fork          child   ``worker_process_init`` signal: end of Celery's
                           ``process_initializer`` (app finalized in the
                           child, task tracers built)
worker-ready       child   billiard ``Worker.on_loop_start``, after the
                           child sent WORKER_UP: the child takes work next
worker-exit        child   ``worker_process_shutdown`` signal (billiard's
                           ``on_process_exit``) when the child leaves its
                           loop; ``reason`` below
child-death        main    ``Pool._join_exited_workers`` (the pool reaping
                           a child) for a child that did not complete
                           worker-exit; checked again at master-exit
master-exit        main    ``worker_shutdown`` signal (warm shutdown), or
                           at interpreter exit after a cold shutdown, which
                           sends no ``worker_shutdown``
================== ======= ==================================================

pre-fork, post-fork-parent, worker-ready and child-death come from a
bootstep that :func:`install` adds to ``app.steps["worker"]``.  It runs
after Celery's Pool step created the prefork ``TaskPool`` and before the
pool starts, and gives that one TaskPool instance a subclass of its billiard
pool class (``AsynPool`` under the event loop, ``billiard.pool.Pool``
otherwise) and of that pool's ``Worker``; the classes themselves are not
changed.  Celery has no signal for these moments.  With another pool (solo,
threads, eventlet, gevent) nothing forks: only master-start and master-exit
are delivered.

"Ready" under Celery: the child finished Celery's initializer (the app is
finalized, post-fork ran) and billiard's ``after_fork``, and it has told the
main process it is up (WORKER_UP).  It takes its first task right after the
worker-ready handlers return.  worker-ready is not sent before WORKER_UP:
AsynPool kills a child that does not send it within
``worker_proc_alive_timeout`` (4 s), so a slow worker-ready handler would
get the child killed.  Without the bootstep (a pool class that is not
Celery's prefork TaskPool), worker-ready follows post-fork directly.

The process: the main process is ``{"kind": "master", "id": 0}``.  A pool
child is ``{"kind": "worker", "id": INDEX + 1}``, where INDEX is billiard's
slot index, so a respawned child keeps the id of the child it replaces, and
``respawn`` counts the earlier forks of that slot.  ``generation`` counts
the worker's SIGHUP restarts (Celery re-executes itself; the count is passed
in the ``FORKSAFE_GENERATION`` environment variable).

worker-exit ``reason``: ``shutdown`` (the worker is stopping), ``reload``
(SIGHUP restart, or ``pool_restart``), ``max-requests``
(``--max-tasks-per-child`` reached), ``recycle``
(``--max-memory-per-child`` exceeded), ``cheaper`` (autoscale shrank the
pool), or ``exit`` (anything else).  A child killed by SIGKILL or a crash
never reaches worker-exit.  master-exit ``reason``: ``shutdown`` or
``reload`` (SIGHUP).  child-death ``child.cause``: ``harakiri`` (the hard
time limit killed it), ``killed-by-master`` (a termination the pool asked
for: autoscale shrink, revoke with terminate), else ``signal`` or ``exit``.
The main process knows that a child completed worker-exit from a flag the
child sets in a page of shared memory (``SharedState``).  The same page
holds the state the main process is in (stopping, reloading), which the
children read to give their reason.

Settings and Pyramid: ``settings_spec`` (or ``$FORKSAFE_SETTINGS``) is
parsed once, by the core, in the main process at worker_init.  Every child
inherits the result; nothing is parsed per fork.  ``payload["settings"]``
is the app section's ``local_conf``, as under uWSGI.  ``registry`` attaches
a Pyramid registry.  It can be a registry, a Router (its ``.registry`` is
used), a callable that returns one (called at worker_init), or
``"bootstrap"``, which loads the application of ``settings_spec`` with
``pyramid.paster.bootstrap`` in the main process, so the pool children
inherit it.  Every event reaches that registry's subscribers as
``pyramid_forksafe.events`` classes through :func:`pyramid_forksafe.dispatch`
(source ``"containers.celery"``).  The payload has the same keys as the one
the core gives its handlers.

Failure policy (the code :meth:`Host.dispatch` returns):

- In a pool child, ``exit`` delivers worker-exit with reason ``exit`` and
  then ends the child with status 1; billiard forks a replacement.
- In a pool child, ``fatal`` sends SIGTERM to the main process (Celery's
  warm shutdown), which stops this child too.  Unlike under uWSGI, the child
  does not exit at once: Celery gives up with "Could not start worker
  processes" if a child dies before the consumer has started.
- In the main process ``exit`` acts as ``fatal``.  At master-start the
  worker does not start (status 1).  Later, the main process gets SIGTERM.
  At master-exit, the worker's exit status becomes 1.
- A Pyramid subscriber that raises is logged with its traceback and counts
  as a failure under the global ``on_error``.

Limits:

- A pool child that dies before the consumer has started makes Celery stop
  ("Could not start worker processes"), whatever forksafe does.
- SIGHUP restarts re-execute ``sys.argv``.  ``python -m celery`` does not
  survive this: Celery then runs ``celery/__main__.py`` as a script.  Use
  the ``celery`` script, or a script that calls
  ``celery.__main__.main()``.
- The hooked classes are made at run time, so the pool must fork (Linux,
  the default); the execv start method of billiard is not supported.
"""
import atexit
import logging
import mmap
import os
import signal
import struct
import sys
import threading
import time
import traceback

from .. import core
from ..host import POLICY_CODES
from ..host import child_object

log = logging.getLogger("pyramid_forksafe")

#: payload["container"] and registry.pyramid_forksafe["environment"].
CONTAINER = ENVIRONMENT = "celery"
#: the source recorded in registry.pyramid_forksafe["executed_hooks"].
SOURCE = "containers.celery"
#: the environment variables read by install() and the worker.
SETTINGS_ENV = "FORKSAFE_SETTINGS"
GENERATION_ENV = "FORKSAFE_GENERATION"

#: the events that carry "child" and "reason" (as lib/event.c).
CHILD_EVENTS = ("pre-fork", "post-fork-parent", "child-death")
REASON_EVENTS = ("worker-exit", "master-exit")

#: policy codes returned by Host.dispatch.
OK, LOGGED, EXIT, FATAL = 0, 1, 2, 3

#: billiard's exit codes (billiard.pool).
EX_OK = 0
EX_RECYCLE = 0x9B

# ----------------------------------------------------------------- shared
# A page shared by the main process and every pool child (an anonymous
# MAP_SHARED mapping made before the first fork): the instance state, so a
# child knows why it is asked to leave, and one record per pool slot, so the
# main process knows whether a dead child completed worker-exit.
RUNNING, STOPPING, RELOADING = 0, 1, 2
_HEADER = struct.Struct("=iiq")  # state, unused, state changed (monotonic ns)
_SLOT = struct.Struct("=iiq")  # pid, flags, unused
SLOTS = 1024
EXITED = 1  # the child completed worker-exit
CHEAPER = 2  # the main process is shrinking the pool by this child


class SharedState(object):
    """The shared page.  Offsets and layout are private to this module."""

    def __init__(self, slots=SLOTS):
        self.slots = slots
        self.map = mmap.mmap(-1, _HEADER.size + _SLOT.size * slots)

    def set_state(self, state):
        _HEADER.pack_into(self.map, 0, state, 0, time.monotonic_ns())

    def state(self):
        """(state, monotonic ns when it was set)."""
        state, _unused, changed = _HEADER.unpack_from(self.map, 0)
        return state, changed

    def _offset(self, index):
        if index is None or not 0 <= index < self.slots:
            return None
        return _HEADER.size + _SLOT.size * index

    def claim(self, index, pid):
        """A new child in slot INDEX: its pid, no flags."""
        offset = self._offset(index)
        if offset is not None:
            _SLOT.pack_into(self.map, offset, pid, 0, 0)

    def slot(self, index):
        """(pid, flags) of slot INDEX, or None if it is not tracked."""
        offset = self._offset(index)
        if offset is None:
            return None
        pid, flags, _unused = _SLOT.unpack_from(self.map, offset)
        return pid, flags

    def flag(self, index, pid, flag):
        """Sets FLAG in slot INDEX if it belongs to PID."""
        offset = self._offset(index)
        if offset is None:
            return
        current, flags, _unused = _SLOT.unpack_from(self.map, offset)
        if current == pid:
            _SLOT.pack_into(self.map, offset, pid, flags | flag, 0)


# ------------------------------------------------------------- pure parts


def make_payload(event, kind, id, settings, global_settings, pid=None, ppid=None,
                 respawn=0, generation=0, child=None, reason=None, now=None):
    """The payload, with the keys and rules of the C core (lib/event.c):
    ``child`` only in pre-fork, post-fork-parent and child-death (no pid
    in pre-fork or when not known), ``reason`` only in the exit events."""
    payload = {
        "event": event,
        "container": CONTAINER,
        "process": {
            "kind": kind,
            "id": id,
            "pid": os.getpid() if not pid else pid,
            "ppid": os.getppid() if not ppid else ppid,
        },
        "generation": generation,
        "respawn": respawn,
        "time": time.time() if now is None else now,
        "settings": dict(settings or {}),
        "global_settings": dict(global_settings or {}),
    }
    if child is not None and event in CHILD_EVENTS:
        payload["child"] = child_object(event, child)
    if reason is not None and event in REASON_EVENTS:
        payload["reason"] = reason
    return payload


def status_from_exitcode(exitcode):
    """A waitpid status from billiard's ``Process.exitcode`` (``-N``:
    killed by signal N, else the exit status); None if unknown."""
    if exitcode is None:
        return None
    if exitcode < 0:
        return -exitcode & 0x7F
    return (exitcode & 0xFF) << 8


def death_cause(exitcode, harakiri=False, controlled=False):
    """child-death's ``cause`` for a billiard exit code."""
    if harakiri:
        return "harakiri"
    if controlled:
        return "killed-by-master"
    if exitcode is None:
        return "unknown"
    return "signal" if exitcode < 0 else "exit"


def exit_reason(exitcode, state=RUNNING, state_changed_ns=0, started_ns=0, flags=0,
                restart_requested=False, maxtasks=None, max_memory=None, rss_kb=None):
    """worker-exit's ``reason`` in a pool child leaving its loop with
    EXITCODE (see the module docstring).  The instance STATE counts only if
    it changed after the child started."""
    if flags & CHEAPER:
        return "cheaper"
    state_applies = state_changed_ns > started_ns
    if state_applies and state == RELOADING:
        return "reload"
    if state_applies and state == STOPPING:
        return "shutdown"
    if restart_requested:
        return "reload"
    if exitcode == EX_RECYCLE:
        if max_memory and (not maxtasks or (rss_kb is not None and rss_kb > max_memory)):
            return "recycle"
        return "max-requests"
    return "exit"


def policy_code(on_error):
    """The dispatch code a failure has under the on-error word ON_ERROR."""
    return POLICY_CODES.get(on_error or "log", LOGGED)


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


# ---------------------------------------------------------------- adapter


class Adapter(object):
    """One per worker (the one :func:`install` made): the host, the process
    this is, and what the main process knows about its children."""

    def __init__(self, app, settings_spec=None, subscriptions=(), registry=None,
                 on_error=None, timeout=0, verbose=False, host_factory=None,
                 settings_origin=None):
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
        self.host = None
        self.registry = None
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

    # ---- start-up, in the main process

    def start(self, worker=None):
        """worker_init: makes the host and the shared page, then master-start."""
        self.worker = worker
        self.master_pid = os.getpid()
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
        try:
            self.attach_registry()
        except Exception:
            # Celery would log a receiver's exception and start anyway.
            self._say("cannot attach the Pyramid registry:\n%s" % traceback.format_exc().rstrip())
            raise SystemExit(1)
        atexit.register(self._at_exit)
        result = self.fire("master-start")
        if result >= EXIT:
            self._say("on-error=%s: the worker does not start after a failed master-start "
                      "handler" % _word(result))
            raise SystemExit(1)
        return result

    def open_host(self):
        factory = self.host_factory
        if factory is None:
            from ..host import Host as factory
        try:
            self.host = factory(
                CONTAINER,
                self.settings_spec,
                subscriptions=self.subscriptions,
                source="pyramid_forksafe.containers.celery",
                on_error=self.on_error,
                timeout=self.timeout or 0,
                verbose=bool(self.verbose),
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

    def attach_registry(self):
        source = self.registry_source
        if source is None:
            return None
        if isinstance(source, str):
            if source != "bootstrap":
                raise ValueError("registry must be a registry, a callable or 'bootstrap'")
            source = self._bootstrap
        if not hasattr(source, "notify") and hasattr(source, "registry"):
            source = source.registry  # a Pyramid Router
        elif not hasattr(source, "notify") and callable(source):
            source = source()
        self.registry = source
        state = core.state_of(self.registry)
        state["environment"] = ENVIRONMENT
        state["mechanism"] = "forksafe"
        state["autoconfigure.log"].append("celery worker (containers.celery)")
        state["status"] = "celery signals configured"
        return self.registry

    def _bootstrap(self):
        if not self.settings_spec or self.settings_spec.split("#")[0].endswith(".json"):
            raise ValueError("registry='bootstrap' needs an ini settings file")
        from pyramid.paster import bootstrap

        env = bootstrap(self.settings_spec)
        env["closer"]()  # no request stays pushed in the main process
        return env["registry"]

    # ---- delivery

    def fire(self, event, child=None, reason=None):
        """Delivers EVENT from this process to the host, then to the
        registry.  Returns the strongest policy code."""
        with self.lock:
            result = OK
            if self.host is not None:
                try:
                    result = self.host.dispatch(
                        event, self.kind, self.id, respawn=self.respawn,
                        generation=self.generation, child=child, reason=reason)
                except ValueError as exc:  # an unknown event or kind: a bug here
                    self._say("%s: %s" % (event, exc))
            if self.registry is not None:
                payload = make_payload(
                    event, self.kind, self.id, self.settings, self.global_settings,
                    respawn=self.respawn, generation=self.generation, child=child,
                    reason=reason)
                try:
                    core.dispatch(self.registry, payload, source=SOURCE)
                except Exception:
                    self._say("pyramid subscriber failed on %s in %s %d (pid %d):\n%s" % (
                        event, self.kind, self.id, os.getpid(), traceback.format_exc().rstrip()))
                    result = max(result, policy_code(self.on_error))
            return result

    def _say(self, message):
        try:
            sys.stderr.write("[forksafe] %s\n" % message)
            sys.stderr.flush()
        except Exception:
            pass

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
        return respawn

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
            if self.worker is not None:
                self.worker.exitcode = 1
        return result

    def _at_exit(self):
        # A cold shutdown sends no worker_shutdown.
        if self.is_master() and not self.master_exited:
            result = self.finish()
            if result >= EXIT:
                os._exit(1)

    # ---- pool child

    def child_started(self):
        """worker_process_init: this process is pool child INDEX."""
        from billiard.process import current_process

        process = current_process()
        index = getattr(process, "index", None)
        self.lock = threading.RLock()  # another thread may have held it at fork
        self.kind = "worker"
        self.id = (index + 1) if index is not None else 0
        self.respawn = max(self.forks.get(index, 1) - 1, 0) if index is not None else 0
        self.index = index
        self.started_ns = time.monotonic_ns()
        self.worker_exited = False
        self.ready_sent = False
        self.master_exited = True  # only the main process has a master-exit
        self.children, self.reported, self.harakiri = {}, set(), set()
        if self.shared is not None:
            self.shared.claim(index, os.getpid())
        self.child_policy("post-fork", self.fire("post-fork"))
        if not self.pool_hooked:
            # No billiard hook in this pool: ready once initialized.
            self.child_ready()

    def child_ready(self):
        if self.ready_sent or self.kind != "worker":
            return
        self.ready_sent = True
        self.child_policy("worker-ready", self.fire("worker-ready"))

    def child_exit(self, exitcode):
        """worker_process_shutdown: worker-exit with its reason."""
        if self.kind != "worker" or self.worker_exited:
            return OK
        self.worker_exited = True
        state, changed = self.shared.state() if self.shared is not None else (RUNNING, 0)
        slot = self.shared.slot(self.index) if self.shared is not None else None
        flags = slot[1] if slot is not None and slot[0] == os.getpid() else 0
        maxtasks, max_memory = self.pool_limits
        rss = None
        if exitcode == EX_RECYCLE and max_memory:
            rss = _rss_kb()
        restart = self.restart_event is not None and _is_set(self.restart_event)
        reason = exit_reason(exitcode, state, changed, self.started_ns, flags,
                             restart_requested=restart, maxtasks=maxtasks,
                             max_memory=max_memory, rss_kb=rss)
        return self._child_exit(reason)

    def _child_exit(self, reason):
        self.worker_exited = True
        result = self.fire("worker-exit", reason=reason)
        if self.shared is not None:
            self.shared.flag(self.index, os.getpid(), EXITED)
        if result >= FATAL:
            self.stop_worker("worker-exit", result)
        return result

    def child_policy(self, event, result):
        """exit: worker-exit ("exit"), then status 1 (billiard forks a new
        child).  fatal: the worker's warm shutdown, which stops this child
        too (a child that died at start-up would instead make Celery fail
        with "Could not start worker processes")."""
        if result >= FATAL:
            self.stop_worker(event, result)
            return
        if result < EXIT:
            return
        self._say("on-error=exit: worker %d (pid %d) exits after a failed %s handler" % (
            self.id, os.getpid(), event))
        if not self.worker_exited:
            self._child_exit("exit")
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        os._exit(1)


def _word(result):
    return "fatal" if result >= FATAL else "exit"


def _int(text, default):
    try:
        return int(text)
    except (TypeError, ValueError):
        return default


def _is_set(event):
    try:
        return bool(event.is_set())
    except Exception:
        return False


def _rss_kb():
    try:
        from billiard.compat import mem_rss

        return mem_rss()
    except Exception:
        return None


# ------------------------------------------------------- billiard hooks


class PoolHooks(object):
    """Mixed into the TaskPool's billiard pool class by the bootstep."""

    forksafe = None  # the Adapter

    def _create_worker_process(self, i):
        adapter = self.forksafe
        if adapter is None or not adapter.is_master():
            return super()._create_worker_process(i)
        respawn = adapter.pre_fork(self, i)
        process = super()._create_worker_process(i)
        adapter.post_fork_parent(process, i, respawn)
        _wrap_terminate_controlled(adapter, process)
        return process

    def _join_exited_workers(self, shutdown=False):
        adapter = self.forksafe
        before = list(self._pool)
        try:
            return super()._join_exited_workers(shutdown)
        finally:
            if adapter is not None and adapter.is_master():
                remaining = set(id(process) for process in self._pool)
                for process in before:
                    if id(process) not in remaining:
                        adapter.process_gone(process)

    def _on_hard_timeout(self, job):  # AsynPool only
        adapter = self.forksafe
        if adapter is not None:
            result = self._cache.get(job)
            pid = getattr(result, "_worker_pid", None)
            if pid:
                adapter.harakiri.add(pid)
        return super()._on_hard_timeout(job)

    def close(self):
        _mark_stopping(self.forksafe)
        return super().close()

    def terminate(self):
        _mark_stopping(self.forksafe)
        return super().terminate()

    def restart(self):
        if self.forksafe is not None:
            self.forksafe.set_state(RELOADING)
        return super().restart()


def _mark_stopping(adapter):
    if adapter is None or adapter.shared is None or not adapter.is_master():
        return
    if adapter.shared.state()[0] != RELOADING:
        adapter.set_state(STOPPING)


def _wrap_terminate_controlled(adapter, process):
    """Autoscale's shrink ends a child with terminate_controlled(): mark its
    slot so its worker-exit says "cheaper"."""
    original = getattr(process, "terminate_controlled", None)
    if original is None:
        return

    def terminate_controlled():
        if adapter.shared is not None:
            adapter.shared.flag(getattr(process, "index", None), process.pid, CHEAPER)
        return original()

    process.terminate_controlled = terminate_controlled


class WorkerHooks(object):
    """Mixed into the pool's billiard Worker (the code a child runs)."""

    forksafe = None

    def on_loop_start(self, pid):
        result = super().on_loop_start(pid)
        adapter = self.forksafe
        if adapter is not None:
            adapter.restart_event = getattr(self, "_shutdown", None)
            adapter.child_ready()
        return result


_hooked_classes = {}


def hooked_pool_class(base, adapter):
    """BASE (a billiard pool class) with the forksafe hooks, one class per
    (base, adapter)."""
    key = (base, id(adapter))
    cls = _hooked_classes.get(key)
    if cls is None:
        worker = type("Forksafe" + base.Worker.__name__, (WorkerHooks, base.Worker),
                      {"forksafe": adapter, "__module__": __name__})
        cls = type("Forksafe" + base.__name__, (PoolHooks, base),
                   {"forksafe": adapter, "Worker": worker, "__module__": __name__})
        _hooked_classes[key] = cls
    return cls


def hook_task_pool(pool, adapter):
    """Gives a prefork TaskPool (before it starts) hooked pool classes.
    Returns False for other pools (nothing forks there)."""
    from celery.concurrency.prefork import TaskPool

    if not isinstance(pool, TaskPool):
        return False
    for name in ("Pool", "BlockingPool"):
        base = getattr(pool, name)
        if not issubclass(base, PoolHooks):
            setattr(pool, name, hooked_pool_class(base, adapter))
    adapter.pool_hooked = True
    return True


# ---------------------------------------------------------------- install

_adapters = {}


def install(app, settings_spec=None, subscriptions=(), registry=None, on_error=None,
            timeout=0, verbose=False, host_factory=None):
    """Connects APP's workers to forksafe.  Call it in the Celery app module.

    - ``settings_spec``: ``PATH[#NAME]`` as ``forksafe-settings`` (default
      ``$FORKSAFE_SETTINGS``; none: no settings).  Its ``[forksafe]``
      section is subscribed.
    - ``subscriptions``: more ``forksafe-subscribe`` values (a list, or one
      per line).
    - ``registry``: a Pyramid registry, a callable returning one (called in
      the main process at worker start), or ``"bootstrap"``: the
      application of ``settings_spec`` loaded with
      ``pyramid.paster.bootstrap`` in the main process, inherited by the
      pool children.  None: no Pyramid events.
    - ``on_error`` (``log``/``exit``/``fatal``), ``timeout`` (exec
      handlers, seconds), ``verbose``: as the uWSGI options.

    Nothing happens until a worker starts: a client that imports the app
    module only sends tasks.  Returns the Adapter (one per app)."""
    adapter = _adapters.get(id(app))
    if adapter is not None and adapter.app is app:
        return adapter
    settings_spec, origin = settings_and_origin(settings_spec)
    adapter = Adapter(app, settings_spec, subscriptions, registry, on_error, timeout, verbose,
                      host_factory, origin)
    _adapters[id(app)] = adapter
    _connect(app, adapter)
    return adapter


def settings_and_origin(settings_spec):
    """(PATH[#NAME] or None, where it came from): install()'s argument, or
    else $FORKSAFE_SETTINGS, named so that an error can say so."""
    if settings_spec is not None:
        return settings_spec, None
    settings_spec = os.environ.get(SETTINGS_ENV) or None
    return settings_spec, ("$" + SETTINGS_ENV if settings_spec else None)


def _connect(app, adapter):
    from celery import bootsteps
    from celery import signals

    uid = "pyramid_forksafe.containers.celery.%d" % id(adapter)

    def on_worker_init(sender=None, **_kwargs):
        if getattr(sender, "app", app) is app:
            adapter.start(sender)

    def on_worker_process_init(**_kwargs):
        if adapter.master_pid is not None and not adapter.is_master():
            adapter.child_started()

    def on_worker_process_shutdown(pid=None, exitcode=None, **_kwargs):
        if adapter.kind == "worker":
            adapter.child_exit(exitcode)

    def on_worker_shutting_down(**_kwargs):
        _mark_stopping(adapter)

    def on_worker_ready(**_kwargs):
        if adapter.is_master():
            _wrap_restart_signal(adapter)

    def on_worker_shutdown(sender=None, **_kwargs):
        if getattr(sender, "app", app) is app:
            adapter.finish()

    for sig, receiver in (
        (signals.worker_init, on_worker_init),
        (signals.worker_process_init, on_worker_process_init),
        (signals.worker_process_shutdown, on_worker_process_shutdown),
        (signals.worker_shutting_down, on_worker_shutting_down),
        (signals.worker_ready, on_worker_ready),
        (signals.worker_shutdown, on_worker_shutdown),
    ):
        sig.connect(receiver, weak=False, dispatch_uid=uid + "." + sig.name)

    class ForksafePool(bootsteps.Step):
        """Hooks the prefork pool before it starts (after Celery's Pool
        step created it)."""

        name = "pyramid_forksafe.containers.celery.ForksafePool"
        requires = ("celery.worker.components:Pool",)

        def create(self, worker):
            if adapter.master_pid is not None:
                hook_task_pool(worker.pool, adapter)

    app.steps["worker"].add(ForksafePool)
    adapter.step = ForksafePool


def _wrap_restart_signal(adapter):
    """Celery restarts a worker on SIGHUP (warm shutdown, then execv):
    remember it so the exits say "reload"."""
    try:
        previous = signal.getsignal(signal.SIGHUP)
    except (AttributeError, ValueError):
        return
    if not callable(previous) or getattr(previous, "forksafe_wrapped", False):
        return

    def on_sighup(signum, frame):
        adapter.set_state(RELOADING)
        return previous(signum, frame)

    on_sighup.forksafe_wrapped = True
    try:
        signal.signal(signal.SIGHUP, on_sighup)
    except ValueError:  # not the main thread
        pass


__all__ = (
    "Adapter",
    "SharedState",
    "exit_reason",
    "hook_task_pool",
    "install",
    "make_payload",
)
