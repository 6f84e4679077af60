"""A WSGI app with prometheus_client metrics in multiprocess mode
(PROMETHEUS_MULTIPROC_DIR), for test_recipe_prometheus.

- ``/``: counts the request (``app_requests_total``, and the
  ``app_request_seconds`` histogram) and answers with the worker's pid;
- ``/metrics``: the scrape of every process's files, as prometheus_client's
  documentation writes it (a fresh ``CollectorRegistry`` and a
  ``MultiProcessCollector``); not counted;
- ``worker_alive``: a ``python:`` post-fork handler that sets the
  ``livesum`` gauge ``app_workers_alive`` to 1 in each worker, so that the
  scrape says how many workers are alive -- if the dead ones are forgotten.

Run as a script it writes what an earlier run of the app would have left in
the directory (``stale COUNT``: a process that counted COUNT requests, was a
live worker, and is gone), or holds its files mapped as a running process
does (``hold COUNT``: counts COUNT, prints ``ready``, waits for stdin to
close).
"""
import os
import sys
import time

from prometheus_client import CONTENT_TYPE_LATEST
from prometheus_client import CollectorRegistry
from prometheus_client import Counter
from prometheus_client import Gauge
from prometheus_client import Histogram
from prometheus_client import generate_latest
from prometheus_client import multiprocess

REQUESTS = Counter("app_requests", "Requests served")
ALIVE = Gauge("app_workers_alive", "Workers alive", multiprocess_mode="livesum")
LATENCY = Histogram("app_request_seconds", "Time to serve a request")


def worker_alive(payload):
    ALIVE.set(1)


def application(environ, start_response):
    path = environ.get("PATH_INFO", "/")
    if path == "/metrics":
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        data = generate_latest(registry)
        start_response("200 OK", [("Content-Type", CONTENT_TYPE_LATEST)])
        return [data]
    started = time.monotonic()
    REQUESTS.inc()
    LATENCY.observe(time.monotonic() - started)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(os.getpid()).encode()]


if __name__ == "__main__":
    what, count = sys.argv[1], int(sys.argv[2])
    REQUESTS.inc(count)
    for _ in range(count):
        LATENCY.observe(0.001)
    ALIVE.set(1)
    print(os.getpid(), flush=True)
    if what == "hold":
        print("ready", flush=True)
        sys.stdin.read()
