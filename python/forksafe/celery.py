"""Celery: the forksafe events of a Celery worker with the prefork pool.

In the Celery app module::

    from celery import Celery
    from forksafe.celery import install

    app = Celery("proj", broker="redis://...")
    install(app)            # settings from $FORKSAFE_SETTINGS (PATH[#NAME])
    # or: install(app, settings_spec="/srv/app/production.ini#main",
    #             subscriptions=["post-fork python:proj.db:dispose_engine"],
    #             registry="bootstrap")

and run ``celery -A proj worker`` (prefork pool, the default).  The events go
to the subscriptions of the ``[forksafe]`` section of the settings file and
of ``subscriptions`` (the same ``exec:``, ``dl:``, ``symbol:`` and
``python:`` handlers as under uWSGI: the same C core runs them, through
:mod:`forksafe.host`), then to the callables of ``_forksafe.listeners``
(every process has the core's ``_forksafe`` module, as under uWSGI), among
them the registries of Pyramid applications that include pyramid_forksafe
and the one ``registry`` attaches.  Without ``registry`` nothing here needs
Pyramid.  ``pyramid_forksafe.containers.celery`` (0.3's path) is this
module.  The adapter's two halves: :class:`~forksafe._celery_main.MainProcess`
and :class:`~forksafe._celery_child.PoolChild`.

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
generation-ready   main    every pool process of the generation (as many
                           as the pool wants, alive) passed worker-ready:
                           each marks a shared page and wakes the event
                           loop through a pipe (without the event loop,
                           the pool's rounds of ``_join_exited_workers``
                           look)
================== ======= ==================================================

A generation is the pool processes of one master-start (the worker's
start, again after a SIGHUP restart) or of a ``pool_restart``, which
replaces every pool process under the same main process (``generation``
stays).  A pool process replaced for ``--max-tasks-per-child``,
``--max-memory-per-child`` or a crash is a respawn: no new generation.

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
``pyramid_forksafe.events`` classes (source ``"containers.celery"``), with
the payload the core gives its handlers.

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

Fork hazards (``hazards``, ``hazard_allow``: the uWSGI options
``forksafe-hazards`` and ``forksafe-hazard-allow``, the same words): at
each pre-fork the main process looks for what the pool process is about to
inherit and must not share -- threads other than the forking one,
connected TCP and UNIX stream sockets (a task module that connected to a
database at import) -- and says each, once per pool slot and generation;
the pre-fork payload has them as ``"hazards"``.  What Celery, kombu and
billiard hold there of their own is allowed (:mod:`forksafe._celery_own`:
the connections to the broker and the result backend, by their URLs'
addresses; billiard's pool threads, Celery's timer and autoscaler threads,
the main thread).  ``"fail"``: before any pool process the worker exits
with status 1 and forks nothing; once pool processes run, a hazard that
appears later stops the worker (warm shutdown, status 1), and no pool
process starts on it: under the event loop Celery's SIGTERM handler raises
in the forking thread, so the respawn is not forked; one forked by
billiard's supervisor thread exits before Celery's initializer runs.

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
import os
import signal

from ._celery_child import PoolChild
from ._celery_child import exit_reason  # noqa: F401
from ._celery_own import name_pool_threads
from ._celery_main import CHEAPER
from ._celery_main import CHILD_EVENTS  # noqa: F401
from ._celery_main import CONTAINER  # noqa: F401
from ._celery_main import ENVIRONMENT  # noqa: F401
from ._celery_main import EX_OK  # noqa: F401
from ._celery_main import EX_RECYCLE  # noqa: F401
from ._celery_main import EXIT  # noqa: F401
from ._celery_main import EXITED  # noqa: F401
from ._celery_main import FATAL  # noqa: F401
from ._celery_main import GENERATION_ENV  # noqa: F401
from ._celery_main import LOGGED  # noqa: F401
from ._celery_main import OK  # noqa: F401
from ._celery_main import REASON_EVENTS  # noqa: F401
from ._celery_main import RELOADING
from ._celery_main import RUNNING  # noqa: F401
from ._celery_main import SETTINGS_ENV
from ._celery_main import SOURCE  # noqa: F401
from ._celery_main import STOPPING  # noqa: F401
from ._celery_main import MainProcess
from ._celery_main import SharedState  # noqa: F401
from ._celery_main import _mark_stopping
from ._celery_main import _wrap_terminate_controlled
from ._celery_main import death_cause  # noqa: F401
from ._celery_main import make_payload  # noqa: F401
from ._celery_main import policy_code  # noqa: F401
from ._celery_main import split_settings  # noqa: F401
from ._celery_main import status_from_exitcode  # noqa: F401
from ._celery_main import subscriptions_text  # noqa: F401


class Adapter(PoolChild, MainProcess):
    """One per worker (the one :func:`install` made): the main process's part
    (:class:`~forksafe._celery_main.MainProcess`) and the pool child's
    (:class:`~forksafe._celery_child.PoolChild`)."""


# ------------------------------------------------------- billiard hooks


class PoolHooks(object):
    """Mixed into the TaskPool's billiard pool class by the bootstep."""

    forksafe = None  # the Adapter

    def _create_worker_process(self, i):
        adapter = self.forksafe
        if adapter is None or not adapter.is_master():
            return super()._create_worker_process(i)
        name_pool_threads(self)
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
                if not shutdown:
                    # without the event loop, the pool's own rounds look
                    adapter.check_generation(self)

    def register_with_event_loop(self, hub):  # AsynPool only
        result = super().register_with_event_loop(hub)  # pylint: disable=no-member
        if self.forksafe is not None and self.forksafe.is_master():
            self.forksafe.watch_readiness(hub, self)
        return result

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
            # pool_restart replaces every pool process: a new generation
            self.forksafe.gen.replacing_every_worker()
        return super().restart()


class WorkerHooks(object):
    """Mixed into the pool's billiard Worker (the code a child runs)."""

    forksafe = None

    def __call__(self):
        # The child's first step: before Celery's initializer.
        if self.forksafe is not None:
            self.forksafe.refused_child_exits()
        return super().__call__()

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
            timeout=0, verbose=False, host_factory=None, hazards=None, hazard_allow=()):
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
    - ``hazards`` (``"warn"``, the default; ``"fail"``; ``"off"``) and
      ``hazard_allow`` (rules ``thread:GLOB``, ``tcp:HOST:PORT``,
      ``unix:GLOB``; a list, or one per line): as ``forksafe-hazards`` and
      ``forksafe-hazard-allow`` (see "Fork hazards" above).

    Nothing happens until a worker starts: a client that imports the app
    module only sends tasks.  Returns the Adapter (one per app)."""
    adapter = _adapters.get(id(app))
    if adapter is not None and adapter.app is app:
        return adapter
    settings_spec, origin = settings_and_origin(settings_spec)
    adapter = Adapter(app, settings_spec, subscriptions, registry, on_error, timeout, verbose,
                      host_factory, origin, hazards=hazards, hazard_allow=hazard_allow)
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

