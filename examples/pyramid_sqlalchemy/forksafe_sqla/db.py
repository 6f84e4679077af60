"""The app's engines: one per database URL per process, in a module-level
registry, so that a fork handler -- which gets only the settings -- finds
exactly the engines the app made, with or without Pyramid.

An engine made before the fork (in the uWSGI master, apps preloaded) has a
pool whose connections are sockets the master opened; after fork() every
worker holds the same sockets.  A worker that checks such a connection out
talks to the master's database backend over a socket other workers use at
the same time: answers go to the wrong process, the protocol desyncs.  The
SQLAlchemy-documented cure, run in each child right after the fork, is
`engine.dispose(close=False)`: the child forgets the inherited pool without
closing its connections (closing them would send Terminate over the shared
socket and kill the master's session) and opens its own on first use.
"""

import os
import threading

from sqlalchemy import engine_from_config, text
from sqlalchemy.engine import make_url

PREFIX = "sqlalchemy."

_lock = threading.RLock()
_engines = {}    # URL string -> Engine
_pool_pid = {}   # URL string -> pid of the process whose pool the engine has now
_disposed = []   # (url, from pid) disposed in this process, for the /db view
_startup = {}    # Engine -> what startup_check saw (pid, backend pid)
_first_pool = {}  # Engine -> (the pool it was made with, the pid that made it)


def _key(url):
    return str(url)


def safe_url(url):
    """URL for logs and pages, password hidden."""
    url = make_url(url)
    try:
        return url.render_as_string(hide_password=True)
    except AttributeError:  # SQLAlchemy < 1.4
        return repr(url)


def _ensure_sqlite_dir(url):
    url = make_url(url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        directory = os.path.dirname(os.path.abspath(url.database))
        os.makedirs(directory, exist_ok=True)


def engine_for(settings, prefix=PREFIX):
    """The engine for settings[prefix + 'url'], made on first call.

    Every `sqlalchemy.*` setting is passed to engine_from_config
    (`sqlalchemy.pool_size = 5`, `sqlalchemy.echo = false`, ...)."""
    url = settings[prefix + "url"]
    key = _key(url)
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            _ensure_sqlite_dir(url)
            engine = engine_from_config(settings, prefix)
            _engines[key] = engine
            _pool_pid[key] = os.getpid()
            _first_pool[engine] = (engine.pool, os.getpid())
        return engine


def engines():
    with _lock:
        return dict(_engines)


def has_engine(url):
    with _lock:
        return url is not None and _key(url) in _engines


def dispose_inherited(url=None, reason="post-fork"):
    """Disposes (close=False) every engine whose pool was made in another
    process, i.e. inherited through fork(); with URL, only that one.
    Idempotent: an engine already disposed in this process is left alone.
    Returns the list of (safe URL, pid the pool came from) disposed."""
    pid = os.getpid()
    done = []
    with _lock:
        keys = [_key(url)] if url is not None else list(_engines)
        for key in keys:
            engine = _engines.get(key)
            if engine is None or _pool_pid.get(key) == pid:
                continue
            origin = _pool_pid.get(key)
            engine.dispose(close=False)
            _pool_pid[key] = pid
            done.append((safe_url(engine.url), origin))
            _disposed.append({"url": safe_url(engine.url), "from_pid": origin,
                              "reason": reason})
    return done


def pool_dropped_from(engine):
    """The pid of the process the engine's pool was inherited from, if this
    process has dropped that pool since (engine.dispose(close=False), by
    recipe:sqlalchemy or by dispose_engine); None otherwise."""
    with _lock:
        pool, pid = _first_pool.get(engine, (None, None))
    if pool is None or pid == os.getpid() or engine.pool is pool:
        return None
    return pid


def backend_id(conn):
    """Who answers on this connection: PostgreSQL's backend pid; for SQLite
    (the database runs inside this process) the process's own pid."""
    name = conn.engine.dialect.name
    if name == "postgresql":
        return conn.execute(text("SELECT pg_backend_pid()")).scalar()
    if name == "mysql":
        return conn.execute(text("SELECT CONNECTION_ID()")).scalar()
    conn.execute(text("SELECT 1")).scalar()
    return os.getpid()


def startup_check(engine):
    """Queries the database once, now (in the uWSGI master when apps are
    preloaded): the connection stays checked in to the pool -- the one every
    forked worker would inherit."""
    with engine.connect() as conn:
        backend = backend_id(conn)
    with _lock:
        _startup[engine] = {"pid": os.getpid(), "backend_pid": backend}
    return backend


def probe(engine):
    """What the /db view answers."""
    with engine.connect() as conn:
        backend = backend_id(conn)
    with _lock:
        return {
            "pid": os.getpid(),
            "ppid": os.getppid(),
            "backend_pid": backend,
            "dialect": engine.dialect.name,
            "url": safe_url(engine.url),
            "startup": _startup.get(engine),
            "disposed": list(_disposed),
            "pool_dropped_from": pool_dropped_from(engine),
            "pool": engine.pool.status(),
        }
