#!/usr/bin/python3
"""Proof of zero settings parsing per fork, against a real uWSGI.

Runs uWSGI with forksafe, 2 workers and max-requests = 1 under
`strace -f -ff -e trace=openat`, makes requests so that the workers are
respawned several times, then counts, per process, the openat() calls on the
settings file.  The master must open it once at start-up and no worker ever:
every worker gets the settings (its post-fork handler reads one) from the
memory it inherited.  Exits 1 if that does not hold.
"""

import glob
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UWSGI = os.environ.get("UWSGI", "uwsgi")
RESPAWNS = 6

APP = """
def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
"""

UWSGI_INI = """[uwsgi]
plugin-dir = {root}
plugins = python3,forksafe
master = true
processes = 2
max-requests = 1
; recycled at once, not after the default 60 s minimum lifetime
min-worker-lifetime = 0
forkbomb-delay = 0
skip-atexit-teardown = true
http-socket = 127.0.0.1:{port}
pidfile = {tmp}/uwsgi.pid
wsgi-file = {tmp}/app.py
forksafe-settings = {tmp}/settings.ini
forksafe-subscribe = post-fork dl:{root}/build/examples/event_log.so:record
"""

SETTINGS_INI = """[app:main]
use = egg:bench
forksafe.event_log = {tmp}/events.log
"""


def free_port():
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise RuntimeError("timed out waiting for " + what)


def lines(path):
    try:
        with open(path) as f:
            return f.read().splitlines()
    except FileNotFoundError:
        return []


def main():
    tmp = tempfile.mkdtemp(prefix="forksafe-noparse-")
    port = free_port()
    values = {"root": ROOT, "tmp": tmp, "port": port}
    for name, text in (("app.py", APP), ("uwsgi.ini", UWSGI_INI),
                       ("settings.ini", SETTINGS_INI)):
        with open(os.path.join(tmp, name), "w") as f:
            f.write(text.format(**values))
    settings = os.path.join(tmp, "settings.ini")
    events = os.path.join(tmp, "events.log")
    pidfile = os.path.join(tmp, "uwsgi.pid")
    log = open(os.path.join(tmp, "uwsgi.log"), "w")
    tracer = subprocess.Popen(
        ["strace", "-f", "-ff", "-e", "trace=openat", "-o", os.path.join(tmp, "trace"),
         UWSGI, "--ini", os.path.join(tmp, "uwsgi.ini")],
        stdout=log, stderr=subprocess.STDOUT)
    uwsgi_pid = None
    try:
        wait_for(lambda: len(lines(events)) >= 2, 30, "2 workers' post-fork")
        with open(pidfile) as f:
            uwsgi_pid = int(f.read().strip())
        for i in range(RESPAWNS):
            with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=10) as r:
                r.read()
            wait_for(lambda: len(lines(events)) >= 3 + i, 30, "respawn %d" % (i + 1))
    finally:
        if uwsgi_pid:
            os.kill(uwsgi_pid, signal.SIGINT)
        else:
            tracer.send_signal(signal.SIGINT)
        try:
            tracer.wait(timeout=30)
        except subprocess.TimeoutExpired:
            tracer.kill()
            tracer.wait()
        log.close()

    opens = {}
    for path in glob.glob(os.path.join(tmp, "trace.*")):
        pid = int(path.rsplit(".", 1)[1])
        with open(path) as f:
            opens[pid] = sum(1 for line in f if line.startswith("openat(") and
                             '"%s"' % settings in line)
    workers = [pid for pid in opens if pid != uwsgi_pid]
    post_forks = len(lines(events))
    print("settings file opens per process under strace "
          "(2 workers, max-requests = 1, %d requests)" % RESPAWNS)
    print("%-34s %10s %10s" % ("process", "processes", "opens"))
    print("%-34s %10d %10d" % ("master (pid %d)" % uwsgi_pid, 1, opens.get(uwsgi_pid, 0)))
    print("%-34s %10d %10d" % ("every other process (workers)", len(workers),
                               sum(opens[pid] for pid in workers)))
    print("post-fork handler runs (each read a setting): %d" % post_forks)
    ok = opens.get(uwsgi_pid, 0) >= 1 and sum(opens[pid] for pid in workers) == 0 \
        and post_forks >= 2 + RESPAWNS
    print("zero parsing per fork: %s" % ("yes" if ok else "NO"))
    if ok:
        subprocess.run(["rm", "-rf", tmp])
    else:
        print("traces kept in %s" % tmp)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
