"""gunicorn: hooks to import into a gunicorn config file, as in 0.2::

    # gunicorn --paste production.ini -c config.py
    from pyramid_forksafe.containers.gunicorn import (
        pre_fork,
        post_fork,
        post_worker_init,
    )

Each hook finds the registry of the loaded application
(``app.wsgi().registry``), builds a payload (synthesized: gunicorn has no
forksafe plugin) and calls :func:`pyramid_forksafe.dispatch`.  The events are
ApplicationPreFork, ApplicationPostFork and ApplicationPostWorkerInit.
"""
from .. import core
from ..core import log

#: registry.pyramid_forksafe["environment"] under gunicorn, as in 0.2.
ENVIRONMENT = "gunicorn"


def mark_configured(registry):
    """For developers: records in ``registry.pyramid_forksafe`` that the
    gunicorn hooks are installed (0.2)."""
    log.debug("mark_configured")
    state = core.state_of(registry)
    state["environment"] = ENVIRONMENT
    state["mechanism"] = "gunicorn-hooks"
    state["autoconfigure.log"].append("gunicorn mark_configured")
    state["status"] = "gunicorn mark_configured"


def pre_fork(server, worker):
    """gunicorn's pre_fork(server, worker): in the arbiter, before the fork."""
    _deliver(
        server.app,
        "pre-fork",
        "containers.gunicorn.pre_fork",
        kind="master",
        id=0,
        child={"kind": "worker"},
    )


def post_fork(server, worker):
    """gunicorn's post_fork(server, worker): in the new worker."""
    _deliver(server.app, "post-fork", "containers.gunicorn.post_fork", kind="worker")


def post_worker_init(worker):
    """gunicorn's post_worker_init(worker): in the worker, app loaded."""
    _deliver(
        worker.app, "worker-ready", "containers.gunicorn.post_worker_init", kind="worker"
    )


def _deliver(application, event, source, kind=None, id=None, **extra):
    log.debug("%s(gunicorn) - %s", event, source)
    registry = application.wsgi().registry
    state = core.state_of(registry)
    if state["environment"] is None:
        state["environment"] = ENVIRONMENT
        state["mechanism"] = "gunicorn-hooks"
    payload = core.make_payload(event, ENVIRONMENT, kind=kind, id=id, **extra)
    return core.dispatch(registry, payload, source=source)


__all__ = (
    "mark_configured",
    "post_fork",
    "post_worker_init",
    "pre_fork",
)
