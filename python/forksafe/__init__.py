"""forksafe: the fork lifecycle of pre-fork servers, for any Python
application.

The C core (``libforksafe.so``) reads the settings and the ``[forksafe]``
subscriptions and runs the handlers; :mod:`forksafe.host` binds it through
ctypes.  :mod:`forksafe.gunicorn` (hooks for a gunicorn config file) and
:mod:`forksafe.celery` (``install(app)``) tell it what their server does,
through what they share in :mod:`forksafe.adapter`.  Nothing here needs a
web framework: Flask, Django or plain WSGI applications get every event
through their handlers; pyramid_forksafe adds the events as Pyramid events.
(Under uWSGI the forksafe plugin itself is the host: no Python is needed.)
"""

#: one version for every artefact of forksafe: include/forksafe.h's
#: FORKSAFE_VERSION, debian/changelog, both Python distributions
#: (python/tests/test_version.py checks that they agree).
__version__ = "0.3.0"

__all__ = ("__version__",)
