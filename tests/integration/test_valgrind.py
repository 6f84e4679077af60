"""A whole uWSGI life with forksafe, uWSGI itself under valgrind's memcheck:
master start, workers forked, every event dispatched to a native (dl:) and
an exec: handler, requests, a worker recycled after max-requests, a worker
SIGKILLed (child-death), the forksafe-stats socket read, a graceful reload
(the master re-executes itself), shutdown.  Every uWSGI process -- the
master before and after the reload, each worker -- is checked
(--trace-children=yes); the exec: handlers' /bin/sh is not (not ours).

No python plugin: uWSGI answers with an internal route, which keeps the run
fast and free of the interpreter's own reports.  What uWSGI itself leaks at
start-up is suppressed in tests/valgrind/uwsgi.supp, each entry saying why it
is not forksafe's; everything else -- any invalid read or write, use of
uninitialised memory, bad free, and any definite leak -- fails the test.
"""

import collections
import glob
import http.client
import os
import re
import shutil
import signal
import subprocess

from harness import ROOT, UWSGI, IntegrationCase, Uwsgi, wait_for
from harness import read_socket

SUPPRESSIONS = os.path.join(ROOT, "tests", "valgrind", "uwsgi.supp")
# seconds for each step: everything runs some 20x slower, and more on a
# busy machine; only a safety net, every wait returns once its state is met
TIMEOUT = 300

BODY = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = forksafe
master = true
processes = 2
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
route-run = return:200
max-requests = 2
; a worker waits this long for the rest of a request: the test holds one
; half sent while it finds which worker accepted it
socket-timeout = 600
min-worker-lifetime = 0
forkbomb-delay = 0
; written out: uWSGI's magic variables (the percent sign ones) read past a
; buffer in magic_sub(), a uWSGI bug valgrind reports with or without forksafe
forksafe-settings = {dir}/uwsgi.ini
forksafe-stats = {dir}/forksafe-stats.sock
forksafe-on-error = log
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = master-start,pre-fork,post-fork,worker-exit,child-death,master-exit exec:echo "$FORKSAFE_EVENT $FORKSAFE_PID" >> {dir}/exec.log
"""

SETTINGS = {"sqlalchemy.url": "postgresql://app:s3cret@127.0.0.1/app"}

ERROR_BLOCK = re.compile(r"<error>.*?</error>", re.S)


class ValgrindUwsgi(Uwsgi):
    """The harness's uWSGI, started as `valgrind ... uwsgi --ini ...`: the
    valgrind process is the master, so its pid is the one we signal."""

    def start(self, wait_ready=None, args=(), env=None):
        self.xml_pattern = os.path.join(self.dir, "vg.%p.%n.xml")
        command = ["valgrind", "--tool=memcheck", "--trace-children=yes",
                   "--trace-children-skip=*/sh", "--xml=yes", "--xml-file=" + self.xml_pattern,
                   "--leak-check=full", "--show-leak-kinds=definite",
                   "--errors-for-leak-kinds=definite", "--track-origins=yes",
                   "--suppressions=" + SUPPRESSIONS, "--child-silent-after-fork=no",
                   shutil.which(UWSGI), "--ini", self.ini, *args]
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(command, env=env, stdout=logf, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, cwd=self.dir,
                                     start_new_session=True)
        logf.close()
        self.testcase.addCleanup(self.kill)
        if wait_ready:
            self.wait_events("worker-ready", wait_ready)
        return self

    def wait_events(self, name, count, pid=None):
        """Until COUNT NAME events (of process PID only, if given)."""
        def enough():
            return len([e for e in self.events(name)
                        if pid is None or e["process"]["pid"] == pid]) >= count
        wait_for(lambda: enough() or self._died(), timeout=TIMEOUT,
                 what="%d %s events%s" % (count, name, " of pid %d" % pid if pid else ""))
        if self._died():
            raise AssertionError("uWSGI exited early:\n" + self.log_text()[-4000:])

    def request_served_by(self):
        """GET / on a connection of its own; returns the pid of the worker
        that answered.  uWSGI defers the accept until data arrives, so the
        request line goes first; the worker that accepted the connection
        (its owner in /proc) is found before the request is completed."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=TIMEOUT)
        try:
            conn.connect()
            client_port = conn.sock.getsockname()[1]
            conn.sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            pid = wait_for(lambda: accepted_by(self.port, client_port,
                                               [e["process"]["pid"]
                                                for e in self.events("worker-ready")]),
                           timeout=TIMEOUT, interval=0.01, what="a worker accepting the request")
            conn.sock.sendall(b"Connection: close\r\n\r\n")
            response = http.client.HTTPResponse(conn.sock)
            response.begin()
            body = response.read().decode()
        finally:
            conn.close()
        if (response.status, body) != (200, "OK"):
            raise AssertionError("worker %d answered %d %r" % (pid, response.status, body))
        return pid

    def reports(self):
        """{file name: text} of every valgrind XML report."""
        out = {}
        for path in glob.glob(os.path.join(self.dir, "vg.*.xml")):
            with open(path, errors="replace") as f:
                out[os.path.basename(path)] = f.read()
        return out


def accepted_by(server_port, client_port, pids):
    """Which of PIDS holds the server end of the loopback connection from
    CLIENT_PORT to SERVER_PORT: None until a process accepted it (an
    unaccepted connection has no inode yet)."""
    local, remote = "0100007F:%04X" % server_port, "0100007F:%04X" % client_port
    inode = 0
    with open("/proc/net/tcp") as f:
        next(f)
        for line in f:
            fields = line.split()
            if fields[1] == local and fields[2] == remote:
                inode = int(fields[9])
                break
    if not inode:
        return None
    target = "socket:[%d]" % inode
    for pid in pids:
        try:
            fds = os.listdir("/proc/%d/fd" % pid)
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink("/proc/%d/fd/%s" % (pid, fd)) == target:
                    return pid
            except OSError:
                pass
    return None


def report_pid(text):
    m = re.search(r"<pid>(\d+)</pid>", text)
    return int(m.group(1)) if m else None


def summary(block):
    """An error's kind, what, and its first frames, one line."""
    kind = re.search(r"<kind>(.*?)</kind>", block)
    what = re.search(r"<text>(.*?)</text>", block, re.S) or re.search(r"<what>(.*?)</what>",
                                                                       block, re.S)
    frames = re.findall(r"<fn>(.*?)</fn>", block)
    return "%s: %s at %s" % (kind.group(1) if kind else "?", what.group(1) if what else "?",
                             " < ".join(frames[:8]))


class ValgrindTest(IntegrationCase):

    def setUp(self):
        if not shutil.which("valgrind"):
            self.fail("valgrind is not installed (scripts/deps.sh installs it)")

    def test_uwsgi_life_under_memcheck_has_no_errors(self):
        u = ValgrindUwsgi(self, BODY, settings=SETTINGS)
        u.start(wait_ready=2)
        master = u.master_pid

        # requests: max-requests = 2, so a worker's second request recycles
        # it.  Which worker answers is the kernel's choice (a respawned one
        # may take one), so requests go one at a time, each worker's count
        # kept, until exactly two workers were recycled (each one's
        # worker-exit recorded before the next request).
        served, recycled = collections.Counter(), []
        for _ in range(40):
            if len(recycled) == 2:
                break
            pid = u.request_served_by()
            served[pid] += 1
            if served[pid] == 2:
                u.wait_events("worker-exit", 1, pid=pid)
                recycled.append(pid)
        self.assertEqual(len(recycled), 2, served)
        u.wait_events("worker-exit", 2)
        u.wait_events("worker-ready", 4)
        # post-fork-parent comes from the master's scan after a fork
        u.wait_events("post-fork-parent", 4)

        # a worker killed: child-death in the master, then its replacement.
        # Every live worker has served at most one request: none is exiting.
        victim = [e for e in u.events("post-fork-parent")][-1]["child"]["pid"]
        os.kill(victim, signal.SIGKILL)
        u.wait_events("child-death", 1)
        u.wait_events("worker-ready", 5)
        stats = read_socket(os.path.join(u.dir, "forksafe-stats.sock"))
        self.assertEqual(stats["pid"], master)

        # graceful reload: the master re-executes itself, and valgrind with
        # it; its report file (same pid, same name) is moved aside first
        # since the new one would overwrite it
        for name, text in u.reports().items():
            if report_pid(text) == master:
                os.rename(os.path.join(u.dir, name),
                          os.path.join(u.dir, name.replace(".xml", ".before-reload.xml")))
        u.send_signal(signal.SIGHUP)
        u.wait_events("master-start", 2)
        u.wait_events("worker-ready", 7)
        self.assertEqual(u.get("/", timeout=TIMEOUT), "OK")
        self.assertEqual(u.stop(timeout=TIMEOUT), 0, u.log_text()[-4000:])

        # the events really happened, in the right processes
        events = u.events()
        names = [e["event"] for e in events]
        for name in ("master-start", "pre-fork", "post-fork", "post-fork-parent",
                     "worker-ready", "worker-exit", "child-death", "master-exit"):
            self.assertIn(name, names)
        self.assertEqual([e["reason"] for e in u.events("master-exit")], ["reload", "shutdown"])
        self.assertEqual([e["generation"] for e in u.events("master-start")], [0, 1])
        self.assertEqual({e["reason"] for e in u.events("worker-exit")},
                         {"max-requests", "reload", "shutdown"})
        death = u.events("child-death")[0]
        self.assertEqual((death["child"]["pid"], death["child"]["signal"]), (victim, 9))
        for e in events:
            self.assertEqual(e["settings"]["sqlalchemy.url"], SETTINGS["sqlalchemy.url"])
        with open(os.path.join(u.dir, "exec.log")) as f:
            exec_runs = [line.split() for line in f]
        expected_exec = [[e["event"], str(e["process"]["pid"])] for e in events
                         if e["event"] in ("master-start", "pre-fork", "post-fork", "worker-exit",
                                           "child-death", "master-exit")]
        self.assertEqual(sorted(exec_runs), sorted(expected_exec))

        # every uWSGI process was checked: a complete report for the master
        # (before and after the reload) and for every worker that exited
        reports = u.reports()
        pids_with_report = {}
        for name, text in reports.items():
            pids_with_report.setdefault(report_pid(text), []).append(name)
        exited = {e["process"]["pid"] for e in u.events("worker-exit")}
        for pid in exited | {master}:
            complete = [n for n in pids_with_report.get(pid, [])
                        if "</valgrindoutput>" in reports[n]]
            self.assertTrue(complete, "no complete valgrind report for pid %d: %s"
                            % (pid, pids_with_report.get(pid)))
        self.assertEqual(len(pids_with_report.get(master, [])), 2, pids_with_report.get(master))

        errors = []
        for name, text in sorted(reports.items()):
            for block in ERROR_BLOCK.findall(text):
                errors.append("%s: %s" % (name, summary(block)))
        print("\nvalgrind: %d reports (%d uWSGI processes: master twice, %d workers), "
              "%d events, %d exec runs, %d errors"
              % (len(reports), len(exited) + 1, len(exited), len(events), len(exec_runs),
                 len(errors)))
        self.assertEqual(errors, [])
