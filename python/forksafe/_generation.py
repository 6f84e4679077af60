"""generation-ready for the gunicorn and Celery adapters: each worker
marks in a shared page that it reached worker-ready, and the main process
(gunicorn's arbiter, Celery's MainProcess) announces the generation once
every worker of it has.

A generation begins at master-start (again after a reload that starts the
main process's life over: gunicorn's HUP, Celery's SIGHUP re-exec) or when
the adapter says every worker is being replaced (Celery's
``pool_restart``).  Its workers are the children the main process counts
as the generation's: the adapter says which, and how many it wants alive;
a child that dies before it is ready is waited for in its replacement.
"""
import mmap
import os
import struct
import time

#: one record per worker slot: the pid that reached worker-ready, and when
#: (monotonic ns).
_RECORD = struct.Struct("=iiq")


class ReadyBoard(object):
    """The shared page (an anonymous MAP_SHARED mapping made before the
    first fork, so every child writes the main process's copy)."""

    def __init__(self, slots):
        self.slots = slots
        self.map = mmap.mmap(-1, _RECORD.size * slots)

    def _offset(self, slot):
        if slot is None or not 0 <= slot < self.slots:
            return None
        return _RECORD.size * slot

    def mark(self, slot, pid):
        """In the child of SLOT, PID: it reached worker-ready now.  The time
        is written before the pid, so a reader that sees the pid sees the
        time too (a torn read shows the old pid: not ready yet)."""
        offset = self._offset(slot)
        if offset is None:
            return
        struct.pack_into("=q", self.map, offset + 8, time.monotonic_ns())
        struct.pack_into("=i", self.map, offset, pid)

    def ready_at(self, slot, pid):
        """When PID, the child of SLOT, reached worker-ready (monotonic ns),
        or None if it has not."""
        offset = self._offset(slot)
        if offset is None:
            return None
        marked, _pad, when = _RECORD.unpack_from(self.map, offset)
        return when if marked == pid else None


class Generation(object):
    """The main process's bookkeeping of the current generation."""

    def __init__(self):
        self.master_start_ns = None
        self.start_ns = None
        self.announced = False

    def master_started(self):
        """master-start: the main process's life (and a generation) begins."""
        self.master_start_ns = self.start_ns = time.monotonic_ns()
        self.announced = False

    def replacing_every_worker(self):
        """A new generation of workers under the same master-start."""
        self.start_ns = time.monotonic_ns()
        self.announced = False

    def complete(self, board, members, wanted, slot_of=lambda wid: wid):
        """MEMBERS, the generation's live workers as (id, pid), when each has
        reached worker-ready since the generation began and there are at
        least WANTED of them: returns (workers, elapsed_ms) for the payload,
        once per generation.  Otherwise None."""
        if self.announced or self.start_ns is None or not members or len(members) < wanted:
            return None
        workers = []
        for wid, pid in sorted(members):
            when = board.ready_at(slot_of(wid), pid)
            if when is None or when < self.start_ns:
                return None
            workers.append({"id": wid, "pid": pid, "ms": (when - self.start_ns) // 1000000})
        self.announced = True
        return workers, (time.monotonic_ns() - self.master_start_ns) // 1000000


def exited(pid):
    """True when child PID has ended (a zombie, or reaped already): peeked
    with WNOWAIT, so the server still reaps it its own way."""
    try:
        info = os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT)
    except (ChildProcessError, OSError):
        return True
    return info is not None and bool(info.si_pid)


def drain(fd):
    """Empties the non-blocking pipe FD (its bytes only say: look now)."""
    try:
        while os.read(fd, 512):
            pass
    except OSError:
        pass


def wake(fd):
    """One byte down the pipe FD; a full pipe already says it."""
    try:
        os.write(fd, b".")
    except OSError:
        pass
