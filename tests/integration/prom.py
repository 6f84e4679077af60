"""A throw-away Prometheus server, and promtool, for the integration tests.

    p = Prometheus(testcase, targets=["127.0.0.1:9192"])   # scrapes every second
    p.start()                                # own temp dir, config, TSDB, loopback port
    p.wait_value('forksafe_generation', 0)   # waits on Prometheus' answer
    p.stop()                                 # by the pid started, reaped; 0 = clean stop

Debian's `prometheus` package (scripts/deps.sh) ships the server and
promtool; its service is never used: the test starts its own server on
127.0.0.1 at a free port, with its config and `--storage.tsdb.path` in a
temp dir, and stops it by the pid it started (a cleanup kills and reaps
its process group if the test fails first).
"""

import json
import os
import subprocess
import tempfile
import urllib.error
import urllib.parse
import urllib.request

from harness import ServerProcess, free_port, wait_for

PROMETHEUS = os.environ.get("FORKSAFE_PROMETHEUS", "/usr/bin/prometheus")
PROMTOOL = os.environ.get("FORKSAFE_PROMTOOL", "/usr/bin/promtool")

CONFIG = """
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: forksafe
    metrics_path: /metrics
    static_configs:
      - targets: [{targets}]
"""


def promtool_check(text):
    """promtool check metrics on TEXT (bytes or str): (exit status, its output)."""
    data = text.encode() if isinstance(text, str) else text
    out = subprocess.run([PROMTOOL, "check", "metrics"], input=data, capture_output=True,
                         timeout=60)
    return out.returncode, (out.stdout + out.stderr).decode(errors="replace")


def http_get(url, timeout=10):
    """(status, headers, body bytes) of GET URL; an HTTP error is an answer too."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.headers, response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers, error.read()


class Prometheus(ServerProcess):
    name = "Prometheus"

    def __init__(self, testcase, targets):
        self.testcase = testcase
        self.dir = tempfile.mkdtemp(prefix="forksafe-prom-")
        testcase.addCleanup(subprocess.run, ["rm", "-rf", self.dir], check=False)
        self.port = free_port()
        self.log = os.path.join(self.dir, "prometheus.log")
        self.config = os.path.join(self.dir, "prometheus.yml")
        with open(self.config, "w") as f:
            f.write(CONFIG.format(targets=", ".join('"%s"' % t for t in targets)))

    def start(self):
        logf = open(self.log, "ab")
        self.proc = subprocess.Popen(
            [PROMETHEUS, "--config.file=" + self.config,
             "--storage.tsdb.path=" + os.path.join(self.dir, "data"),
             "--web.listen-address=127.0.0.1:%d" % self.port],
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=self.dir,
            start_new_session=True)
        logf.close()
        self.testcase.addCleanup(self.kill)

        def ready():
            if self.proc.poll() is not None:
                raise AssertionError("Prometheus exited %s:\n%s"
                                     % (self.proc.returncode, self.log_text()[-4000:]))
            try:
                return http_get(self.url("/-/ready"), timeout=5)[0] == 200
            except OSError:
                return False
        wait_for(ready, what="Prometheus ready")

    def url(self, path):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def query(self, expression):
        """The instant vector of EXPRESSION: [(labels, float value)]."""
        status, _headers, body = http_get(
            self.url("/api/v1/query?" + urllib.parse.urlencode({"query": expression})))
        answer = json.loads(body)
        if status != 200 or answer.get("status") != "success":
            raise AssertionError("query %r: %s %s" % (expression, status, answer))
        return [(r["metric"], float(r["value"][1])) for r in answer["data"]["result"]]

    def wait_query(self, expression, predicate, what):
        """Waits until PREDICATE(the result of EXPRESSION) holds (a scrape
        has stored what the test expects) and returns that result."""
        last = {}

        def met():
            result = last["result"] = self.query(expression)
            return predicate(result)
        try:
            wait_for(met, what=what)
        except AssertionError:
            raise AssertionError("%s: Prometheus answers %s = %s; its log ends:\n%s"
                                 % (what, expression, last.get("result"),
                                    self.log_text()[-3000:])) from None
        return last["result"]

    def wait_value(self, expression, value):
        """Waits until EXPRESSION has one sample, equal to VALUE."""
        return self.wait_query(expression, lambda r: len(r) == 1 and r[0][1] == value,
                               "%s == %s" % (expression, value))
