"""The forksafe core for servers other than uWSGI, through ctypes.

``build/libforksafe.so`` is the same C core the uWSGI plugin is made of;
its host API (``include/forksafe_host.h``) lets a server adapter
written in Python use it: the settings are parsed by the same parser, the
``[forksafe]`` section and ``forksafe-subscribe`` lines by the same code,
``exec:``, ``dl:``, ``symbol:`` and ``python:`` handlers run the same way,
and the ``on-error`` policy words mean the same.  The adapter says what
happened (:meth:`Host.dispatch`) and acts on the policy code it gets back::

    host = Host("gunicorn", "/srv/app/production.ini#main",
                subscriptions=["post-fork exec:/usr/local/bin/notify"],
                source="gunicorn.conf.py")
    code = host.dispatch("post-fork", "worker", 1)
    if code == EXIT: ...           # this process exits (respawned)
    elif code == FATAL: ...        # the whole server stops

Nothing here knows a server: the gunicorn and Celery adapters share it.

The library is found, in this order, at ``$FORKSAFE_LIBRARY``, at the
repository's ``build/libforksafe.so`` (this package in ``python/`` of a
forksafe checkout), then as ``libforksafe.so`` / ``libforksafe.so.0`` on
the dynamic loader's path.  It is loaded with :class:`ctypes.CDLL`, so the
GIL is released while handlers run; ``python:`` handlers take it back
themselves (``PyGILState_Ensure``), and find the interpreter's C-API in the
process (``dlsym(RTLD_DEFAULT)``).  It is loaded ``RTLD_GLOBAL``: native
``dl:`` handlers call the event accessors (``forksafe_event_setting``...)
that it exports.
"""
import ctypes
import json
import os
import sys
import threading
import time

#: forksafe_host_dispatch's results: every handler succeeded, or 1 + the
#: strongest failing policy.
OK = 0
LOG = 1
EXIT = 2
FATAL = 3

#: policy word -> the code a failure under that policy returns.
POLICY_CODES = {"log": LOG, "exit": EXIT, "fatal": FATAL}

#: what a response carrying :meth:`Host.metrics` says it is.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: the events that have a "child" object, and those that have a "reason".
CHILD_EVENTS = ("pre-fork", "post-fork-parent", "child-death")
REASON_EVENTS = ("worker-exit", "master-exit")

#: FORKSAFE_HOST_API_VERSION of include/forksafe_host.h that the structs
#: below mirror; a library of another version refuses them.
HOST_API_VERSION = 2

ENVIRONMENT_VARIABLE = "FORKSAFE_LIBRARY"
LIBRARY_NAMES = ("libforksafe.so", "libforksafe.so.0")
ERROR_SIZE = 4096

_here = os.path.dirname(os.path.abspath(__file__))
#: python/forksafe/host.py -> <repo>/build/libforksafe.so
REPOSITORY_LIBRARY = os.path.join(
    os.path.dirname(os.path.dirname(_here)), "build", "libforksafe.so"
)


class ForksafeError(Exception):
    """A forksafe configuration error: the message is forksafe's one line
    (``FILE:LINE: what is wrong``)."""


class LibraryNotFound(ForksafeError, OSError):
    """build/libforksafe.so could not be found or loaded."""


_library = None
_library_lock = threading.Lock()


def library_candidates():
    """Where :func:`load_library` looks, in order: (description, path)."""
    explicit = os.environ.get(ENVIRONMENT_VARIABLE)
    if explicit:
        return [("$%s" % ENVIRONMENT_VARIABLE, explicit)]
    candidates = [("the forksafe checkout", REPOSITORY_LIBRARY)]
    candidates += [("the loader path", name) for name in LIBRARY_NAMES]
    return candidates


def load_library():
    """The ctypes library (loaded once per process), with the host API's
    signatures set.  Raises :class:`LibraryNotFound` naming every place
    tried."""
    global _library
    with _library_lock:
        if _library is None:
            _library = _declare(_open_library())
        return _library


def _open_library():
    tried = []
    for where, path in library_candidates():
        if os.sep in path and not os.path.exists(path):
            tried.append("%s (%s): no such file" % (path, where))
            continue
        try:
            # RTLD_GLOBAL: dl: handlers resolve forksafe_event_* against it.
            return ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
        except OSError as exc:
            tried.append("%s (%s): %s" % (path, where, exc))
    raise LibraryNotFound(
        "cannot load the forksafe core library (build it with `make` at the root of "
        "the forksafe repository, or set %s to its path); tried: %s"
        % (ENVIRONMENT_VARIABLE, "; ".join(tried))
    )


#: forksafe_host_log_fn: (data, level, line).
_LOG_FUNCTION = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p)

#: FORKSAFE_HOST_LOG_* by value.
LOG_LEVELS = ("error", "warning", "info", "debug")


class _Config(ctypes.Structure):
    """struct forksafe_host_config."""

    _fields_ = [
        ("version", ctypes.c_int),
        ("container", ctypes.c_char_p),
        ("settings", ctypes.c_char_p),
        ("subscriptions", ctypes.c_char_p),
        ("source", ctypes.c_char_p),
        ("on_error", ctypes.c_char_p),
        ("timeout", ctypes.c_double),
        ("verbose", ctypes.c_int),
        ("log", _LOG_FUNCTION),
        ("log_data", ctypes.c_void_p),
        ("hazards", ctypes.c_char_p),
        ("hazard_allow", ctypes.c_char_p),
    ]


class _Process(ctypes.Structure):
    """struct forksafe_host_process."""

    _fields_ = [
        ("kind", ctypes.c_char_p),
        ("id", ctypes.c_int),
        ("pid", ctypes.c_int),
        ("ppid", ctypes.c_int),
        ("respawn", ctypes.c_int),
    ]


class _ReadyWorker(ctypes.Structure):
    """struct forksafe_host_ready_worker."""

    _fields_ = [("id", ctypes.c_int), ("pid", ctypes.c_int), ("ms", ctypes.c_longlong)]


class _Occurrence(ctypes.Structure):
    """struct forksafe_host_occurrence."""

    _fields_ = [
        ("version", ctypes.c_int),
        ("event", ctypes.c_char_p),
        ("self", _Process),
        ("generation", ctypes.c_int),
        ("reason", ctypes.c_char_p),
        ("child", ctypes.POINTER(_Process)),
        ("child_status_known", ctypes.c_int),
        ("child_status", ctypes.c_int),
        ("child_cause", ctypes.c_char_p),
        ("workers", ctypes.POINTER(_ReadyWorker)),
        ("worker_count", ctypes.c_int),
        ("elapsed_ms", ctypes.c_longlong),
    ]


def _declare(lib):
    try:
        lib.forksafe_host_new.restype = ctypes.c_void_p
        lib.forksafe_host_new.argtypes = [
            ctypes.POINTER(_Config),
            ctypes.c_char_p,  # error (a writable buffer)
            ctypes.c_size_t,  # error_size
        ]
        lib.forksafe_host_dispatch.restype = ctypes.c_int
        lib.forksafe_host_dispatch.argtypes = [ctypes.c_void_p, ctypes.POINTER(_Occurrence)]
        lib.forksafe_host_settings_json.restype = ctypes.c_char_p
        lib.forksafe_host_settings_json.argtypes = [ctypes.c_void_p]
        lib.forksafe_host_stats_json.restype = ctypes.c_char_p
        lib.forksafe_host_stats_json.argtypes = [ctypes.c_void_p]
        lib.forksafe_host_metrics_text.restype = ctypes.c_char_p
        lib.forksafe_host_metrics_text.argtypes = [
            ctypes.c_void_p,
            ctypes.POINTER(_Process),
            ctypes.c_size_t,
            ctypes.c_int,
        ]
        lib.forksafe_host_hazards.restype = ctypes.c_int
        lib.forksafe_host_hazards.argtypes = [ctypes.c_void_p]
        lib.forksafe_host_free.restype = None
        lib.forksafe_host_free.argtypes = [ctypes.c_void_p]
    except AttributeError as exc:
        raise LibraryNotFound(
            "%s has no forksafe host API (%s): rebuild it with `make`" % (lib._name, exc)
        ) from None
    return lib


def _bytes(text):
    if text is None:
        return None
    if isinstance(text, bytes):
        return text
    return str(text).encode("utf-8")


def subscription_text(subscriptions):
    """forksafe-subscribe values (a string of lines, or an iterable of
    strings, one subscription each) as the newline-separated text the host
    API takes; None when there are none."""
    return lines_text(subscriptions, "subscription", "'post-fork exec:/bin/true'")


def lines_text(items, what, example):
    """ITEMS (a string of lines, or an iterable of strings, one WHAT each)
    as newline-separated text; None when there are none."""
    if items is None:
        return None
    if isinstance(items, (str, bytes)):
        lines = [items.decode() if isinstance(items, bytes) else items]
    else:
        lines = []
        for item in items:
            if not isinstance(item, str):
                raise TypeError("a forksafe %s is a string like %s, not %r" % (what, example, item))
            if "\n" in item.strip("\n"):
                raise ValueError("one %s per item, not several lines: %r" % (what, item))
            lines.append(item.strip("\n"))
    text = "\n".join(lines)
    return text if text.strip() else None


class Host(object):
    """One server instance's forksafe configuration: settings, subscriptions,
    policy.  Created in the master before any fork; its children use the
    copy they inherit (nothing is re-read per fork).

    ``settings_spec`` is ``PATH[#NAME]`` as ``forksafe-settings`` (None: no
    settings): a paste ini's ``[app:NAME]`` (default main), whose
    ``[forksafe]`` section is subscribed too, or a flat ``.json`` map.
    ``subscriptions`` are ``forksafe-subscribe`` values, subscribed after
    the section; ``source`` names them in error messages.  ``on_error`` is
    ``"log"`` (None), ``"exit"`` or ``"fatal"``; ``timeout`` in seconds for
    exec handlers (<= 0: 30); ``verbose`` logs every dispatch.  ``log``
    gets each line the core logs, as ``log(level, line)`` (level one of
    :data:`LOG_LEVELS`); by default it is written to ``sys.stderr``,
    prefixed ``[forksafe] ``, so a server that redirects ``sys.stderr`` to
    its logger (Celery does) logs it like its own lines.

    ``hazards`` (``"warn"``, None, ``"fail"`` or ``"off"``) and
    ``hazard_allow`` (rules ``thread:GLOB``, ``tcp:HOST:PORT``,
    ``unix:GLOB``) say what a pre-fork dispatch does about what the child is
    about to inherit: see :meth:`hazards_found`.

    Raises :class:`ForksafeError` with forksafe's one-line message when the
    configuration is wrong (every handler is resolved here), and
    :class:`LibraryNotFound` without the library."""

    def __init__(
        self,
        container,
        settings_spec=None,
        subscriptions=(),
        source="forksafe-subscribe",
        on_error=None,
        timeout=0,
        verbose=False,
        log=None,
        hazards=None,
        hazard_allow=(),
    ):
        self._lib = load_library()
        self._handle = None
        self.container = container
        self.settings_spec = settings_spec
        self.source = source
        self.on_error = on_error or "log"
        if self.on_error not in POLICY_CODES:
            # The core says so too; checked here for the Python-side failures.
            raise ForksafeError(
                "%s: on-error must be log, exit or fatal, not '%s'" % (source, on_error)
            )
        self.timeout = float(timeout or 0)
        self.verbose = bool(verbose)
        self.log = log or write_to_stderr
        # Kept with the host: the core calls it for as long as the host lives.
        self._log_function = _LOG_FUNCTION(self._log_line)
        error = ctypes.create_string_buffer(ERROR_SIZE)
        config = _Config(
            HOST_API_VERSION,
            _bytes(container),
            _bytes(settings_spec),
            _bytes(subscription_text(subscriptions)),
            _bytes(source),
            _bytes(on_error),
            self.timeout,
            1 if self.verbose else 0,
            self._log_function,
            None,
            _bytes(hazards),
            _bytes(lines_text(hazard_allow, "hazard allow rule", "'tcp:*:5432'")),
        )
        #: "warn", "fail" or "off".
        self.hazards = hazards or "warn"
        handle = self._lib.forksafe_host_new(ctypes.byref(config), error, ERROR_SIZE)
        if not handle:
            message = error.value.decode("utf-8", "replace") or "forksafe_host_new failed"
            raise ForksafeError(message)
        self._handle = handle
        raw = self._lib.forksafe_host_settings_json(handle)
        #: {"settings": {...}, "global_settings": {...}}, from
        #: forksafe_host_settings_json (parsed once).
        self.settings = json.loads(raw.decode("utf-8")) if raw else {}
        self.settings.setdefault("settings", {})
        self.settings.setdefault("global_settings", {})

    def _log_line(self, _data, level, line):
        # Called from C: an exception must not escape into the core.
        try:
            name = LOG_LEVELS[level] if 0 <= level < len(LOG_LEVELS) else "error"
            self.log(name, line.decode("utf-8", "replace"))
        except Exception:
            pass

    # ------------------------------------------------------------ settings

    @property
    def app_settings(self):
        """The app's settings map (Pyramid's registry.settings)."""
        return self.settings["settings"]

    @property
    def global_settings(self):
        """PasteDeploy's global_conf ([DEFAULT], here, __file__)."""
        return self.settings["global_settings"]

    @property
    def failure_code(self):
        """What a failure outside the core (a Pyramid subscriber, say) returns
        under this host's on-error policy: 1 + the policy, as the core does."""
        return POLICY_CODES[self.on_error]

    @property
    def closed(self):
        return self._handle is None

    # ------------------------------------------------------------ dispatch

    def dispatch(
        self,
        event,
        kind,
        id,
        respawn=0,
        generation=0,
        child=None,
        reason=None,
        pid=0,
        ppid=0,
        workers=None,
        elapsed_ms=0,
    ):
        """Runs the subscriptions of EVENT in this process, a KIND
        ("master", "worker", ...) with ID (0 for the master).  PID and PPID
        0: this process's.  CHILD (pre-fork, post-fork-parent, child-death) is
        a mapping with ``kind``, ``id``, and optionally ``pid`` (0: not
        known yet), ``respawn``, ``status`` (a waitpid status; absent: not
        known) and ``cause``.  REASON for worker-exit and master-exit.
        generation-ready: WORKERS ({id, pid, ms}), ELAPSED_MS.

        Returns :data:`OK` (0), or 1 + the strongest failing policy
        (:data:`LOG`, :data:`EXIT`, :data:`FATAL`) for the caller to act on.
        Raises ValueError for an unknown event or process kind."""
        if self._handle is None:
            raise ValueError("this forksafe Host is closed")
        process = _Process(
            _bytes(kind), int(id or 0), int(pid or 0), int(ppid or 0), int(respawn or 0)
        )
        occurrence = _Occurrence(
            HOST_API_VERSION, _bytes(event), process, int(generation or 0), _bytes(reason)
        )
        if child is not None:
            if child.get("kind") is None:
                raise ValueError("a child needs a kind: %r" % (child,))
            child_process = _Process(
                _bytes(child["kind"]),
                int(child.get("id") or 0),
                int(child.get("pid") or 0),
                0,
                int(child.get("respawn") or 0),
            )
            occurrence.child = ctypes.pointer(child_process)
            if child.get("status") is not None:
                occurrence.child_status_known = 1
                occurrence.child_status = int(child["status"])
            occurrence.child_cause = _bytes(child.get("cause"))
        if workers is not None:
            occurrence.workers = (_ReadyWorker * max(len(workers), 1))(
                *[_ReadyWorker(int(w["id"]), int(w["pid"]), int(w["ms"])) for w in workers])
            occurrence.worker_count, occurrence.elapsed_ms = len(workers), int(elapsed_ms or 0)
        code = self._lib.forksafe_host_dispatch(self._handle, ctypes.byref(occurrence))
        if code < 0:
            raise ValueError(
                "forksafe refused the event %r in a %r process (unknown event or kind)"
                % (event, kind)
            )
        return code

    def hazards_found(self):
        """How many hazards no allow rule covers the last pre-fork
        dispatched in this process found: threads and connected sockets the
        child is about to inherit (each in that payload's ``"hazards"``, and
        said in the log once per child and generation).  With ``hazards =
        "fail"`` the adapter refuses that fork."""
        if self._handle is None:
            raise ForksafeError("the host is closed")
        return self._lib.forksafe_host_hazards(self._handle)

    def payload(
        self,
        event,
        kind,
        id,
        respawn=0,
        generation=0,
        child=None,
        reason=None,
        pid=0,
        ppid=0,
        hazards=None,
    ):
        """The payload the core gives its handlers for the same dispatch
        (include/forksafe.h), built in Python, for code that needs one
        outside a dispatch (pyramid_forksafe's 0.2 calls, tests).  A
        pre-fork's ``hazards`` are what the core found then: given, or
        left out.  Settings are copies."""
        return make_payload(
            self.container, event, kind, id, self.app_settings, self.global_settings,
            pid=pid, ppid=ppid, respawn=respawn, generation=generation, child=child,
            reason=reason, hazards=hazards,
        )

    def python_bridge(self):
        """Makes :meth:`dispatch` run the callables of ``_forksafe.listeners``
        too, after the subscriptions, as the uWSGI plugin does: the core
        makes the ``_forksafe`` module (listeners, delivered, version,
        container, recorded()) in this interpreter if there is none, gives
        each listener the payload its ``python:`` handlers get, counts each
        in :meth:`stats` (handler ``pyramid_forksafe``) and treats one
        that raises as a failure under this host's on-error policy (logged
        with its traceback).  Returns the module.  Raises
        :class:`ForksafeError` if the core could not make it."""
        if self._handle is None:
            raise ForksafeError("the host is closed")
        # PyDLL: the call keeps the GIL (the core would take it anyway).
        library = ctypes.PyDLL(self._lib._name, mode=ctypes.RTLD_GLOBAL)
        function = library.forksafe_host_python_bridge
        function.restype = ctypes.c_int
        function.argtypes = [ctypes.c_void_p]
        if function(self._handle) != 0:
            raise ForksafeError("forksafe_host_python_bridge failed: no Python in the core's "
                                "view of this process, or out of memory")
        return sys.modules["_forksafe"]

    # ------------------------------------------------------------ counters

    def stats(self):
        """The counters and recent dispatch history of this host and of every
        process forked from it after it was created (they share memory):
        {"events": {EVENT: {"fired", "handlers", "failed", "last_us",
        "max_us"}}, "history": [...], "history_size", "subscriptions"}."""
        if self._handle is None:
            raise ForksafeError("the host is closed")
        raw = self._lib.forksafe_host_stats_json(self._handle)
        if raw is None:
            raise MemoryError("forksafe_host_stats_json")
        return json.loads(raw.decode("utf-8"))

    def metrics(self, processes=(), generation=0):
        """The same counters in Prometheus' text exposition format 0.0.4
        (a str; serve it with ``Content-Type:`` :data:`METRICS_CONTENT_TYPE`),
        with GENERATION (the server's reload count) and the memory of each
        process of PROCESSES, ``(kind, id, pid)`` tuples (pid 0: this
        process), from ``/proc/PID/smaps_rollup``: a process that is gone is
        left out."""
        if self._handle is None:
            raise ForksafeError("the host is closed")
        processes = list(processes)
        table = (_Process * max(len(processes), 1))()
        for slot, (kind, id, pid) in zip(table, processes):
            slot.kind, slot.id, slot.pid = _bytes(kind), int(id or 0), int(pid or 0)
        raw = self._lib.forksafe_host_metrics_text(
            self._handle, table, len(processes), int(generation or 0))
        if raw is None:
            raise MemoryError("forksafe_host_metrics_text")
        return raw.decode("utf-8")

    # ------------------------------------------------------------ lifetime

    def close(self):
        """Frees the core's host (idempotent).  Handlers can no longer run."""
        handle, self._handle = self._handle, None
        if handle:
            self._lib.forksafe_host_free(handle)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __repr__(self):
        return "<forksafe Host %s %s%s>" % (
            self.container,
            self.settings_spec,
            " closed" if self._handle is None else "",
        )


def write_to_stderr(level, line):
    """A Host's default logger: ``[forksafe] LINE`` on ``sys.stderr``."""
    del level
    try:
        sys.stderr.write("[forksafe] %s\n" % line)
        sys.stderr.flush()
    except Exception:
        pass


def make_payload(container, event, kind, id, settings, global_settings, pid=0, ppid=0,
                 respawn=0, generation=0, child=None, reason=None, now=None, hazards=None):
    """A payload with the keys and rules of the C core (lib/event.c):
    ``child`` only in pre-fork, post-fork-parent and child-death (no pid in
    pre-fork or when not known), ``reason`` only in the exit events,
    ``hazards`` (a list, as the core found them) only in pre-fork and only
    when given (the core leaves it out when hazards are off).  PID and PPID
    0: this process's; NOW None: the current time.  Settings are copies."""
    payload = {
        "event": event,
        "container": container,
        "process": {
            "kind": kind,
            "id": int(id or 0),
            "pid": int(pid or 0) or os.getpid(),
            "ppid": int(ppid or 0) or os.getppid(),
        },
        "generation": int(generation or 0),
        "respawn": int(respawn or 0),
        "time": time.time() if now is None else now,
        "settings": dict(settings or {}),
        "global_settings": dict(global_settings or {}),
    }
    if event in CHILD_EVENTS and child is not None:
        payload["child"] = child_object(event, child)
    if event in REASON_EVENTS and reason is not None:
        payload["reason"] = reason
    if event == "pre-fork" and hazards is not None:
        payload["hazards"] = [dict(hazard) for hazard in hazards]
    return payload


def child_object(event, child):
    """The payload's "child" as the core builds it (lib/event.c): kind, id,
    pid (not in pre-fork, nor when unknown), respawn; with a status: status,
    signal or exit_code; cause."""
    result = {"kind": child["kind"], "id": int(child.get("id") or 0)}
    pid = int(child.get("pid") or 0)
    if event != "pre-fork" and pid > 0:
        result["pid"] = pid
    result["respawn"] = int(child.get("respawn") or 0)
    status = child.get("status")
    if status is not None:
        status = int(status)
        result["status"] = status
        if os.WIFSIGNALED(status):
            result["signal"] = os.WTERMSIG(status)
        if os.WIFEXITED(status):
            result["exit_code"] = os.WEXITSTATUS(status)
    if child.get("cause"):
        result["cause"] = child["cause"]
    return result


__all__ = (
    "CHILD_EVENTS",
    "EXIT",
    "FATAL",
    "ForksafeError",
    "HOST_API_VERSION",
    "Host",
    "LibraryNotFound",
    "LOG",
    "METRICS_CONTENT_TYPE",
    "OK",
    "POLICY_CODES",
    "REASON_EVENTS",
    "child_object",
    "load_library",
    "make_payload",
    "subscription_text",
)
