"""``recipe:sqlalchemy``: no forked process uses a connection its parent
opened.

SQLAlchemy's own advice ("Using Connection Pools with Multiprocessing or
os.fork()"): in each child, before it does anything, ``engine.dispose(
close=False)`` -- the child drops the pool it inherited without closing its
connections (closing them would end the parent's sessions over the shared
sockets) and opens its own on first use.  Or, with ``?before=dispose``,
``engine.dispose()`` in the parent just before each fork, so that nothing is
inherited at all.

The engines are found without the user naming them: at ``master-start``
(the app is loaded, nothing is forked yet) every Engine alive in the
process, and from then on every engine that connects (a class-level
``engine_connect`` listener).  Pools are remembered by the process that
made them, so an engine is disposed once per process however many lines
(``recipe:auto`` too) subscribe the recipe.
"""
import gc
import os
import sys
import weakref

from .recipes import Recipe
from .recipes import say
from .recipes import where


class SQLAlchemy(Recipe):
    name = "sqlalchemy"
    library = "sqlalchemy"
    debian_package = "python3-sqlalchemy"
    options = {"before": ("keep", "dispose")}

    def __init__(self, options, lazy=False):
        Recipe.__init__(self, options, lazy)
        self.engines = weakref.WeakSet()
        # pool -> pid of the process it is known to belong to
        self.pool_owner = weakref.WeakKeyDictionary()
        self.listening = False

    # ------------------------------------------------------------ finding

    def _track(self, engine):
        if engine not in self.engines:
            self.engines.add(engine)
            self.pool_owner.setdefault(engine.pool, os.getpid())

    def _on_connect(self, **kw):
        self._track(kw["conn"].engine)

    def _find_engines(self):
        """Starts tracking, once SQLAlchemy is imported: every Engine that
        exists now (one walk of the heap, in the master before it forks),
        and every engine that connects later."""
        if self.listening or "sqlalchemy" not in sys.modules:
            return
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        event.listen(Engine, "engine_connect", self._on_connect, named=True)
        self.listening = True
        for thing in gc.get_objects():
            if isinstance(thing, Engine):
                self._track(thing)

    def _engines_now(self):
        """The engines tracked, as a list.  Another thread of the master may
        connect an engine (and so track it) while this one forks; a lock
        would be held across the fork, so the copy is simply made again."""
        for _ in range(100):
            try:
                return list(self.engines)
            except RuntimeError:  # the set changed size while copied
                continue
        return list(self.engines)

    def _stop_listening(self):
        if self.listening:
            from sqlalchemy import event
            from sqlalchemy.engine import Engine

            event.remove(Engine, "engine_connect", self._on_connect)
            self.listening = False

    def master_start(self, payload):
        self._find_engines()
        self._claim_pools()

    def _claim_pools(self):
        """Each child drops these pools' connections: the fork hazard check
        need not tell the user to (claimed at master-start, so that the
        first pre-fork's payload says so too, and again before each fork,
        after which the check looks again)."""
        if self.option["before"] == "dispose":
            return
        for engine in self._engines_now():
            for fd in _pooled_sockets(engine.pool):
                _claim(fd)

    # ------------------------------------------------------------- forking

    def pre_fork(self, payload):
        # An app that imported SQLAlchemy only after master-start (or a
        # host that has no master-start) is looked at before its first fork.
        self._find_engines()
        if self.option["before"] != "dispose":
            self._claim_pools()
            return
        for engine in self._engines_now():
            # close=True: the parent keeps no connection for a child to inherit.
            engine.dispose()
            self.pool_owner[engine.pool] = os.getpid()

    def post_fork(self, payload):
        pid = os.getpid()
        # Tracking is for the process that forks: a worker's own engines
        # are never inherited, so its requests do not pay the listener.
        self._stop_listening()
        for engine in self._engines_now():
            pool = engine.pool
            owner = self.pool_owner.get(pool)
            if owner == pid:
                continue  # its own pool (an engine that shares one, disposed already)
            connections = _pooled(pool)
            engine.dispose(close=False)
            self.pool_owner[engine.pool] = pid
            if connections:
                say("recipe:sqlalchemy: %s dropped the pool of %s inherited from pid %s "
                    "(%d connection%s left to it: dispose(close=False))"
                    % (where(payload), _safe_url(engine), owner or "?", connections,
                       "" if connections == 1 else "s"))


def _pooled_sockets(pool):
    """The descriptors of the connections sitting in POOL, as far as the pool
    and the driver say (psycopg2 and psycopg's connections have fileno());
    nothing for a pool or driver that does not, so that the hazard is still
    said rather than wrongly called handled."""
    records = getattr(getattr(pool, "_pool", None), "queue", None)
    fds = []
    try:
        for record in list(records or ()):
            dbapi = getattr(record, "dbapi_connection", None)  # SQLAlchemy 2.0
            if dbapi is None:
                dbapi = getattr(record, "connection", None)  # 1.4
            fileno = getattr(dbapi, "fileno", None)
            if fileno is not None:
                fds.append(int(fileno()))
    except Exception:
        return []
    return fds


def _claim(fd):
    bridge = sys.modules.get("_forksafe")
    claim = getattr(bridge, "claim_socket", None)
    if claim is not None:
        claim((fd, "recipe:sqlalchemy"))


def _pooled(pool):
    """How many connections sit in POOL (0 for pools that do not say)."""
    try:
        return int(pool.checkedin())
    except Exception:
        return 0


def _safe_url(engine):
    try:
        return engine.url.render_as_string(hide_password=True)
    except Exception:
        return "an engine"
