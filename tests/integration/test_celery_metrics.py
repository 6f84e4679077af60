"""The Celery adapter's stats() and metrics() under a real Celery worker
(prefork pool, concurrency 2, redis-server broker): a task reads them in a
pool child, and they hold what every process of the worker counted and the
memory of the main process and of each pool child, by their pids;
promtool accepts the text."""
import re
import unittest

from prom import promtool_check
from test_celery import CeleryCase


def samples(text):
    """{'name{labels}': float} of a Prometheus text."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            found[name] = float(value)
    return found


class TestCeleryMetrics(CeleryCase):

    def counters(self, client):
        return client.send_task("celery_app.forksafe_counters").get(timeout=60)

    def test_a_pool_child_reads_every_process_counters_and_memory(self):
        w = self.worker()
        w.wait_ready(2)
        w.wait_consumer_ready()
        pool = {e["process"]["id"]: e["process"]["pid"] for e in w.events("post-fork")}
        self.assertEqual(len(pool), 2)
        for pid in pool.values():
            w.wait_child_recorded(pid)  # worker-ready's handlers have all run
        client = self.client()
        answer = self.counters(client)
        self.assertIn(answer["pid"], pool.values())
        text, stats = answer["metrics"], answer["stats"]
        rc, lint = promtool_check(text)
        self.assertEqual(rc, 0, "promtool check metrics:\n%s\n%s" % (lint, text))

        m = samples(text)
        self.assertEqual(m['forksafe_info{version="0.3.0",container="celery"}'], 1)
        self.assertEqual(m["forksafe_generation"], 0)
        self.assertEqual(m['forksafe_event_occurrences_total{event="master-start"}'], 1)
        self.assertEqual(m['forksafe_event_occurrences_total{event="pre-fork"}'], 2)
        self.assertEqual(m['forksafe_event_occurrences_total{event="post-fork"}'], 2)
        self.assertEqual(m['forksafe_event_occurrences_total{event="worker-ready"}'], 2)
        # The same counters as stats(), read in the same task.
        for event in ("pre-fork", "post-fork", "post-fork-parent"):
            counted = stats["events"][event]
            self.assertEqual(m['forksafe_handler_runs_total{event="%s"}' % event],
                             counted["handlers"], event)
            self.assertEqual(m['forksafe_handler_failures_total{event="%s"}' % event],
                             counted["failed"], event)
            self.assertEqual(m['forksafe_handler_duration_seconds_count{event="%s"}' % event],
                             counted["handlers"], event)
        self.assertGreaterEqual(m['forksafe_handler_runs_total{event="post-fork"}'], 4)
        self.assertEqual(len([n for n in m if n.startswith("forksafe_subscription_info{")]),
                         len(stats["subscriptions"]))

        expected = {'kind="master",id="0"': w.pid}
        expected.update({'kind="worker",id="%d"' % i: pid for i, pid in pool.items()})
        pids = {re.search(r"\{(.*)\}", n).group(1): int(v) for n, v in m.items()
                if n.startswith("forksafe_process_pid{")}
        self.assertEqual(pids, expected)
        for labels in expected:
            for metric in ("private", "shared", "pss", "resident"):
                self.assertGreater(m["forksafe_process_%s_bytes{%s}" % (metric, labels)], 0)

        self.assertEqual(w.stop(), 0, w.log_text()[-4000:])


if __name__ == "__main__":
    unittest.main()
