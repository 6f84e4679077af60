"""A bounded concurrent HTTP load client for the integration tests.

    result = run_load(port, "/db", total=2000, concurrency=8, time_limit=60)
    result.errors, result.pairs, result.summary()

`concurrency` threads share one budget of `total` requests; each uses
http.client with `Connection: close` (or one keep-alive connection per
thread, reopened after any error).  Bounded three ways: at most `total`
requests are started, none is started after `time_limit` seconds, and each
one times out after `request_timeout` seconds, so run_load returns within
about time_limit + request_timeout whatever the server does (threads are
daemons, and any still stuck past that are reported, never waited for).

Each successful answer must be JSON with a "pid" key (the worker) and
optionally "backend_pid"; the set of (pid, backend_pid) pairs is collected.
Anything else -- exception, timeout, non-200 status, bad JSON -- is an
error, counted by kind with a few samples kept.
"""

import collections
import http.client
import json
import threading
import time


class LoadResult:
    def __init__(self):
        self.started = 0          # requests sent (or attempted)
        self.ok = 0
        self.errors = 0
        self.error_kinds = collections.Counter()
        self.error_samples = []   # a few "kind: detail" strings
        self.pairs = set()        # {(worker pid, backend pid)}
        self.per_pid = collections.Counter()  # successful answers per worker pid
        self.statuses = collections.Counter()
        self.elapsed = 0.0
        self.hit_time_limit = False
        self.stuck_threads = 0
        self.bodies = []          # the first few decoded answers, for diagnosis
        self.first_by_pid = {}    # worker pid -> its first decoded answer

    @property
    def worker_pids(self):
        return {pid for pid, _ in self.pairs}

    @property
    def backend_pids(self):
        return {backend for _, backend in self.pairs}

    def backends_by_worker(self):
        out = collections.defaultdict(set)
        for pid, backend in self.pairs:
            out[pid].add(backend)
        return dict(out)

    def workers_by_backend(self):
        out = collections.defaultdict(set)
        for pid, backend in self.pairs:
            out[backend].add(pid)
        return dict(out)

    def summary(self):
        return ("%d requests in %.1fs (%.0f/s): %d ok, %d errors %s; %d workers, "
                "%d distinct backend pids; pairs %s%s%s"
                % (self.started, self.elapsed, self.started / self.elapsed if self.elapsed else 0,
                   self.ok, self.errors, dict(self.error_kinds), len(self.worker_pids),
                   len(self.backend_pids), sorted(self.pairs, key=str),
                   "; HIT THE TIME LIMIT" if self.hit_time_limit else "",
                   "; %d threads still stuck" % self.stuck_threads if self.stuck_threads else ""))


def run_load(port, path="/", total=2000, concurrency=8, time_limit=60.0, request_timeout=10.0,
             keepalive=False, host="127.0.0.1", keep_bodies=5):
    result = LoadResult()
    lock = threading.Lock()
    budget = [total]
    start = time.monotonic()
    deadline = start + time_limit

    def take_ticket():
        with lock:
            if budget[0] <= 0:
                return False
            if time.monotonic() >= deadline:
                result.hit_time_limit = True
                return False
            budget[0] -= 1
            result.started += 1
            return True

    def error(kind, detail):
        with lock:
            result.errors += 1
            result.error_kinds[kind] += 1
            if len(result.error_samples) < 10:
                result.error_samples.append("%s: %s" % (kind, detail[:300]))

    def one(conn):
        headers = {} if keepalive else {"Connection": "close"}
        conn.request("GET", path, headers=headers)
        response = conn.getresponse()
        body = response.read()
        return response.status, body

    def worker():
        conn = None
        while take_ticket():
            timeout = max(0.1, min(request_timeout, deadline + request_timeout - time.monotonic()))
            if conn is None:
                conn = http.client.HTTPConnection(host, port, timeout=timeout)
            else:
                conn.timeout = timeout
                if conn.sock is not None:
                    conn.sock.settimeout(timeout)
            try:
                status, body = one(conn)
            except Exception as e:  # noqa: BLE001 - every failure is a counted error
                error(type(e).__name__, str(e))
                conn.close()
                conn = None
                continue
            finally:
                if not keepalive and conn is not None:
                    conn.close()
                    conn = None
            with lock:
                result.statuses[status] += 1
            if status != 200:
                error("HTTP %d" % status, body.decode(errors="replace"))
                if conn is not None:
                    conn.close()
                    conn = None
                continue
            try:
                answer = json.loads(body)
                pair = (answer["pid"], answer.get("backend_pid"))
            except (ValueError, KeyError, TypeError) as e:
                error("bad answer", "%s: %r" % (e, body[:200]))
                continue
            with lock:
                result.ok += 1
                result.pairs.add(pair)
                result.per_pid[pair[0]] += 1
                if len(result.bodies) < keep_bodies:
                    result.bodies.append(answer)
                result.first_by_pid.setdefault(pair[0], answer)
        if conn is not None:
            conn.close()

    threads = [threading.Thread(target=worker, name="load-%d" % i, daemon=True)
               for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(max(0.0, deadline + request_timeout + 5 - time.monotonic()))
    result.stuck_threads = sum(1 for t in threads if t.is_alive())
    result.elapsed = time.monotonic() - start
    return result
