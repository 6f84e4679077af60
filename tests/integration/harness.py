"""Drives a real uWSGI with the built forksafe plugin for the integration tests.

Every instance is started with a pidfile, stopped by the pid we started, and
always reaped -- also when a test fails (the stop is registered as a cleanup
before the test body runs).  Events are recorded by the native `recorder`
fixture (tests/fixtures/recorder.c) as one JSON line per event.
"""

import json
import os
import random
import re
import select
import signal
import socket
import subprocess
import tempfile
import textwrap
import time
import unittest
import urllib.request

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build")
PLUGIN_DIR = ROOT
RECORDER = os.path.join(BUILD, "examples", "event_log.so")
FAILING = os.path.join(BUILD, "fixtures", "failing.so")

# The head most tests' uWSGI ini starts with: python3 and forksafe from the
# checkout, a master and 2 workers on an HTTP socket, a pidfile.
UWSGI_HEAD = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
"""
UWSGI = os.environ.get("FORKSAFE_UWSGI") or os.environ.get("UWSGI", "uwsgi")
APP_DIR = os.path.join(ROOT, "tests", "integration", "apps")
# FORKSAFE_EMBEDDED=1: FORKSAFE_UWSGI has python and forksafe compiled in
# (make embedded), so the generated ini must not load them as plugins.
EMBEDDED = os.environ.get("FORKSAFE_EMBEDDED") == "1"


def _compiled_in(plugin):
    name = os.path.basename(plugin)
    if name.endswith("_plugin.so"):
        name = name[:-len("_plugin.so")]
    return re.fullmatch(r"python[0-9]*|forksafe", name)


def without_plugin_loading(text):
    """TEXT with its [uwsgi] section's plugin-dir lines dropped and the
    python and forksafe entries of plugins / need-plugins lines removed
    (other plugins stay; a line left empty goes)."""
    out, section = [], None
    for line in text.splitlines(keepends=True):
        stripped = line.strip()
        if stripped.startswith("[") and stripped.endswith("]"):
            section = stripped[1:-1].strip()
        key, eq, value = line.partition("=")
        key = key.strip().replace("_", "-")
        if section != "uwsgi" or not eq:
            out.append(line)
        elif key in ("plugin-dir", "plugins-dir"):
            continue
        elif key in ("plugin", "plugins", "need-plugin", "need-plugins"):
            plugins = [p.strip() for p in value.split(",") if p.strip()]
            kept = [p for p in plugins if not _compiled_in(p)]
            if kept:
                out.append("%s = %s\n" % (key, ",".join(kept)))
        else:
            out.append(line)
    return "".join(out)


def read_jsonl(path):
    """The JSON lines of PATH that are complete, [] while it does not exist.
    Another process may be appending as we read: a line with no newline yet
    is half written and is read next time."""
    try:
        with open(path) as f:
            return [json.loads(line) for line in f if line.endswith("\n") and line.strip()]
    except FileNotFoundError:
        return []


def _ephemeral_ports():
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = map(int, f.read().split())
        return low, high
    except (OSError, ValueError):
        return 32768, 60999


_ports_given = set()


def free_port():
    """A loopback TCP port that nothing listens on, for a server the test
    starts next.  Drawn below the kernel's ephemeral range: a port that
    bind(0) hands out is one that any outgoing connection (a database
    client, a load generator) may take as its own local port before the
    server binds it.  Never the same port twice in one test process: two
    servers of one test would otherwise race for it."""
    low, _ = _ephemeral_ports()
    candidates = range(max(1024, low - 12000), low) if low > 2048 else range(1024, low)
    for _ in range(200):
        port = random.choice(candidates)
        if port in _ports_given:
            continue
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        _ports_given.add(port)
        return port
    raise AssertionError("no free loopback port below %d after 200 tries" % low)


# Bounds on waits for a state: generous, because a busy machine starts a
# server slowly, and a wait that is met returns at once.
def wait_for(predicate, timeout=60.0, interval=0.05, what="condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError("timed out after %.1fs waiting for %s" % (timeout, what))


def read_socket(address, parse=True, timeout=10):
    """One JSON document per connection, like uWSGI's stats server (a unix
    path or HOST:PORT); the raw bytes when not PARSE."""
    if address.startswith("/"):
        s = socket.socket(socket.AF_UNIX)
        target = address
    else:
        host, port = address.rsplit(":", 1)
        s = socket.socket(socket.AF_INET)
        target = (host, int(port))
    chunks = []
    with s:
        s.settimeout(timeout)
        s.connect(target)
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    data = b"".join(chunks)
    return json.loads(data) if parse else data


def children(pid):
    """PID's children, from /proc/PID/task/*/children (each thread lists
    the children it forked)."""
    out = []
    try:
        tasks = os.listdir("/proc/%d/task" % pid)
    except FileNotFoundError:
        return out
    for tid in tasks:
        try:
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                out.extend(int(p) for p in f.read().split())
        except FileNotFoundError:
            pass
    return out


def session_processes(sid, zombies=True):
    """Every process in session SID (a server started with
    start_new_session: the master, its workers, exec: handler shells and
    their children); without ZOMBIES, only those not yet dead."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError):
            continue
        # after the command: state, ppid, pgrp, session
        if int(fields[3]) == sid and (zombies or fields[0] != "Z"):
            found.append(int(entry))
    return found


def kill_group(proc):
    """SIGKILLs the process group PROC leads (started with
    start_new_session) and reaps PROC."""
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass


def running(pid):
    """True while PID runs: not exited, or exited and not a zombie yet."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_exited(pid, timeout=10.0):
    """Until PID has exited (its atexit handlers -- worker-exit -- have all
    run): a pidfd becomes readable then, zombie or not."""
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return True
    try:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return bool(poller.poll(timeout * 1000))
    finally:
        os.close(fd)


class ServerProcess:
    """A server started in a session of its own (start_new_session=True),
    with `proc` (its Popen) and `log` (its output file): stopped by the pid
    we started, and on cleanup its whole process group killed and reaped."""

    name = "server"
    stop_signal = signal.SIGTERM
    proc = None
    log = None

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except (FileNotFoundError, TypeError):
            return ""

    def stop(self, signum=None, timeout=30):
        """Signals the server (its own graceful stop by default), reaps it,
        and returns its exit status."""
        if self.proc is None or self.proc.poll() is not None:
            return self.proc.returncode if self.proc else None
        os.kill(self.proc.pid, signum or self.stop_signal)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError("%s did not stop within %ss:\n%s"
                                 % (self.name, timeout, self.log_text()[-6000:])) from None

    def kill(self):
        """Last resort, always run as a cleanup: SIGKILL the process group
        (children left behind by a dead master die with it), reap."""
        if self.proc is not None:
            kill_group(self.proc)


class Uwsgi(ServerProcess):
    """One uWSGI instance in its own temp dir."""

    name = "uWSGI"
    stop_signal = signal.SIGINT  # SIGTERM would be a reload without die-on-term

    def __init__(self, testcase, ini_body, settings=None, extra_sections="", name="uwsgi.ini"):
        self.testcase = testcase
        self.dir = tempfile.mkdtemp(prefix="forksafe-it-")
        testcase.addCleanup(self._remove_dir)
        self.port = free_port()
        self.record = os.path.join(self.dir, "events.jsonl")
        self.log = os.path.join(self.dir, "uwsgi.log")
        self.pidfile = os.path.join(self.dir, "uwsgi.pid")
        self.ini = os.path.join(self.dir, name)
        self.proc = None
        substitutions = {
            "dir": self.dir,
            "port": self.port,
            "record": self.record,
            "recorder": RECORDER,
            "failing": FAILING,
            "plugin_dir": PLUGIN_DIR,
            "app_dir": APP_DIR,
            "pidfile": self.pidfile,
        }
        body = textwrap.dedent(ini_body).format(**substitutions)
        text = body
        if settings is not None:
            lines = ["[app:main]", "forksafe.event_log = %s" % self.record]
            lines += ["%s = %s" % kv for kv in settings.items()]
            text += "\n" + "\n".join(lines) + "\n"
        text += textwrap.dedent(extra_sections).format(**substitutions)
        if EMBEDDED:
            text = without_plugin_loading(text)
        with open(self.ini, "w") as f:
            f.write(text)

    def _remove_dir(self):
        subprocess.run(["rm", "-rf", self.dir], check=False)

    def start(self, wait_ready=None, args=(), env=None):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [UWSGI, "--ini", self.ini, *args],
            env=env,
            stdout=logf,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=self.dir,
            start_new_session=True,
        )
        logf.close()
        self.testcase.addCleanup(self.kill)
        if wait_ready:
            try:
                wait_for(lambda: len(self.events("worker-ready")) >= wait_ready or self._died(),
                         what="%d worker-ready events" % wait_ready)
            except AssertionError as timeout:
                raise AssertionError("%s; uWSGI's log ends:\n%s"
                                     % (timeout, self.log_text()[-6000:])) from None
            if self._died():
                raise AssertionError("uWSGI exited early:\n" + self.log_text())
        return self

    def run_to_exit(self, timeout=30, args=()):
        """Runs uWSGI expecting it to exit by itself (config errors, check)."""
        logf = open(self.log, "ab")
        try:
            proc = subprocess.Popen([UWSGI, "--ini", self.ini, *args], stdout=logf,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    cwd=self.dir, start_new_session=True)
            self.proc = proc
            self.testcase.addCleanup(self.kill)
            try:
                return proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                raise AssertionError("uWSGI did not exit:\n" + self.log_text())
        finally:
            logf.close()

    def _died(self):
        return self.proc is not None and self.proc.poll() is not None

    @property
    def master_pid(self):
        return self.proc.pid

    def send_signal(self, signum):
        os.kill(self.proc.pid, signum)

    def get(self, path="/", timeout=10):
        with urllib.request.urlopen("http://127.0.0.1:%d%s" % (self.port, path),
                                    timeout=timeout) as r:
            return r.read().decode()

    def events(self, name=None):
        lines = read_jsonl(self.record)
        if name:
            lines = [e for e in lines if e["event"] == name]
        return lines

    def by_process(self):
        """{(kind, id, pid): [event names in order]}"""
        out = {}
        for e in self.events():
            p = e["process"]
            out.setdefault((p["kind"], p["id"], p["pid"]), []).append(e["event"])
        return out


def workers_accepting(stats_address, count):
    """True once uWSGI's stats server (`stats = ADDRESS`) shows COUNT workers
    that uWSGI itself has finished starting: the master has stored each pid,
    and each worker has set `accepting`, which uWSGI does after installing
    its own signal handlers.  Only then does a stop reach every worker of a
    plain uWSGI (without forksafe, which closes those gaps itself)."""
    try:
        workers = read_socket(stats_address)["workers"]
    except (OSError, ValueError):
        return False
    return len([w for w in workers if w["pid"] > 0 and w["accepting"]]) >= count


def core_threads_settled(pids):
    """True once every thread of each of PIDS but its main one has SIGINT
    blocked.  uWSGI creates a worker's extra core threads (`threads = N`)
    with the worker's signal mask and blocks every signal only once each
    thread runs; a stop that lands on a thread before that runs uWSGI's
    end_me there, and Python's finalization, called from a thread that is
    not the main one, waits for the main thread for ever (uWSGI 2.0.21,
    with or without forksafe)."""
    sigint = 1 << (signal.SIGINT - 1)
    for pid in pids:
        try:
            tids = [int(t) for t in os.listdir("/proc/%d/task" % pid)]
        except FileNotFoundError:
            return False
        for tid in tids:
            if tid == pid:
                continue
            try:
                with open("/proc/%d/task/%d/status" % (pid, tid)) as f:
                    blocked = [line for line in f if line.startswith("SigBlk:")]
            except FileNotFoundError:
                continue  # a thread that ended
            if not blocked or not int(blocked[0].split()[1], 16) & sigint:
                return False
    return True


class IntegrationCase(unittest.TestCase):
    maxDiff = None

    def assertLogHas(self, instance, text):
        log = instance.log_text()
        self.assertIn(text, log, "log does not contain %r:\n%s" % (text, log[-4000:]))
