"""What the gunicorn and Celery adapters share: the policy words and
codes, the ``[forksafe]`` log line, the shared page that tells the main
process how a child ended, wait statuses and death causes, the fork-hazard
options and the allow rules for a server's own connections, and the one
place that knows a web framework may exist (:func:`register_framework`).

Nothing here knows gunicorn or Celery; :mod:`forksafe.gunicorn` and
:mod:`forksafe.celery` say what happened in their server, dispatch it to the
core (:class:`forksafe.host.Host`, whose dispatch also runs the
``_forksafe`` listeners: the framework's registries among them) and act on
the policy code it returns.
"""
import ipaddress
import mmap
import os
import struct
import time

from .host import EXIT
from .host import FATAL
from .host import ForksafeError
from .host import LOG
from .host import OK
from .host import POLICY_CODES
from .host import write_to_stderr

# ----------------------------------------------------------------- policy


def policy_code(on_error):
    """The dispatch code a failure has under the on-error word ON_ERROR
    (None: ``log``)."""
    return POLICY_CODES.get(on_error or "log", LOG)


def policy_word(code):
    """The on-error word of a code that asks for more than a log line."""
    return "fatal" if code >= FATAL else "exit"


def say(message):
    """One ``[forksafe]`` line on ``sys.stderr``, where the core's lines go
    too (never raises: a closed stderr must not turn into a policy)."""
    write_to_stderr("warning", message)


# ----------------------------------------------------------- fork hazards

#: the forksafe-hazards words (None: warn).
HAZARD_MODES = ("warn", "fail", "off")


def hazard_mode(value, where, option):
    """VALUE, a forksafe-hazards word (None: warn), checked here so that
    the error names the option as the server's configuration spells it
    (OPTION, at WHERE): :class:`~forksafe.host.ForksafeError` otherwise."""
    if value is None or value in HAZARD_MODES:
        return value
    raise ForksafeError("%s: %s must be warn, fail or off, not %r" % (where, option, value))


def allow_rules(value, where, option):
    """Allow rules given as VALUE (one string, a rule per line, or an
    iterable of strings) as a list of rules; the core parses each.
    :class:`~forksafe.host.ForksafeError` naming OPTION for anything else."""
    if value is None:
        return []
    if isinstance(value, bytes):
        value = value.decode("utf-8")
    items = [value] if isinstance(value, str) else value
    try:
        items = list(items)
    except TypeError:
        items = [value]
    rules = []
    for item in items:
        if not isinstance(item, str):
            raise ForksafeError("%s: %s takes rules like 'tcp:*:5432' (a string or a list of "
                                "strings), not %r" % (where, option, item))
        rules.extend(line.strip() for line in item.splitlines() if line.strip())
    return rules


def peer_rules(host=None, port=None, path=None):
    """Allow rules for a connection a server opens itself, to HOST:PORT or
    to the UNIX socket PATH, read from its configuration (a broker URL, a
    syslog address).  An IP address allows that address and port; a name
    allows the port at any address: the name may resolve to another address
    when the server reconnects, and under ``hazards = "fail"`` a connection
    of the server's own said to be the application's would stop it."""
    if path:
        return ["unix:" + glob_escape(path)]
    if not host or not port:
        return []
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return ["tcp:*:%d" % int(port)]
    # The core writes a peer as inet_ntop does: the compressed form.
    return ["tcp:%s:%d" % (address.compressed, int(port))]


def glob_escape(text):
    """TEXT as an fnmatch(3) glob that matches it alone."""
    return "".join("[%s]" % c if c in "*?[" else c for c in text)


# --------------------------------------------------------- the framework

_framework = None


def register_framework(framework):
    """Makes FRAMEWORK the bridge from payloads to an application's own
    events: pyramid_forksafe registers itself (its ``framework`` module)
    when imported.  The adapters ask it for the listeners of the
    applications they see, which join the ``_forksafe`` listeners; without
    one, only the core's subscriptions and the ``_forksafe`` listeners (any
    callables) hear the events.  Returns the previous one.

    A framework provides:

    - ``app_listener(app, loader)``: the listener of a WSGI application,
      or None;
    - ``connect(listener, listeners, environment)``: that listener joins
      the ``_forksafe`` listeners LISTENERS of ENVIRONMENT's adapter;
    - ``replay(listener, payload)``: a post-fork that happened before the
      application was loaded;
    - ``attach(registry, environment, how, listeners)`` and
      ``bootstrap(settings_spec)``, for Celery's ``registry=``;
    - ``mark_configured(registry, environment)`` and ``legacy(app, event,
      source, environment, kind=None, id=None, **extra)``: 0.2's gunicorn
      calls."""
    global _framework
    previous, _framework = _framework, framework
    return previous


def framework(required_for=None):
    """The registered framework, or None.  With REQUIRED_FOR (what needs
    it, for the message), imports pyramid_forksafe, the one framework there
    is, when none is registered yet, and raises ValueError if that fails."""
    if _framework is None and required_for is not None:
        try:
            import pyramid_forksafe  # noqa: F401  (registers itself)
        except ImportError as exc:
            raise ValueError("%s needs pyramid_forksafe (%s)" % (required_for, exc)) from None
    return _framework


def app_listeners(apps, loader=False):
    """The framework listeners of the loaded applications among APPS (WSGI
    applications or None), each once."""
    result = []
    if _framework is None:
        return result
    for app in apps:
        listener = _framework.app_listener(app, loader) if app is not None else None
        if listener is not None and not any(listener is seen for seen in result):
            result.append(listener)
    return result


# ------------------------------------------------------------ shared page
# A page shared by the main process and every child (an anonymous
# MAP_SHARED mapping made before the first fork): the instance state, so a
# child knows why it is asked to leave, whether a child's fatal policy
# stopped the server, and one record per child slot, so the main process
# knows whether a dead child completed worker-exit, and why it was asked to
# leave.

#: the instance state.
RUNNING, STOPPING, RELOADING = 0, 1, 2
#: slot flags: the child completed worker-exit; the main process is
#: shrinking the pool by this child.
EXITED = 1
CHEAPER = 2
SLOTS = 1024

_HEADER = struct.Struct("=iiq")  # state, fatal, state changed (monotonic ns)
_SLOT = struct.Struct("=iiq")  # pid, flags, reason (the adapter's code)


class SharedState(object):
    """The shared page.  Slots are numbered from 0; offsets and layout are
    private to this module."""

    def __init__(self, slots=SLOTS):
        self.slots = slots
        self.map = mmap.mmap(-1, _HEADER.size + _SLOT.size * slots)

    def set_state(self, state):
        _state, fatal, _changed = _HEADER.unpack_from(self.map, 0)
        _HEADER.pack_into(self.map, 0, state, fatal, time.monotonic_ns())

    def state(self):
        """(state, monotonic ns when it was set)."""
        state, _fatal, changed = _HEADER.unpack_from(self.map, 0)
        return state, changed

    def set_fatal(self):
        """A child's fatal policy stopped the server."""
        state, _fatal, changed = _HEADER.unpack_from(self.map, 0)
        _HEADER.pack_into(self.map, 0, state, 1, changed)

    def fatal(self):
        return _HEADER.unpack_from(self.map, 0)[1] == 1

    def _offset(self, index):
        if index is None or not 0 <= index < self.slots:
            return None
        return _HEADER.size + _SLOT.size * index

    def claim(self, index, pid):
        """A new child in slot INDEX: its pid (0: not known yet), no flags,
        no reason."""
        offset = self._offset(index)
        if offset is not None:
            _SLOT.pack_into(self.map, offset, pid, 0, 0)

    def slot(self, index):
        """(pid, flags) of slot INDEX, or None if it is not tracked."""
        offset = self._offset(index)
        if offset is None:
            return None
        pid, flags, _reason = _SLOT.unpack_from(self.map, offset)
        return pid, flags

    def flag(self, index, pid, flag):
        """Sets FLAG in slot INDEX if it belongs to PID (None: to anyone)."""
        offset = self._offset(index)
        if offset is None:
            return
        current, flags, reason = _SLOT.unpack_from(self.map, offset)
        if pid is None or current == pid:
            _SLOT.pack_into(self.map, offset, current, flags | flag, reason)

    def set_reason(self, index, reason):
        """Why the main process asks the child of slot INDEX to leave (a
        code of the adapter's)."""
        offset = self._offset(index)
        if offset is not None:
            pid, flags, _reason = _SLOT.unpack_from(self.map, offset)
            _SLOT.pack_into(self.map, offset, pid, flags, reason)

    def reason(self, index):
        offset = self._offset(index)
        return _SLOT.unpack_from(self.map, offset)[2] if offset is not None else 0

    def set_pid(self, index, pid):
        """The pid of the child in slot INDEX, once known; flags and reason
        stay."""
        offset = self._offset(index)
        if offset is not None:
            _pid, flags, reason = _SLOT.unpack_from(self.map, offset)
            _SLOT.pack_into(self.map, offset, pid, flags, reason)

    def running(self):
        """[(index, pid)] of every slot whose child's pid is known and whose
        worker-exit has not completed: what any process of the server can
        list (a child killed without worker-exit stays listed until its slot
        is reused; its memory is gone, and metrics leave it out)."""
        found = []
        for index in range(self.slots):
            pid, flags, _reason = _SLOT.unpack_from(self.map, _HEADER.size + _SLOT.size * index)
            if pid > 0 and not flags & EXITED:
                found.append((index, pid))
        return found


# ----------------------------------------------------- how a child ended


def wait_status(si_code, si_status):
    """A waitpid() status from waitid()'s si_code and si_status."""
    if si_code == os.CLD_EXITED:
        return (si_status & 0xFF) << 8
    if si_code == os.CLD_DUMPED:
        return (si_status & 0x7F) | 0x80
    return si_status & 0x7F  # CLD_KILLED


def status_from_exitcode(exitcode):
    """A waitpid status from a ``multiprocessing``-style exit code (``-N``:
    killed by signal N, else the exit status); None if unknown."""
    if exitcode is None:
        return None
    if exitcode < 0:
        return -exitcode & 0x7F
    return (exitcode & 0xFF) << 8


def death_cause(status, harakiri=False, killed_by_master=False):
    """child-death's cause for a wait STATUS: ``exit``, ``signal``,
    ``harakiri`` (killed by a signal because it overran its time limit),
    ``killed-by-master`` (killed by the signal the main process sent it),
    ``unknown`` (status not known)."""
    if status is None:
        return "unknown"
    if os.WIFEXITED(status):
        return "exit"
    if os.WIFSIGNALED(status):
        if harakiri:
            return "harakiri"
        if killed_by_master:
            return "killed-by-master"
        return "signal"
    return "unknown"


__all__ = (
    "CHEAPER",
    "EXIT",
    "EXITED",
    "FATAL",
    "LOG",
    "OK",
    "RELOADING",
    "RUNNING",
    "STOPPING",
    "HAZARD_MODES",
    "SharedState",
    "allow_rules",
    "app_listeners",
    "death_cause",
    "framework",
    "glob_escape",
    "hazard_mode",
    "peer_rules",
    "policy_code",
    "policy_word",
    "register_framework",
    "say",
    "status_from_exitcode",
    "wait_status",
)
