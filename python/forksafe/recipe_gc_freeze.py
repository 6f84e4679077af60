"""``recipe:gc-freeze``: the objects the master made stay in pages its
workers share.

CPython's garbage collector writes to every object it examines.  A worker's
first full collection therefore touches every object the master made at
import, and the kernel copies each page it writes: the memory a pre-fork
server shares with its workers melts away (gunicorn#1640).  ``gc.freeze()``
(Python 3.7+) moves every object alive into a generation the collector never
looks at; done in the master just before it forks, the workers never touch
those objects' pages (the ``gc.freeze`` documentation gives this use).

Before each generation's first fork the master collects once -- so that
what is garbage now is not frozen forever -- and freezes.  Objects made in
the master after that (there are few: the app is loaded) are left to the
collector.  The cost: garbage that the frozen objects become later is never
collected, in the master and in the workers; an app that throws away large
parts of what it built at import should not use this recipe.
"""
import gc
import time

from .recipes import Recipe
from .recipes import say


class GCFreeze(Recipe):
    name = "gc-freeze"
    options = {}

    def __init__(self, options, lazy=False):
        Recipe.__init__(self, options, lazy)
        self.frozen_generation = None

    def pre_fork(self, payload):
        generation = payload.get("generation", 0)
        if self.frozen_generation == generation:
            return
        self.frozen_generation = generation
        started = time.monotonic()
        collected = gc.collect()
        gc.freeze()
        pause = (time.monotonic() - started) * 1e3
        # counted after the pause is taken: the count walks every frozen object
        say("recipe:gc-freeze: the master froze %d objects before its first fork of generation %s "
            "(%d collected first, %.1f ms)" % (gc.get_freeze_count(), generation, collected, pause))
