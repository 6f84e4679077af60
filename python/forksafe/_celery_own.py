"""What the main process of a Celery worker holds of its own when billiard
forks a pool process, as fork-hazard allow rules: a plain application must
hear of no hazard under Celery, only of what it opened or started itself.

Measured with Celery 5.2.6, kombu 5.2.4 and billiard 4.1.0, prefork pool
(tests/integration/test_celery.py and test_celery_hazards.py):

- With the event loop (AsynPool; the redis and amqp brokers): no thread but
  the one that forks.  No socket at the first forks (the pool starts before
  the consumer connects), but at every later fork (a respawn after
  ``--max-tasks-per-child`` or a lost pool process) 4 to 10 TCP connections
  to the broker: the consumer's, the publisher pool's, mingle's, gossip's
  and the heartbeat's.
- Without it (a broker kombu cannot poll, ``filesystem://`` say): billiard's
  pool threads (the supervisor, which forks the respawns, and the task,
  timeout and result handlers, all unnamed ``Thread-N``), Celery's timer
  thread (``Timer-N``), the main thread (the consumer) while the supervisor
  forks, and with ``--autoscale`` the ``Autoscaler`` thread.
- The main process also stores some results itself (a task whose pool
  process was lost, that hit its hard time limit or was revoked), so a
  connection to the result backend may be open at a later fork.

Connections are allowed by the broker's and the result backend's address,
as the configuration names them, not by descriptor: kombu reconnects and
its pools connect when they need to, so a list of descriptors made at one
fork is wrong at the next, while the address stays.  The cost: a
connection the application opens to that same address and port (a cache in
the broker's Redis) is not reported either.  A broker found through Redis
Sentinel is connected to at an address no URL names: allow it with
``hazard_allow``.

Threads are allowed by name.  billiard's are unnamed, and a rule for
``Thread-*`` would hide an application's unnamed threads too, so
:func:`name_pool_threads` names them (only their Python name: what the
core reports a thread by) before each fork, and the rules name exactly
those.
"""
import threading
from urllib.parse import urlsplit

from . import adapter

#: billiard's pool threads (attributes of a billiard Pool) -> their names.
POOL_THREADS = {
    "_worker_handler": "billiard-supervisor",
    "_task_handler": "billiard-task-handler",
    "_timeout_handler": "billiard-timeout-handler",
    "_result_handler": "billiard-result-handler",
}

#: Celery's threads, by the name Celery gives them, and the main thread,
#: which runs the consumer while billiard's supervisor forks.
CELERY_THREADS = ("MainThread", "Timer-[0-9]*", "Autoscaler")

#: Ports of the URL schemes a broker or result backend has, when the URL
#: names none (kombu's transports say theirs; these cover the backends).
DEFAULT_PORTS = {
    "redis": 6379, "rediss": 6379, "sentinel": 26379, "amqp": 5672, "amqps": 5671,
    "pyamqp": 5672, "librabbitmq": 5672, "mongodb": 27017, "postgresql": 5432,
    "postgres": 5432, "mysql": 3306, "memcache": 11211, "memcached": 11211,
    "pylibmc": 11211, "couchdb": 5984, "elasticsearch": 9200, "arangodb": 8529,
    "consul": 8500, "cassandra": 9042,
}


def name_pool_threads(pool):
    """Gives billiard's threads of POOL their names (see the module doc)."""
    for attribute, name in POOL_THREADS.items():
        thread = getattr(pool, attribute, None)
        if isinstance(thread, threading.Thread) and thread.name != name:
            thread.name = name


def refresh_main_thread_id():
    """Gives the main thread its own native_id again, in the main thread of
    a process that was forked (``celery worker --detach``, a test): CPython
    3.11 keeps the forking parent's there, so the core could not name the
    main thread ("MainThread", allowed) and would report it by the kernel's
    name for it.  A no-op where the id is right."""
    main = threading.main_thread()
    if (threading.current_thread() is main and hasattr(main, "_set_native_id")
            and getattr(main, "native_id", None) != threading.get_native_id()):
        main._set_native_id()


def own_rules(app):
    """The allow rules for what the main process of APP's worker holds of
    its own: Celery's and billiard's threads, the connections to the
    broker (every URL: read, write, failover) and to the result backend."""
    rules = ["thread:" + name for name in sorted(POOL_THREADS.values())]
    rules += ["thread:" + name for name in CELERY_THREADS]
    if app is None:
        return rules
    for url in broker_urls(app) + backend_urls(app):
        for rule in url_rules(url):
            if rule not in rules:
                rules.append(rule)
    return rules


def broker_urls(app):
    """APP's broker URLs: ``broker_url``, ``broker_read_url`` and
    ``broker_write_url``, each split into its failover alternatives."""
    urls = []
    for name in ("broker_url", "broker_read_url", "broker_write_url"):
        urls += split_urls(app.conf.get(name))
    if not urls:  # Celery's default broker
        try:
            with app.connection_for_write() as connection:
                urls.append(connection.as_uri())
        except Exception:
            pass
    return urls


def backend_urls(app):
    """APP's result backend URL ("rpc" is the broker's), as a list."""
    backend = app.conf.get("result_backend")
    return split_urls(backend) if isinstance(backend, str) and "://" in backend else []


def split_urls(value):
    """A URL, ``;``-separated URLs or a list of them (kombu's failover
    forms), as a list."""
    if not value:
        return []
    if isinstance(value, str):
        value = value.split(";")
    urls = [url.strip() for url in value if isinstance(url, str) and url.strip()]
    # "cache+memcached://a:11211;b:11211/": the others have the first's scheme
    scheme = urls[0].split("://", 1)[0] if urls and "://" in urls[0] else None
    return [url if "://" in url or scheme is None else "%s://%s" % (scheme, url)
            for url in urls]


def url_rules(url):
    """The allow rules for what a client of URL connects to: a UNIX socket
    (``redis+socket:///path``, ``socket://``, ``unix://``) or HOST:PORT,
    the port defaulting to the scheme's."""
    scheme = url.split("://", 1)[0].lower()
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return []
    kinds = scheme.split("+")
    if "socket" in kinds or "unix" in kinds:
        return adapter.peer_rules(path=parts.path) if parts.path else []
    if port is None:
        port = default_port(kinds)
    return adapter.peer_rules(host, port)


def default_port(kinds):
    """The port of a URL scheme split at its "+" (``db+postgresql``,
    ``cache+memcached``, ``redis``), or None."""
    for kind in kinds:
        if kind in DEFAULT_PORTS:
            return DEFAULT_PORTS[kind]
    try:
        from kombu.transport import get_transport_cls

        return get_transport_cls(kinds[0]).default_port or None
    except Exception:
        return None
