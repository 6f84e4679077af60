"""Shared by the bench/*.py benchmarks: uWSGI instances started side by side
in one run, medians, and the tables they print.

The machines these run on are small and noisy, so a benchmark never trusts
an absolute number: every variant runs in the same invocation, the variants
take turns round after round (so a burst of background load hits them
alike), and the result is the median of the per-round medians, as a ratio
against the baseline variant of the same run.

Every uWSGI is started by us in a session of its own, stopped by its pid
with SIGINT (SIGTERM would be a reload) and, whatever happens, its process
group killed and reaped at exit.
"""

import atexit
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
BUILD = os.path.join(ROOT, "build")
OUT_DIR = os.path.join(BUILD, "bench")
UWSGI = os.environ.get("UWSGI", "uwsgi")
TEST_APPS = os.path.join(ROOT, "tests", "integration", "apps")
BENCH_APPS = os.path.join(ROOT, "bench", "apps")
BENCH_BUILD = os.path.join(BUILD, "bench")

# The benchmarks drive uWSGI with the integration tests' own helpers.
sys.path.insert(0, TEST_APPS.rsplit(os.sep, 1)[0])
from harness import children, free_port, kill_group, read_socket, wait_exited  # noqa: E402,F401
EVENT_LOG_SO = os.path.join(BUILD, "examples", "event_log.so")

_running = []


# Every benchmark instance starts with this; the number of workers, the
# app and the plugins come after.
HEADER = """
[uwsgi]
plugin-dir = {plugin_dir}
master = true
http-socket = 127.0.0.1:{port}
stats = {stats}
pythonpath = {test_apps}
pythonpath = {bench_apps}
disable-logging = true
"""
SIMPLE_APP = "wsgi-file = {test_apps}/simple_app.py\n"
# The instance the throughput and memory benchmarks vary (plugins come after).
TWO_WORKERS = HEADER + "processes = 2\n" + SIMPLE_APP
# One worker that serves one request and is respawned (spawn, master memory).
RESPAWNING = HEADER + """processes = 1
max-requests = 1
min-worker-lifetime = 0
forkbomb-delay = 0
; a worker exits in ~10 ms instead of ~100 ms of Py_Finalize()
skip-atexit-teardown = true
"""
# forksafe with a dl:, a python: and an exec: subscription, in the worker.
THREE_SUBSCRIPTIONS = """plugins = python3,forksafe
forksafe-settings = %p
forksafe-subscribe = post-fork dl:{event_log_so}:record
forksafe-subscribe = worker-ready python:bench_handlers:on_post_fork
forksafe-subscribe = worker-exit exec:true

[app:main]
forksafe.event_log = {dir}/events.jsonl
"""


def padded(ini_body):
    """INI_BODY with bench/apps/intern_pad.py imported in the master, in the
    [uwsgi] section (the body may end with an [app:main] section)."""
    return ini_body.replace("[uwsgi]\n", "[uwsgi]\npyimport = intern_pad\n", 1)


def env_int(name, default):
    value = os.environ.get(name)
    return int(value) if value else default


def median(values):
    return statistics.median(values) if values else float("nan")


def private_kib(pid):
    """Private_Clean + Private_Dirty of PID in KiB: the memory only it uses."""
    total = 0
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("Private_Clean", "Private_Dirty"):
                total += int(rest.split()[0])
    return total


def status_kib(pid, key):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            name, _, rest = line.partition(":")
            if name == key:
                return int(rest.split()[0])
    raise KeyError(key)


class Uwsgi:
    """One uWSGI instance, in a temp dir of its own, from an ini body in
    which {port}, {dir}, {stats}, {plugin_dir}, {test_apps}, {bench_apps},
    {bench_build} and {event_log_so} are filled in."""

    def __init__(self, name, ini_body):
        self.name = name
        self.dir = tempfile.mkdtemp(prefix="forksafe-bench-")
        self.port = free_port()
        self.stats = "127.0.0.1:%d" % free_port()
        self.log = os.path.join(self.dir, "uwsgi.log")
        self.ini = os.path.join(self.dir, "uwsgi.ini")
        text = ini_body.format(port=self.port, dir=self.dir, stats=self.stats,
                               plugin_dir=ROOT, test_apps=TEST_APPS,
                               bench_apps=BENCH_APPS, bench_build=BENCH_BUILD,
                               event_log_so=EVENT_LOG_SO)
        with open(self.ini, "w") as f:
            f.write(text)
        self.proc = None

    def start(self, wrapper=()):
        """Starts uWSGI, under WRAPPER (a command prefix such as valgrind's)."""
        with open(self.log, "ab") as logf:
            self.proc = subprocess.Popen(list(wrapper) + [UWSGI, "--ini", self.ini], stdout=logf,
                                         stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                         cwd=self.dir, start_new_session=True)
        _running.append(self)
        return self

    def wait_ready(self, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s: uWSGI exited (%s):\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            try:
                self.get()
                return self
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("%s: not answering after %ss:\n%s"
                           % (self.name, timeout, self.log_tail()))

    def log_tail(self, n=3000):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-n:]
        except FileNotFoundError:
            return ""

    def get(self, path="/", timeout=10):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                    timeout=timeout) as r:
            return r.read()

    def poke(self):
        """Reads uWSGI's stats server: an event in the master's loop, which
        wakes it to reap dead workers and fork their successors at once."""
        return read_socket(self.stats)

    @property
    def pid(self):
        return self.proc.pid

    def workers(self):
        return children(self.proc.pid)

    def stop(self):
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGINT)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()
        if self in _running:
            _running.remove(self)
        subprocess.run(["rm", "-rf", self.dir], check=False)

    def kill(self):
        kill_group(self.proc)


@atexit.register
def _stop_all():
    for u in list(_running):
        u.kill()
        subprocess.run(["rm", "-rf", u.dir], check=False)


def machine():
    cpus = os.cpu_count()
    model = "?"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    version = subprocess.run([UWSGI, "--version"], capture_output=True, text=True).stdout.strip()
    return "%d CPUs (%s), uWSGI %s, %s" % (cpus, model, version,
                                          time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()))


def table(headers, rows):
    """A Markdown table: readable as plain text and in results.md."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(cells[0], widths)) + " |",
             "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for row in cells[1:]:
        lines.append("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return "\n".join(lines)


def report(name, title, text):
    """Prints one benchmark's section and stores it as build/bench/sections/NAME.md;
    build/bench/results.md is every stored section, in name order."""
    section = "## %s\n\n%s\n" % (title, text.rstrip())
    print("\n" + section, flush=True)
    sections = os.path.join(OUT_DIR, "sections")
    os.makedirs(sections, exist_ok=True)
    with open(os.path.join(sections, name + ".md"), "w") as f:
        f.write(section)
    parts = []
    for entry in sorted(os.listdir(sections)):
        if entry.endswith(".md"):
            with open(os.path.join(sections, entry)) as f:
                parts.append(f.read())
    with open(os.path.join(OUT_DIR, "results.md"), "w") as f:
        f.write("# forksafe benchmarks\n\nMachine: %s\n\n%s" % (machine(), "\n".join(parts)))


def verdict(ok):
    return "met" if ok else "MISSED"
