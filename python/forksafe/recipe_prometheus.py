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
from .recipes import where

#: the files prometheus_client's multiprocess mode writes.
LIBRARY_FILE = re.compile(r"^(counter|gauge_[a-z]+|histogram|summary)_\d+\.db$")


def metrics_dir():
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


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
                "recipe:prometheus: PROMETHEUS_MULTIPROC_DIR is not set, so prometheus_client is "
                "not in multiprocess mode: each worker counts alone and a scrape sees one "
                "worker's numbers; set it before the app starts (uWSGI: env = "
                "PROMETHEUS_MULTIPROC_DIR=/run/app/metrics) to an empty directory of its own")
        if not os.path.isdir(path):
            raise RecipeError("recipe:prometheus: PROMETHEUS_MULTIPROC_DIR=%s is not a directory; "
                              "create it (empty, for this server alone)" % path)
        strangers = sorted(name for name in os.listdir(path) if not LIBRARY_FILE.match(name))
        if strangers:
            raise RecipeError(
                "recipe:prometheus: PROMETHEUS_MULTIPROC_DIR=%s holds files prometheus_client "
                "did not write (%s): give it a directory of its own, which the recipe empties "
                "at each fresh start" % (path, ", ".join(strangers[:5]) +
                                         (", ..." if len(strangers) > 5 else "")))

    def master_start(self, payload):
        if self.wiped or payload.get("generation", 0) != 0:
            return
        self.wiped = True
        self.check()
        path = metrics_dir()
        left = [name for name in os.listdir(path) if LIBRARY_FILE.match(name)]
        if self.option["wipe"] == "no":
            if left:
                say("recipe:prometheus: %s holds %d file(s) of an earlier run (wipe=no: kept; "
                    "their counters add to this run's)" % (path, len(left)))
            return
        mine = "_%d.db" % os.getpid()
        removed = 0
        for name in left:
            # the master's own files, if the app made metrics at import
            if name.endswith(mine):
                continue
            try:
                os.remove(os.path.join(path, name))
                removed += 1
            except FileNotFoundError:
                pass
        if removed:
            say("recipe:prometheus: a fresh start: removed %d file(s) of an earlier run from %s"
                % (removed, path))

    def child_death(self, payload):
        child = payload.get("child") or {}
        if child.get("pid"):
            self._forget(child["pid"])

    def worker_exit(self, payload):
        self._forget(os.getpid())

    def _forget(self, pid):
        from prometheus_client import multiprocess

        path = metrics_dir()
        if path and glob.glob(os.path.join(path, "gauge_live*_%d.db" % pid)):
            multiprocess.mark_process_dead(pid, path)
