"""The example that `make run` serves, started from a copy on a free port."""

import json
import os
import shutil
import signal
import subprocess
import tempfile
import unittest
import urllib.request

from harness import BUILD, ROOT, UWSGI, free_port, read_jsonl, wait_for

DEMO = os.path.join(ROOT, "examples", "pyramid_sqlalchemy")


class DemoTest(unittest.TestCase):

    def test_demo_page_lists_every_process_events(self):
        work = tempfile.mkdtemp(prefix="forksafe-demo-")
        self.addCleanup(shutil.rmtree, work, True)
        app = os.path.join(work, "pyramid_sqlalchemy")
        shutil.copytree(DEMO, app, ignore=shutil.ignore_patterns("var", "__pycache__"))
        os.makedirs(os.path.join(app, "var"))
        port = free_port()
        ini = os.path.join(app, "production.ini")
        with open(ini) as f:
            text = f.read()
        text = (text.replace("127.0.0.1:8080", "127.0.0.1:%d" % port)
                .replace("%(here)s/../../build/", BUILD + "/")
                .replace("plugin-dir = %d../..", "plugin-dir = " + ROOT)
                .replace("python-path = %d../../python",
                         "python-path = " + os.path.join(ROOT, "python")))
        with open(ini, "w") as f:
            f.write(text)
        log = open(os.path.join(work, "uwsgi.log"), "wb")
        proc = subprocess.Popen([UWSGI, "--ini", ini], cwd=app, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        log.close()

        def reap():
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        self.addCleanup(reap)
        events_path = os.path.join(app, "var", "events.jsonl")

        def log_text():
            with open(os.path.join(work, "uwsgi.log"), errors="replace") as f:
                return f.read()

        def ready():
            # What the test reads below, all there before the requests and
            # the stop: the 4 workers' worker-ready records and the hook that
            # runs after the recorder, the mule's post-fork.
            if proc.poll() is not None:
                raise AssertionError("uWSGI exited early:\n" + log_text()[-6000:])
            events = read_jsonl(events_path)
            return (len([e for e in events if e["event"] == "worker-ready"]) >= 4 and
                    [e for e in events if e["event"] == "post-fork" and
                     e["process"]["kind"] == "mule"] and
                    log_text().count("[forksafe_sqla] a worker is ready") >= 4)
        wait_for(ready, what="the workers ready and the mule forked")
        with urllib.request.urlopen("http://127.0.0.1:%d/" % port, timeout=60) as r:
            page = r.read().decode()
        with urllib.request.urlopen("http://127.0.0.1:%d/events.json" % port, timeout=60) as r:
            events = json.load(r)
        os.kill(proc.pid, signal.SIGTERM)  # die-on-term: a clean shutdown
        self.assertEqual(proc.wait(timeout=60), 0)
        self.assertIn("<h1>forksafe_sqla</h1>", page)
        self.assertRegex(page, r"Worker pid \d+ answered on database backend")
        self.assertIn('style="font-weight:bold"', page)
        kinds = {(e["process"]["kind"], e["event"]) for e in events}
        for expected in [("master", "master-start"), ("master", "pre-fork"),
                         ("worker", "post-fork"), ("worker", "worker-ready"),
                         ("mule", "post-fork")]:
            self.assertIn(expected, kinds)
        self.assertTrue(events[0]["settings"]["sqlalchemy.url"].startswith("sqlite:///"))
        self.assertNotIn("use", events[0]["settings"])
        log = log_text()
        self.assertEqual(log.count("[forksafe_sqla] a worker is ready"), 4)
        self.assertNotIn("Traceback", log)
        with open(events_path) as f:
            final = [json.loads(line)["event"] for line in f]
        self.assertEqual(final[-1], "master-exit")


if __name__ == "__main__":
    unittest.main()
