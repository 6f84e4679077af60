"""forksafe.gunicorn.stats() and metrics() under a real gunicorn: the
application serves metrics() at /metrics, a real Prometheus started by the
test scrapes it, and its HTTP API gives back the counters and the memory of
the arbiter and of each worker, by the pids the workers' own events name."""
import json
import os
import signal
import unittest

from prom import Prometheus, http_get, promtool_check
from test_gunicorn import Gunicorn, setUpModule  # noqa: F401

APP = '''
"""A WSGI application that serves forksafe's counters."""
import json

from forksafe import gunicorn as forksafe
from forksafe.host import METRICS_CONTENT_TYPE


def main(global_config, **settings):
    def app(environ, start_response):
        if environ["PATH_INFO"] == "/metrics":
            body, kind = forksafe.metrics().encode(), METRICS_CONTENT_TYPE
        else:
            body, kind = json.dumps(forksafe.stats()).encode(), "application/json"
        start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
        return [body]

    return app
'''

INI = '''
[app:main]
use = call:metricsapp:main
forksafe.event_log = %(here)s/native.jsonl

[forksafe]
* = dl:{event_log}:record
worker-ready = exec:/bin/false
'''

CONF = '''
from forksafe.gunicorn import *  # noqa: F401,F403
'''


class GunicornMetricsTest(unittest.TestCase):
    maxDiff = None

    def test_prometheus_scrapes_a_worker_s_metrics(self):
        g = Gunicorn(self, CONF, ini=INI, extra_files={"metricsapp.py": APP}).start()
        url = "http://127.0.0.1:%d" % g.port
        stats = json.loads(http_get(url + "/stats")[2])
        self.assertEqual(stats["events"]["post-fork"]["fired"], 2)
        self.assertEqual(stats["events"]["worker-ready"]["failed"], 2)
        status, headers, body = http_get(url + "/metrics")
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
        rc, lint = promtool_check(body)
        self.assertEqual(rc, 0, "promtool check metrics:\n%s\n%s" % (lint, body.decode()))

        prometheus = Prometheus(self, ["127.0.0.1:%d" % g.port])
        prometheus.start()
        prometheus.wait_value('forksafe_info{container="gunicorn"}', 1)
        prometheus.wait_value('forksafe_event_occurrences_total{event="post-fork"}', 2)
        prometheus.wait_value('forksafe_event_occurrences_total{event="pre-fork"}', 2)
        prometheus.wait_value('forksafe_handler_runs_total{event="worker-ready"}', 4)
        prometheus.wait_value('forksafe_handler_failures_total{event="worker-ready"}', 2)
        prometheus.wait_value('forksafe_handler_duration_seconds_count{event="worker-ready"}', 4)
        prometheus.wait_value('forksafe_generation', 0)
        ready = {e["process"]["id"]: e["process"]["pid"] for e in g.events(name="worker-ready")}
        pids = prometheus.wait_query("forksafe_process_pid", lambda r: len(r) == 3,
                                     "the arbiter's and both workers' pids")
        self.assertEqual(sorted((m["kind"], m["id"], int(v)) for m, v in pids),
                         sorted([("master", "0", g.master_pid)] +
                                [("worker", str(i), pid) for i, pid in ready.items()]))
        private = prometheus.wait_query('forksafe_process_private_bytes{kind="worker"}',
                                        lambda r: len(r) == 2, "both workers' private bytes")
        self.assertTrue(all(v > 0 for _m, v in private), private)
        shared = prometheus.wait_query('forksafe_process_shared_bytes{kind="worker"}',
                                       lambda r: len(r) == 2, "both workers' shared bytes")
        self.assertTrue(all(v > 0 for _m, v in shared), shared)

        # A killed worker's replacement is listed by its own pid; the killed
        # one (worker-exit never ran) is gone from the memory metrics.
        os.kill(ready[1], signal.SIGKILL)
        g.wait_events("worker-ready", 3)
        new_pid = [e["process"]["pid"] for e in g.events(name="worker-ready")
                   if e["process"]["id"] == 1][-1]
        prometheus.wait_value('forksafe_process_pid{kind="worker",id="1"}', new_pid)
        prometheus.wait_value('forksafe_event_occurrences_total{event="child-death"}', 1)
        self.assertEqual(prometheus.stop(), 0)
        self.assertEqual(g.stop(), 0, g.log_text()[-4000:])


if __name__ == "__main__":
    unittest.main()
