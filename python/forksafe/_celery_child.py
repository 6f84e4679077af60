"""The pool-child part of the Celery adapter: post-fork, worker-ready and
worker-exit in a billiard pool process, the policy there, and the exit of a
child forked with refused fork hazards."""
import os
import sys
import threading
import time

from ._celery_main import CHEAPER
from ._celery_main import EX_RECYCLE
from ._celery_main import EXIT
from ._celery_main import EXITED
from ._celery_main import FATAL
from ._celery_main import OK
from ._celery_main import RELOADING
from ._generation import wake
from ._celery_main import RUNNING
from ._celery_main import STOPPING


def exit_reason(exitcode, state=RUNNING, state_changed_ns=0, started_ns=0, flags=0,
                restart_requested=False, maxtasks=None, max_memory=None, rss_kb=None):
    """worker-exit's ``reason`` in a pool child leaving its loop with
    EXITCODE (see :mod:`forksafe.celery`).  The instance STATE counts only if
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


class PoolChild(object):
    """The adapter's pool-child part, mixed with
    :class:`~forksafe._celery_main.MainProcess` (whose state a child inherits
    at fork: the host, the shared page, the forks per slot, the pool's
    limits): the child becomes a worker, says it is ready, and leaves."""

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

    def refused_child_exits(self):
        """In a pool process forked after the main process refused its fork
        hazards (hazards = "fail"; the worker is stopping): it must not start
        on what it inherited, so it exits before Celery's initializer runs
        (no post-fork, no worker-exit: the main process reports its death)."""
        if not self.hazard_refused or self.is_master():
            return
        from billiard.process import current_process

        index = getattr(current_process(), "index", None)
        self._say("worker %s (pid %d) forked with fork hazards exits (forksafe-hazards = fail)"
                  % ("?" if index is None else index + 1, os.getpid()))
        os._exit(1)

    def child_ready(self):
        if self.ready_sent or self.kind != "worker":
            return
        self.ready_sent = True
        result = self.fire("worker-ready")
        self.child_policy("worker-ready", result)
        # a fatal failure stops the worker: this child is not ready
        if result < FATAL and self.ready_board is not None and self.index is not None:
            self.ready_board.mark(self.id, os.getpid())
            if self.ready_pipe is not None:
                wake(self.ready_pipe[1])

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


