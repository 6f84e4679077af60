"""A Celery app with pyramid_forksafe's Celery adapter, for the integration
tests (tests/integration/test_celery.py).

The broker URL comes from $CELERY_BROKER (also the result backend), the
settings file from $FORKSAFE_SETTINGS (the adapter reads it); with
$CELERY_APP_PYRAMID=1 the Pyramid application of that file is loaded in the
main process (registry="bootstrap") and hears every event.  Extra
subscriptions: $CELERY_APP_SUBSCRIBE, one per line; install()'s hazards
and hazard_allow: $CELERY_APP_HAZARDS and $CELERY_APP_HAZARD_ALLOW (one rule
per line); task modules the worker imports: $CELERY_APP_IMPORTS
(comma-separated); $CELERY_APP_POOL_RESTARTS=1 allows ``pool_restart``.
"""
import os
import time

from celery import Celery

from pyramid_forksafe.containers.celery import install

broker = os.environ.get("CELERY_BROKER", "memory://")
app = Celery("celery_app", broker=broker, backend=os.environ.get("CELERY_BROKER"))
app.conf.update(
    worker_hijack_root_logger=False,
    result_expires=None,
    imports=[name for name in os.environ.get("CELERY_APP_IMPORTS", "").split(",") if name],
    worker_pool_restarts=os.environ.get("CELERY_APP_POOL_RESTARTS") == "1",
)

forksafe = install(
    app,
    subscriptions=os.environ.get("CELERY_APP_SUBSCRIBE", ""),
    registry="bootstrap" if os.environ.get("CELERY_APP_PYRAMID") == "1" else None,
    on_error=os.environ.get("CELERY_APP_ON_ERROR") or None,
    hazards=os.environ.get("CELERY_APP_HAZARDS") or None,
    hazard_allow=os.environ.get("CELERY_APP_HAZARD_ALLOW", ""),
)


@app.task(name="celery_app.getpid")
def getpid():
    """The pid of the pool child that ran the task."""
    return os.getpid()


@app.task(name="celery_app.nap")
def nap(seconds):
    time.sleep(seconds)
    return os.getpid()


def fail_on_first_respawn(payload):
    """A python: handler that fails in the first replacement of a slot."""
    if payload["respawn"] == 1:
        raise RuntimeError("failing in respawn 1 of worker %d" % payload["process"]["id"])


@app.task(name="celery_app.forksafe_counters")
def forksafe_counters():
    """forksafe's counters as the pool child that runs the task reads them:
    the stats document and the Prometheus text."""
    return {"pid": os.getpid(), "stats": forksafe.stats(), "metrics": forksafe.metrics()}
