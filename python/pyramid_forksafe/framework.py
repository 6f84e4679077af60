"""Pyramid as forksafe's framework: what the gunicorn and Celery adapters of
the ``forksafe`` package call (:func:`forksafe.adapter.register_framework`)
to reach the registries of Pyramid applications.  Registered when
pyramid_forksafe is imported; nothing here is called by applications."""
from . import core
from .core import log

#: registry.pyramid_forksafe["mechanism"] under each server.
MECHANISMS = {"gunicorn": "gunicorn-hooks", "celery": "forksafe"}


def app_listener(app, loader=False):
    """The listener of the registry of APP (a Pyramid Router, or a stand-in
    with ``wsgi()``: 0.2's gunicorn application, loaded when LOADER or when
    it keeps no ``callable``), or None."""
    registry = registry_of(app, loader)
    return core.listener_for(registry) if registry is not None else None


def registry_of(app, loader=False):
    if app is None:
        return None
    if hasattr(app, "wsgi") and hasattr(app, "cfg"):  # a gunicorn application
        app = getattr(app, "callable", None)
    elif hasattr(app, "wsgi") and not hasattr(app, "registry"):
        # A stand-in without gunicorn's cache (0.2's tests): 0.2 loaded it.
        app = app.wsgi() if (loader or not hasattr(app, "callable")) else app.callable
    registry = getattr(app, "registry", None)
    return registry if hasattr(registry, "notify") else None


def mark(registry, environment):
    """Records in ``registry.pyramid_forksafe`` which server delivers, unless
    something (the include) already did."""
    if registry is None:
        return
    state = core.state_of(registry)
    if state["environment"] is None:
        state["environment"] = environment
        state["mechanism"] = MECHANISMS.get(environment, "forksafe")


def connect(listener, listeners, environment):
    """LISTENER (an application's, included or not) joins LISTENERS (the
    ``_forksafe`` listeners of ENVIRONMENT's adapter), once."""
    mark(listener.registry, environment)
    listener.attach(listeners)


def replay(listener, payload):
    """A post-fork that happened before LISTENER's application was loaded."""
    return listener.replay(payload, core.source_of(payload, "dispatch", replayed=True))


def attach(registry, environment, how, listeners):
    """Celery's ``registry=``: a registry whose every event comes from
    ENVIRONMENT's adapter, through LISTENERS (its ``_forksafe``
    listeners); returns its listener."""
    state = core.state_of(registry)
    state["environment"] = environment
    state["mechanism"] = "forksafe"
    state["autoconfigure.log"].append(how)
    state["status"] = "%s signals configured" % environment
    listener = core.listener_for(registry)
    listener.attach(listeners)
    return listener


def bootstrap(settings_spec):
    """The registry of the application of SETTINGS_SPEC (an ini file), loaded
    in this process with ``pyramid.paster.bootstrap``."""
    if not settings_spec or settings_spec.split("#")[0].endswith(".json"):
        raise ValueError("registry='bootstrap' needs an ini settings file")
    from pyramid.paster import bootstrap as load

    env = load(settings_spec)
    env["closer"]()  # no request stays pushed in the main process
    return env["registry"]


def mark_configured(registry, environment):
    """0.2's gunicorn ``mark_configured``."""
    log.debug("mark_configured")
    state = core.state_of(registry)
    state["environment"] = environment
    state["mechanism"] = MECHANISMS.get(environment, "forksafe")
    state["autoconfigure.log"].append("%s mark_configured" % environment)
    state["status"] = "%s mark_configured" % environment


def legacy(app, event, environment, kind=None, id=None, **extra):
    """0.2's delivery outside a server: a synthesized payload (EXTRA: more
    keys) to the registry of APP, loading it as 0.2 did.  Returns the
    event, or None."""
    source = core.ADAPTER_SOURCES[environment][event]
    log.debug("%s(%s) - %s", event, environment, source)
    registry = registry_of(app, loader=True)
    if registry is None:
        return None
    mark(registry, environment)
    payload = core.make_payload(event, environment, kind=kind, id=id, **extra)
    return core.dispatch(registry, payload, source=source)
