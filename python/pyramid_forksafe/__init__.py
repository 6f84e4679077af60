"""pyramid_forksafe: the fork lifecycle of pre-fork servers as Pyramid events.

``config.include("pyramid_forksafe")`` (or ``pyramid.includes =
pyramid_forksafe``) connects the application's registry to the container it
runs in; subscribers registered for the classes in
:mod:`pyramid_forksafe.events` then run in the right process at the right
time.  API-compatible with pyramid_forksafe 0.2.

The servers' side (the C core through ctypes, the gunicorn and Celery
adapters) is the framework-free ``forksafe`` package; importing this one
makes Pyramid its framework (:mod:`pyramid_forksafe.framework`), so those
adapters deliver to Pyramid registries too.
"""
import forksafe
import forksafe.adapter

from . import framework
from .core import dispatch
from .core import log
from .core import make_payload
from .core import registry_setup
from .events import EVENTS

#: one version for every artefact of forksafe (include/forksafe.h's
#: FORKSAFE_VERSION, the Debian packages, both Python distributions).
__VERSION__ = forksafe.__version__
__version__ = __VERSION__

forksafe.adapter.register_framework(framework)


def includeme(config):
    """Auto-detects the container.  Under uWSGI every registry that includes
    the package hears the events (see pyramid_forksafe.containers.uwsgi);
    outside a forking server nothing happens and
    ``registry.pyramid_forksafe["status"]`` says so.  gunicorn needs its
    hooks in the gunicorn config file (pyramid_forksafe.containers.gunicorn)."""
    state = registry_setup(config)
    log.debug("attempting auto-configure")
    try:
        from .containers import uwsgi

        uwsgi.configure(config)
    except Exception as exc:
        # As 0.2: a failed auto-configuration does not stop the application.
        state["autoconfigure.log"].append("uWSGI error: %s" % exc)
        state["status"] = "uWSGI error"
        log.exception("pyramid_forksafe: uWSGI auto-configuration failed")


__all__ = (
    "EVENTS",
    "__VERSION__",
    "dispatch",
    "includeme",
    "make_payload",
    "registry_setup",
)
