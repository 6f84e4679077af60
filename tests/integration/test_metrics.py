"""The forksafe-metrics address read by a real Prometheus: a server this test
starts on loopback scrapes a running uWSGI+forksafe, and the test asks
Prometheus' HTTP API for the counters and each worker's memory; promtool
checks the text, and the forksafe-stats socket beside it still speaks JSON."""

import os
import signal
import socket

from harness import IntegrationCase, Uwsgi, free_port, read_socket, wait_for
from prom import Prometheus, http_get, promtool_check

BASE = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 2
mules = 1
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
wsgi-file = {app_dir}/simple_app.py
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
"""

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MetricsTest(IntegrationCase):

    def start(self, extra, ready=2):
        self.metrics_address = "127.0.0.1:%d" % free_port()
        u = Uwsgi(self, BASE + "forksafe-metrics = %s\n" % self.metrics_address + extra,
                  settings={})
        u.start(wait_ready=ready)
        return u

    def scrape(self, path="/metrics"):
        url = "http://%s%s" % (self.metrics_address, path)

        def answered():
            try:
                return http_get(url)
            except OSError:
                return None  # bound by the master loop, maybe after the workers are ready
        return wait_for(answered, what="forksafe-metrics at %s" % url)

    def test_prometheus_scrapes_counters_and_each_workers_memory(self):
        u = self.start("""
forksafe-stats = {dir}/forksafe-stats.sock
forksafe-subscribe = worker-ready exec:/bin/false
forksafe-subscribe = post-fork kind=worker exec:/bin/sh -c 'echo "quoted \\\\ text"'
""")
        status, headers, body = self.scrape()
        self.assertEqual(status, 200)
        self.assertEqual(headers["Content-Type"], CONTENT_TYPE)
        rc, lint = promtool_check(body)
        self.assertEqual(rc, 0, "promtool check metrics:\n%s\n%s" % (lint, body.decode()))
        # A handler's quotes and backslash are escaped in its label.
        self.assertIn(b'handler="exec:/bin/sh -c \'echo \\"quoted \\\\\\\\ text\\"\'"', body)

        prometheus = Prometheus(self, [self.metrics_address])
        prometheus.start()
        prometheus.wait_value('up{job="forksafe"}', 1)
        # 2 workers and 1 mule forked; worker-ready ran through the recorder
        # and /bin/false in each worker.
        prometheus.wait_value('forksafe_event_occurrences_total{event="post-fork"}', 3)
        prometheus.wait_value('forksafe_event_occurrences_total{event="pre-fork"}', 3)
        prometheus.wait_value('forksafe_event_occurrences_total{event="master-start"}', 1)
        prometheus.wait_value('forksafe_handler_runs_total{event="worker-ready"}', 4)
        prometheus.wait_value('forksafe_handler_failures_total{event="worker-ready"}', 2)
        prometheus.wait_value('forksafe_handler_failures_total{event="post-fork"}', 0)
        # post-fork: the recorder in 3 children, the shell in the 2 workers.
        prometheus.wait_value('forksafe_handler_duration_seconds_count{event="post-fork"}', 5)
        prometheus.wait_value('forksafe_handler_duration_seconds_bucket{event="post-fork",'
                              'le="+Inf"}', 5)
        prometheus.wait_value('forksafe_generation', 0)
        prometheus.wait_value('forksafe_hazard_forks_inspected_total', 3)
        prometheus.wait_value('forksafe_hazard_forks_total', 0)
        prometheus.wait_value('count(forksafe_subscription_info)', 3)
        # Which handler failed: by subscription.
        prometheus.wait_value('forksafe_subscription_failures_total{handler="exec:/bin/false"}', 2)
        # The recorder (*): master-start, 3 pre-forks, 3 post-fork-parents,
        # 3 post-forks, 2 worker-readys, generation-ready.
        prometheus.wait_value('forksafe_subscription_runs_total{index="1"}',
                              1 + 3 + 3 + 3 + 2 + 1)

        # Every process, by the pid that its own events name.
        ready = {e["process"]["id"]: e["process"]["pid"] for e in u.events("worker-ready")}
        mule = [e["process"]["pid"] for e in u.events("post-fork")
                if e["process"]["kind"] == "mule"]
        pids = prometheus.wait_query(
            "forksafe_process_pid", lambda r: len(r) == 4, "4 processes' pids")
        self.assertEqual(
            sorted((m["kind"], m["id"], int(v)) for m, v in pids),
            sorted([("master", "0", u.master_pid), ("mule", "1", mule[0])] +
                   [("worker", str(i), pid) for i, pid in ready.items()]))
        for metric in ("private", "shared", "pss", "resident"):
            result = prometheus.wait_query(
                'forksafe_process_%s_bytes{kind="worker"}' % metric,
                lambda r: len(r) == 2, "both workers' %s bytes" % metric)
            self.assertEqual(sorted(m["id"] for m, v in result), ["1", "2"])
            self.assertTrue(all(v > 0 for m, v in result), result)
        # What a worker shares with the master is most of what it maps.
        shared = dict((m["id"], v) for m, v in prometheus.query(
            'forksafe_process_shared_bytes{kind="worker"}'))
        resident = dict((m["id"], v) for m, v in prometheus.query(
            'forksafe_process_resident_bytes{kind="worker"}'))
        for wid in ("1", "2"):
            self.assertLessEqual(shared[wid], resident[wid])

        # A killed worker's replacement: its pid, the same series.
        os.kill(ready[1], signal.SIGKILL)
        wait_for(lambda: len(u.events("worker-ready")) >= 3, what="worker 1 respawned")
        new_pid = [e["process"]["pid"] for e in u.events("worker-ready")
                   if e["process"]["id"] == 1][-1]
        self.assertNotEqual(new_pid, ready[1])
        prometheus.wait_value('forksafe_process_pid{kind="worker",id="1"}', new_pid)
        prometheus.wait_value('forksafe_event_occurrences_total{event="child-death"}', 1)
        prometheus.wait_value('forksafe_event_occurrences_total{event="post-fork"}', 4)

        # The JSON socket beside it is what it was.
        doc = read_socket(os.path.join(u.dir, "forksafe-stats.sock"))
        self.assertEqual(doc["pid"], u.master_pid)
        self.assertEqual(doc["events"]["post-fork"]["fired"], 4)

        self.assertEqual(prometheus.stop(), 0)
        self.assertEqual(u.stop(), 0)

    def test_only_get_metrics_is_answered_and_a_reload_binds_again(self):
        u = self.start("")
        status, _headers, body = self.scrape("/")
        self.assertEqual((status, body), (404, b"forksafe serves /metrics only\n"))
        status, headers, body = self.scrape("/metrics?name[]=x")
        self.assertEqual((status, headers["Content-Type"]), (200, CONTENT_TYPE))
        host, port = self.metrics_address.rsplit(":", 1)
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
            answer = b"".join(iter(lambda: s.recv(65536), b""))
        self.assertTrue(answer.startswith(b"HTTP/1.1 405 "), answer)
        # A client that connects and sends nothing is let go; the next is served.
        with socket.create_connection((host, int(port)), timeout=10):
            status, _headers, body = self.scrape()
        self.assertEqual(status, 200)
        self.assertIn(b"\nforksafe_generation 0\n", body)

        u.send_signal(signal.SIGHUP)
        wait_for(lambda: len(u.events("worker-ready")) >= 4, what="reload")

        def generation_1():
            try:
                return b"\nforksafe_generation 1\n" in http_get(
                    "http://%s/metrics" % self.metrics_address)[2]
            except OSError:
                return False
        wait_for(generation_1, what="forksafe_generation 1 after the reload")
        self.assertEqual(u.stop(), 0)

    def test_bad_metrics_address_stops_before_any_fork(self):
        u = Uwsgi(self, BASE + "forksafe-metrics = 192.0.2.1:9\n", settings={})
        self.assertEqual(u.run_to_exit(), 1)
        with open(u.ini) as f:
            line = [i for i, text in enumerate(f, 1) if text.startswith("forksafe-metrics")][0]
        self.assertLogHas(u, "[forksafe] %s:%d: forksafe-metrics cannot listen on '192.0.2.1:9': "
                             "Cannot assign requested address" % (u.ini, line))
        self.assertEqual(u.events(), [], "nothing may run before a config error")
