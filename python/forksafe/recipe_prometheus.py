"""``recipe:prometheus``: prometheus_client's multiprocess mode, kept right
across forks.

prometheus_client's documentation ("Multiprocess Mode (E.g. Gunicorn)") asks
three things of a pre-fork server, which this recipe does:

- ``PROMETHEUS_MULTIPROC_DIR`` names a directory that is wiped between runs
  of the server: at ``master-start`` of a fresh start (generation 0) the
  recipe removes the library's files left by an earlier run.  It removes
  only files the library writes (``counter_*.db``, ``gauge_*.db``,
  ``histogram_*.db``, ``summary_*.db``); a directory holding anything else is
  a start-up error, not a directory to empty.  A reload keeps them, as the
  counters of a running server must not go back.
- when a worker dies, ``multiprocess.mark_process_dead(pid)`` in the master
  (``child-death``), so that the live gauges (``livesum``, ``liveall``,
  ``livemax``, ``livemin``, ``livemostrecent``) forget it; and in the worker
  itself as it exits (``worker-exit``), for a host that reaps it unseen.
- the variable must be set before the app imports prometheus_client: the
  recipe checks at start-up that it is, and that the directory exists.

A file is "left by an earlier run" when the process its name ends with does
not have it mapped: prometheus_client keeps each file it writes mapped for
as long as the process lives, so this is read from ``/proc/PID/maps``, not
guessed from the pid (pids are reused, and a container restarted on the same
filesystem gives its processes the same pids again).  A file still mapped
is never removed: the master's own (an app that makes its metrics at
import), and those of a server still running on the same directory -- the
old master's workers while a new master takes over (gunicorn's USR2), which
would otherwise lose the counts they have and make.

``?wipe=no`` keeps the earlier runs' counters, histograms, summaries and
plain gauges (they add to this run's, and it says so), but not their live
gauges: those say a process is alive, and none of those processes is.  At
every ``master-start`` (reloads too) the live gauges of processes that are
gone are forgotten, as ``child-death`` would have done had the master seen
them die.

The other gauge modes (``all``, ``max``, ``min``, ...) keep a dead worker's
values by the library's design; counters, histograms and summaries of dead
workers stay summed, as they should.
"""
import glob
import os
import re

from .recipes import Recipe
from .recipes import RecipeError
from .recipes import say

#: the files prometheus_client's multiprocess mode writes (the default
#: process identifier, os.getpid, names them by pid).
LIBRARY_FILE = re.compile(r"^(counter|gauge_[a-z]+|histogram|summary)_([0-9]+)\.db$")
LIVE_GAUGE = re.compile(r"^gauge_live[a-z]+_[0-9]+\.db$")


def metrics_dir():
    """The directory prometheus_client writes to, chosen as the library
    chooses it (``MultiProcessCollector``, ``mark_process_dead``): the upper
    case variable when it is set, the deprecated lower case one otherwise."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        return os.environ["PROMETHEUS_MULTIPROC_DIR"]
    return os.environ.get("prometheus_multiproc_dir")


def _variable():
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ and "prometheus_multiproc_dir" in os.environ:
        return "prometheus_multiproc_dir"
    return "PROMETHEUS_MULTIPROC_DIR"


def mapped_files(pid):
    """What process PID has mapped, as a set of paths and of (device,
    inode) pairs (prometheus_client maps every file it writes for the life
    of the process); an empty set if there is no such process, None if its
    maps may not be read -- then every file counts as its: a file is removed
    only when it is known unused.  Read once per process, not per file."""
    mapped = set()
    try:
        with open("/proc/%d/maps" % pid) as f:
            for line in f:
                fields = line.split(None, 5)
                if len(fields) < 5:
                    continue
                mapped.add((fields[3], fields[4]))
                if len(fields) == 6:
                    mapped.add(fields[5].rstrip("\n"))
    except (FileNotFoundError, ProcessLookupError):
        return set()
    except OSError:
        return None
    return mapped


def is_mapped(path, mapped):
    """Whether PATH is among MAPPED (mapped_files's answer)."""
    if mapped is None:
        return True
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    device = "%02x:%02x" % (os.major(st.st_dev), os.minor(st.st_dev))
    return os.path.realpath(path) in mapped or (device, str(st.st_ino)) in mapped


class Prometheus(Recipe):
    name = "prometheus"
    library = "prometheus_client"
    debian_package = "python3-prometheus-client"
    options = {"wipe": ("yes", "no")}

    def __init__(self, options, lazy=False):
        Recipe.__init__(self, options, lazy)
        self.wiped = False

    def check(self):
        path = metrics_dir()
        if not path:
            raise RecipeError(
                "recipe:prometheus: PROMETHEUS_MULTIPROC_DIR is not set%s, so prometheus_client "
                "is not in multiprocess mode: each worker counts alone and a scrape sees one "
                "worker's numbers; set it before the app starts (uWSGI: env = "
                "PROMETHEUS_MULTIPROC_DIR=/run/app/metrics) to an empty directory of its own"
                % (" (it is empty)" if path == "" else ""))
        if not os.path.isdir(path):
            raise RecipeError("recipe:prometheus: %s=%s is not a directory; create it (empty, "
                              "for this server alone)" % (_variable(), path))
        strangers = sorted(name for name in os.listdir(path) if not LIBRARY_FILE.match(name))
        if strangers:
            raise RecipeError(
                "recipe:prometheus: %s=%s holds files prometheus_client did not write (%s): "
                "give it a directory of its own, which the recipe empties at each fresh start"
                % (_variable(), path, ", ".join(strangers[:5]) +
                   (", ..." if len(strangers) > 5 else "")))

    def _left(self, path, names):
        """Those of NAMES (files in PATH) that no live process has mapped."""
        left, maps = [], {}
        for name in names:
            pid = int(LIBRARY_FILE.match(name).group(2))
            if pid not in maps:
                maps[pid] = mapped_files(pid)
            if not is_mapped(os.path.join(path, name), maps[pid]):
                left.append(name)
        return left

    def _remove(self, path, names):
        removed = 0
        for name in names:
            try:
                os.remove(os.path.join(path, name))
                removed += 1
            except FileNotFoundError:
                pass
        return removed

    def master_start(self, payload):
        path = metrics_dir()
        fresh = not self.wiped and payload.get("generation", 0) == 0
        if fresh:
            self.wiped = True
            self.check()
        if not path or not os.path.isdir(path):
            return
        files = [name for name in os.listdir(path) if LIBRARY_FILE.match(name)]
        left = self._left(path, files)
        if fresh and self.option["wipe"] == "yes":
            removed = self._remove(path, left)
            if removed:
                say("recipe:prometheus: a fresh start: removed %d file(s) of an earlier run from "
                    "%s" % (removed, path))
            return
        # A reload, or wipe=no: the live gauges of processes that are gone.
        removed = self._remove(path, [name for name in left if LIVE_GAUGE.match(name)])
        if fresh:
            kept = len(left) - removed
            if kept or removed:
                say("recipe:prometheus: %s holds %d file(s) of an earlier run (wipe=no: kept; "
                    "their counters add to this run's)%s"
                    % (path, kept, "; removed %d live gauge file(s) of processes that are gone"
                       % removed if removed else ""))
        elif removed:
            say("recipe:prometheus: removed %d live gauge file(s) of processes that are gone "
                "from %s" % (removed, path))

    def child_death(self, payload):
        child = payload.get("child") or {}
        if child.get("pid"):
            self._forget(child["pid"])

    def worker_exit(self, payload):
        self._forget(os.getpid())

    def _forget(self, pid):
        path = metrics_dir()
        if path and glob.glob(os.path.join(glob.escape(path), "gauge_live*_%d.db" % pid)):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid, path)
