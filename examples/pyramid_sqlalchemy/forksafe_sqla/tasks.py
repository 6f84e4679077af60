"""forksafe_sqla under a Celery worker: the same production.ini, the same
[forksafe] handlers, the same payload -- a Celery prefork pool instead of
uWSGI workers.  `make run-celery` (at the repository root or here) starts a
private redis-server broker and this worker, then asks it a few tasks:

    FORKSAFE_SETTINGS=production.ini python3 -m celery -A forksafe_sqla.tasks \\
        worker --pool=prefork --concurrency=4

install() reads $FORKSAFE_SETTINGS: [app:main] is the settings, [forksafe]
the subscriptions; registry="bootstrap" loads the Pyramid app in the
worker's main process -- its engine made and queried there, before the pool
forks, as uWSGI's master does -- so every pool process inherits the pool and
`post-fork = python:forksafe_sqla.forksafe:dispose_engine` matters exactly
as it does under uWSGI.
"""
import os
import sys

from celery import Celery

try:
    from pyramid_forksafe.containers.celery import install
except ImportError:  # not installed: this checkout's python/ package
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "..", "python"))
    from pyramid_forksafe.containers.celery import install

from . import db

BROKER = os.environ.get("FORKSAFE_SQLA_BROKER", "redis://127.0.0.1:6390/0")

app = Celery("forksafe_sqla", broker=BROKER, backend=BROKER)
app.conf.update(worker_hijack_root_logger=False, result_expires=600)

forksafe = install(app, registry="bootstrap")


@app.task(name="forksafe_sqla.where")
def where():
    """Which pool process ran the task, on which database backend."""
    info = db.probe(db.engine_for(forksafe.settings))
    return {"pid": info["pid"], "backend_pid": info["backend_pid"], "url": info["url"],
            "disposed": info["disposed"], "pool_dropped_from": info["pool_dropped_from"]}
