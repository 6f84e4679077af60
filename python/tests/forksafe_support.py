"""Shared by the pyramid_forksafe tests: imports the packages (forksafe,
pyramid_forksafe) from this checkout, builds real Pyramid applications, and
provides the `_forksafe` module exactly as the forksafe C plugin creates it
(lib/python_bridge.c)."""
import os
import sys
import types
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_ROOT = os.path.dirname(HERE)
REPO_ROOT = os.path.dirname(PACKAGE_ROOT)
if sys.path[0] != PACKAGE_ROOT:
    sys.path.insert(0, PACKAGE_ROOT)

from pyramid.config import Configurator  # noqa: E402

import pyramid_forksafe  # noqa: E402
import pyramid_forksafe.containers.gunicorn  # noqa: E402,F401
from pyramid_forksafe.containers import uwsgi as fs_uwsgi  # noqa: E402
from pyramid_forksafe.interfaces import IForksafeEvent  # noqa: E402

import forksafe  # noqa: E402

for _package in (forksafe, pyramid_forksafe):
    assert os.path.dirname(os.path.dirname(os.path.abspath(_package.__file__))) == (
        PACKAGE_ROOT
    ), "the tests must import %s from this checkout" % _package.__name__


def make_forksafe_module(version=pyramid_forksafe.__version__, container="uwsgi"):
    """The `_forksafe` module as the plugin creates it (its version is
    FORKSAFE_VERSION, which is pyramid_forksafe's: test_version.py)."""
    module = types.ModuleType("_forksafe")
    module.listeners = []
    module.delivered = {}
    module.version = version
    module.container = container
    return module


def payload(event, kind="worker", id=1, pid=None, **extra):
    """A payload shaped like the plugin's (include/forksafe.h)."""
    result = {
        "event": event,
        "container": "uwsgi",
        "process": {
            "kind": kind,
            "id": id,
            "pid": os.getpid() if pid is None else pid,
            "ppid": os.getppid(),
        },
        "generation": 0,
        "respawn": 0,
        "time": 1764095000.123,
        "settings": {"sqlalchemy.url": "sqlite://"},
        "global_settings": {"here": "/srv/app"},
    }
    result.update(extra)
    return result


def bridge_deliver(module, event_payload):
    """What lib/python_bridge.c does for each occurrence: record the
    payload in `delivered`, then walk `listeners` by index (the count taken
    once) calling each with the same dict.  Exceptions propagate here (the
    plugin logs them); the first one is re-raised after the walk."""
    module.delivered[event_payload["event"]] = event_payload
    listeners = module.listeners
    count = len(listeners)
    failure = None
    for index in range(count):
        try:
            listener = listeners[index]
        except IndexError:
            break
        try:
            listener(event_payload)
        except Exception as exc:  # the plugin logs and goes on
            if failure is None:
                failure = exc
    if failure is not None:
        raise failure


class Recorder(object):
    """A subscriber that records the events it receives."""

    def __init__(self):
        self.events = []

    def __call__(self, event):
        self.events.append(event)

    @property
    def names(self):
        return [event.name for event in self.events]


def make_config(settings=None, include="pyramid_forksafe"):
    config = Configurator(settings=dict(settings or {}))
    if include:
        config.include(include)
    return config


def make_app(settings=None, include="pyramid_forksafe", subscribe=IForksafeEvent):
    """A real Pyramid application with a Recorder subscribed to SUBSCRIBE
    (added after the include, as applications usually do)."""
    config = make_config(settings, include)
    recorder = Recorder()
    config.add_subscriber(recorder, subscribe)
    return config.make_wsgi_app(), recorder


#: the modules a test may replace; everything else in sys.modules is left alone.
SERVER_MODULES = ("_forksafe", "uwsgi", "uwsgidecorators")


class ModulesTestCase(unittest.TestCase):
    """Restores the SERVER_MODULES entries of sys.modules after each test.
    Starts `outside` any server (no `_forksafe`, `uwsgi` and
    `uwsgidecorators` not importable) whatever the machine has."""

    def setUp(self):
        saved = {name: sys.modules[name] for name in SERVER_MODULES if name in sys.modules}

        def restore():
            for name in SERVER_MODULES:
                sys.modules.pop(name, None)
            sys.modules.update(saved)

        self.addCleanup(restore)
        sys.modules.pop("_forksafe", None)
        sys.modules["uwsgi"] = None  # `import uwsgi` raises ImportError
        sys.modules["uwsgidecorators"] = None
        fs_uwsgi._fallback_warned = False

    def install_forksafe(self, **kwargs):
        module = make_forksafe_module(**kwargs)
        sys.modules["_forksafe"] = module
        return module


def run_in_own_group(body, bound):
    """Runs BODY() in a forked process leading a process group of its own
    (a billiard pool and its children), kills the whole group after it ends
    or after BOUND seconds, and returns its pid and wait status (None: it
    did not end in time).  BODY raising makes the status 1, its traceback on
    stderr."""
    import signal
    import time

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)
            body()
            code = 0
        except BaseException:
            import traceback
            traceback.print_exc()
        finally:
            os._exit(code)
    try:
        os.setpgid(pid, pid)
    except OSError:
        pass  # the child did it first
    deadline = time.monotonic() + bound
    status = None
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.05)
    else:
        status = None
    try:
        os.killpg(pid, signal.SIGKILL)  # the pool's children, and the pool if stuck
    except ProcessLookupError:
        pass
    if status is None:
        os.waitpid(pid, 0)
    return pid, status
