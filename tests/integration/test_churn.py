"""Churn: over a thousand worker respawns of a real uWSGI with forksafe
subscribed by a native, an exec: and a python: handler, in the master and
in the workers.  The master's descriptors must stay exactly flat and its
memory nearly flat, no process may stay a zombie, no request may fail, and
forksafe's counters must agree with uWSGI's own respawn count.

Speed: every worker serves one request (max-requests = 1) and exits.
uWSGI's master reaps dead workers only when its event loop wakes up -- on
an event or after `check-interval` (at least a second) -- so unaided it
manages about two respawns a second here.  The client therefore waits, after
each answer, until the worker that sent it has exited (it is a zombie, or
gone), and then reads uWSGI's own stats server, which is an event in the
master's loop: the master wakes, reaps the worker and forks its successor
at once, as it would under any steady traffic to its stats socket.  That
read also gives uWSGI's respawn counts, which the test compares with
forksafe's.
"""

import http.client
import json
import os
import threading
import time

from harness import (IntegrationCase, Uwsgi, children, free_port, read_socket, wait_exited,
                     wait_for)

WORKERS = 2
WARMUP = 100           # respawns before the baseline sample
RESPAWNS = 900         # respawns after it: 1,000 in all
SAMPLE_EVERY = 150     # respawns between samples
# About 45 s on an idle 2-core machine (some 80 ms of CPU per respawn, 55 of
# them with no handler subscribed: uWSGI forking a Python master and the new
# worker's copy-on-write faults), 80-115 s on a busy one.  Only a safety net
# (the counts below are what is asserted), so far above either.
TIME_LIMIT = 600.0     # seconds for the whole churn, whatever happens
REQUEST_TIMEOUT = 60   # per request; a safety net too, every failure counts
# A zombie of the master's that is still there after this many reads of
# uWSGI's stats server, each begun after it was seen, is one the master did
# not reap (see ZombieWatch).
UNREAPED_AFTER_POKES = 2
# Any zombie below the master (a worker's exec: child too) living this long
# is left around: a safety net, far above the master's 1 s check interval
# plus a busy machine's scheduling delays.
ZOMBIE_AGE_BOUND = 30.0
# The master's RssAnon (heap and other private pages) may grow by at most this
# much between the baseline and the end.  Measured here: 0 to 16 KiB, all of
# it in the first few hundred respawns (CPython's and glibc's allocators
# settling, counted in whole 4 KiB pages), flat after.
# A leak of 80 bytes per respawn in the master (900 respawns, each with
# pre-fork and post-fork-parent dispatched to three handlers, an exec: child
# spawned and reaped, the payload built twice) would exceed it.
RSS_BOUND_KIB = 64
# VmRSS also counts file pages (library code and data first touched late in
# the run), which are not a leak: it grew 4 to 36 KiB here.
VMRSS_BOUND_KIB = 2 * RSS_BOUND_KIB

BODY = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = %d
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
max-requests = 1
min-worker-lifetime = 0
forkbomb-delay = 0
disable-logging = true
; a worker exits in ~10 ms instead of ~100 ms of Py_Finalize()
skip-atexit-teardown = true
stats = 127.0.0.1:STATS_PORT
forksafe-stats = {dir}/forksafe-stats.sock
forksafe-on-error = log
forksafe-settings = %%p
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = pre-fork,worker-exit exec:echo "$FORKSAFE_EVENT $FORKSAFE_PID" >> {dir}/exec.log
forksafe-subscribe = post-fork-parent,post-fork python:handlers:record
""" % WORKERS


def proc_stat(pid):
    """(state, ppid) of PID, or None when it is gone."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            text = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = text[text.rindex(")") + 2:].split()
    return fields[0], int(fields[1])


def descendants(root):
    """{pid: state} of every process below ROOT."""
    out, todo = {}, [root]
    while todo:
        for pid in children(todo.pop()):
            st = proc_stat(pid)
            if st:
                out[pid] = st[0]
                todo.append(pid)
    return out


def zombies(root):
    return sorted(pid for pid, state in descendants(root).items() if state == "Z")


def fd_count(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def memory_kib(pid):
    """(VmRSS, RssAnon) in KiB: RssAnon is the heap and other private
    memory a leak would grow; VmRSS also counts shared file pages."""
    values = {}
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "RssAnon"):
                values[key] = int(rest.split()[0])
    return values["VmRSS"], values["RssAnon"]


class ZombieWatch(threading.Thread):
    """Samples the master's descendants every 50 ms while the churn runs and
    remembers, per zombie, how long it stayed one.  A worker is a zombie from
    its exit until the master reaps it (the client pokes the master right
    after).

    Whether the master reaps is judged by its wake-ups, not by the clock (a
    busy machine may run the master late): uWSGI's master loop calls
    waitpid(-1, WNOHANG) until it returns 0 -- every dead child reaped --
    before it waits for an event again, and it serves one stats connection
    per event.  So of two stats reads that both began after a zombie of the
    master's was seen, the later one is served only after a waitpid pass
    that found that child dead: a zombie still seen after two such reads
    have completed is one the master failed to reap (`unreaped`).  POKES is
    the list of (begun, completed) monotonic times of every stats read."""

    def __init__(self, root, pokes):
        super().__init__(daemon=True)
        self.root = root
        self.pokes = pokes
        self.stop_flag = threading.Event()
        self.first_seen = {}   # pid: (time, index into pokes) when first seen
        self.longest = 0.0
        self.samples = 0
        self.unreaped = []     # (pid, seconds, stats reads) of zombies the master left

    def reads_since(self, seen, index, before):
        return sum(1 for begun, completed in self.pokes[index:]
                   if begun > seen and completed < before)

    def run(self):
        reported = set()
        while not self.stop_flag.wait(0.05):
            before = time.monotonic()
            index = len(self.pokes)
            current = zombies(self.root)
            masters = {pid for pid in current
                       if (proc_stat(pid) or ("", 0))[1] == self.root}
            now = time.monotonic()
            self.samples += 1
            for pid in current:
                # seen at the latest when the scan ended; only reads begun
                # after that count
                self.first_seen.setdefault(pid, (now, index))
            for pid in list(self.first_seen):
                seen, seen_index = self.first_seen[pid]
                if pid not in current:
                    del self.first_seen[pid]
                    continue
                age = now - seen
                self.longest = max(self.longest, age)
                # present at this scan, which began at BEFORE
                reads = self.reads_since(seen, seen_index, before)
                if pid in masters and reads >= UNREAPED_AFTER_POKES and pid not in reported:
                    reported.add(pid)
                    self.unreaped.append((pid, round(age, 3), reads))


class ChurnTest(IntegrationCase):

    def poke_master(self):
        """Reads uWSGI's stats server: wakes the master's loop.  Each read's
        (begun, completed) times go to self.pokes, for ZombieWatch."""
        begun = time.monotonic()
        # a busy machine may serve the stats late: a longer bound
        doc = read_socket("127.0.0.1:%d" % self.stats_port, timeout=60)
        self.pokes.append((begun, time.monotonic()))
        return doc

    def respawns(self):
        workers = self.poke_master()["workers"]
        # respawn_count counts every fork of a slot, the first one too.
        return sum(w["respawn_count"] for w in workers) - len(workers)

    def churn(self, u, requests, deadline, result):
        """Sends REQUESTS requests from WORKERS client threads, one request
        per connection, each followed by waiting for the answering worker to
        exit and poking the master.  Bounded by the deadline and by a
        REQUEST_TIMEOUT per request."""
        lock = threading.Lock()
        budget = [requests]

        def client():
            while True:
                with lock:
                    if budget[0] <= 0 or time.monotonic() > deadline:
                        return
                    budget[0] -= 1
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", u.port,
                                                      timeout=REQUEST_TIMEOUT)
                    conn.request("GET", "/", headers={"Connection": "close"})
                    response = conn.getresponse()
                    body = response.read()
                    conn.close()
                    if response.status != 200:
                        raise RuntimeError("HTTP %d: %r" % (response.status, body[:200]))
                    pid = int(body)
                except Exception as e:  # noqa: BLE001 - every failure is counted
                    with lock:
                        result["failed"] += 1
                        result["errors"].append(repr(e))
                    continue
                with lock:
                    result["ok"] += 1
                if not wait_exited(pid, timeout=REQUEST_TIMEOUT):
                    with lock:
                        result["errors"].append("worker %d did not exit after its request" % pid)
                self.poke_master()

        threads = [threading.Thread(target=client, daemon=True) for _ in range(WORKERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(max(0.0, deadline + 15 - time.monotonic()))
        self.assertFalse(any(t.is_alive() for t in threads), "client threads stuck")

    def settle(self, u, expected_respawns):
        """Waits until uWSGI counts EXPECTED_RESPAWNS and every worker slot
        is alive and ready, with no request in flight."""
        def settled():
            if self.respawns() < expected_respawns:
                return False
            events = read_socket(u.forksafe_stats)["events"]
            return events["worker-ready"]["fired"] >= WORKERS + expected_respawns

        wait_for(settled, what="%d respawns settled" % expected_respawns)

    def sample(self, u, respawns, label):
        self.settle(u, respawns)
        # A quiet moment: nothing in flight, so no zombie may exist at all.
        def no_zombies():
            if zombies(u.master_pid):
                self.poke_master()
                return False
            return True

        wait_for(no_zombies, what="no zombies at %s" % label)
        vmrss, anon = memory_kib(u.master_pid)
        row = {"label": label, "respawns": respawns, "fds": fd_count(u.master_pid),
               "vmrss_kib": vmrss, "anon_kib": anon, "zombies": zombies(u.master_pid),
               "time": time.monotonic()}
        self.rows.append(row)
        return row

    def test_a_thousand_respawns_leave_the_master_flat(self):
        self.stats_port = free_port()
        u = Uwsgi(self, BODY.replace("STATS_PORT", str(self.stats_port)),
                  settings={"python_log": "%(here)s/python.jsonl"})
        u.forksafe_stats = os.path.join(u.dir, "forksafe-stats.sock")
        u.start(wait_ready=WORKERS)
        self.rows = []
        self.pokes = []
        result = {"ok": 0, "failed": 0, "errors": []}
        started = time.monotonic()
        deadline = started + TIME_LIMIT
        watch = ZombieWatch(u.master_pid, self.pokes)
        watch.start()
        try:
            self.churn(u, WARMUP, deadline, result)
            done = WARMUP
            self.sample(u, done, "baseline")
            while done < WARMUP + RESPAWNS:
                step = min(SAMPLE_EVERY, WARMUP + RESPAWNS - done)
                self.churn(u, step, deadline, result)
                done += step
                self.sample(u, done, "after %d" % done)
        finally:
            watch.stop_flag.set()
            watch.join(5)
        duration = time.monotonic() - started
        uwsgi_respawns = self.respawns()
        forks = WORKERS + uwsgi_respawns
        # post-fork-parent comes from the master's next scan after a fork
        wait_for(lambda: read_socket(u.forksafe_stats)["events"]["post-fork-parent"]["fired"]
                 >= forks or self.poke_master() is None, what="post-fork-parent")
        stats = read_socket(u.forksafe_stats)
        master_pid = u.master_pid
        # Stopped once every worker is ready (sample() waited for it), so
        # the counters above are final; a stop in the middle of the churn is
        # test_stop_churn's.
        status = u.stop(timeout=60)

        base, last = self.rows[0], self.rows[-1]
        print("\nchurn: %d respawns (uWSGI's count %d) in %.1fs, %d requests ok, %d failed; "
              "master fds %d -> %d; VmRSS %d -> %d KiB, RssAnon %d -> %d KiB "
              "(baseline after %d respawns); %d zombie samples, longest-lived zombie %.3fs; "
              "%d stats reads"
              % (done, uwsgi_respawns, duration, result["ok"], result["failed"],
                 base["fds"], last["fds"], base["vmrss_kib"], last["vmrss_kib"],
                 base["anon_kib"], last["anon_kib"], base["respawns"], watch.samples,
                 watch.longest, len(self.pokes)))
        for row in self.rows:
            print("  %-12s respawns %5d  fds %3d  VmRSS %6d KiB  RssAnon %6d KiB  t=%.1fs"
                  % (row["label"], row["respawns"], row["fds"], row["vmrss_kib"],
                     row["anon_kib"], row["time"] - started))

        self.assertEqual(status, 0, u.log_text()[-3000:])
        self.assertEqual(result["failed"], 0, result["errors"][:10])
        self.assertEqual(result["errors"], [])
        self.assertEqual(result["ok"], WARMUP + RESPAWNS)
        self.assertEqual(uwsgi_respawns, WARMUP + RESPAWNS)
        self.assertEqual(u.log_text().count("Respawned uWSGI worker"), WARMUP + RESPAWNS)

        # descriptors: exactly flat, at every sample
        self.assertEqual({row["fds"] for row in self.rows}, {base["fds"]}, self.rows)
        # memory: flat within the bound, baseline to end
        self.assertLessEqual(last["anon_kib"] - base["anon_kib"], RSS_BOUND_KIB, self.rows)
        self.assertLessEqual(last["vmrss_kib"] - base["vmrss_kib"], VMRSS_BOUND_KIB, self.rows)
        # zombies: none at any quiet sample; none of the master's outliving
        # its next wake-up (counted in stats reads, not seconds: a busy
        # machine runs the master late, but every wake reaps); and, as a
        # safety net, none at all left around for ZOMBIE_AGE_BOUND
        self.assertEqual([row["zombies"] for row in self.rows], [[]] * len(self.rows))
        self.assertEqual(watch.unreaped, [], "zombies the master did not reap at its wake-up "
                                             "(pid, seconds, stats reads since seen)")
        self.assertLess(watch.longest, ZOMBIE_AGE_BOUND)
        self.assertEqual(zombies(master_pid) if proc_stat(master_pid) else [], [])

        # forksafe's counters agree with uWSGI's respawns
        events = stats["events"]
        expected = {
            # event: (fired, handler runs): dl everywhere, exec and python where subscribed
            "master-start": (1, 1),
            "pre-fork": (forks, 2 * forks),
            "post-fork": (forks, 2 * forks),
            "post-fork-parent": (forks, 2 * forks),
            "worker-ready": (forks, forks),
            "worker-exit": (uwsgi_respawns, 2 * uwsgi_respawns),
        }
        for name, (fired, handlers) in expected.items():
            self.assertEqual((events[name]["fired"], events[name]["handlers"], events[name]["failed"]),
                             (fired, handlers, 0), "%s: %s" % (name, events[name]))
        self.assertEqual(events.get("child-death", {}).get("fired", 0), 0)
        self.assertEqual(sum(e["failed"] for e in events.values()), 0, events)

        # and every handler really ran: the recorder, the exec log, the python log
        recorded = u.events()
        self.assertEqual(sum(1 for e in recorded if e["event"] == "worker-exit"
                             and e["reason"] == "max-requests"), uwsgi_respawns)
        with open(os.path.join(u.dir, "exec.log")) as f:
            exec_lines = f.read().split("\n")[:-1]
        with open(os.path.join(u.dir, "python.jsonl")) as f:
            python_events = [json.loads(line)["event"] for line in f]
        # after the stop: the shutdown's worker-exits are in the files too
        self.assertEqual(sum(1 for line in exec_lines if line.startswith("pre-fork ")), forks)
        self.assertEqual(sum(1 for line in exec_lines if line.startswith("worker-exit ")),
                         uwsgi_respawns + WORKERS)
        self.assertEqual(python_events.count("post-fork"), forks)
        self.assertEqual(python_events.count("post-fork-parent"), forks)
