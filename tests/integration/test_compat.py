"""The compatibility check: every event in every process kind, with apps
preloaded and with lazy-apps, through one life of a real uWSGI - start, a
spooler that ends after its task, a SIGKILLed worker, a reload, a stop.

It runs on this machine in the integration suite and in each root of the
version matrix (tests/matrix).  With FORKSAFE_COMPAT_OUT set it also writes
what it saw there as JSON, from which tests/matrix/compat_table.py makes
docs/compatibility.md: the table is what the matrix measured.
"""

import json
import os
import platform
import re
import signal
import subprocess
import unittest

from harness import UWSGI, UWSGI_HEAD, IntegrationCase, Uwsgi, read_jsonl, wait_for

CONFIG = UWSGI_HEAD + """pythonpath = {app_dir}
wsgi-file = {app_dir}/simple_app.py
min-worker-lifetime = 0
forkbomb-delay = 0
mule = {app_dir}/mule_loop.py
spooler = {dir}/spool
spooler-import = spool_task
spooler-max-tasks = 1
spooler-frequency = 1
forksafe-settings = %p
forksafe-subscribe = * dl:{recorder}:record
forksafe-subscribe = * python:handlers:record
"""

# What each process kind must see over that life, and the reasons
# (worker-exit, master-exit) or causes (child-death) expected with it.
EXPECTED = {
    "master": {
        "master-start": None,
        "pre-fork": None,
        "post-fork-parent": None,
        "child-death": None,
        "master-exit": {"reload", "shutdown"},
        "generation-ready": None,
    },
    "worker": {
        "post-fork": None,
        "worker-ready": None,
        "worker-exit": {"reload", "shutdown"},
    },
    "mule": {
        "post-fork": None,
        "worker-exit": {"reload", "shutdown"},
    },
    "spooler": {
        "post-fork": None,
        "worker-exit": {"exit"},
    },
}

MODES = {"preloaded": "", "lazy-apps": "lazy-apps = true\n"}


def why(event):
    """A worker-exit or master-exit reason, or a child-death cause."""
    if event["event"] == "child-death":
        return event["child"]["cause"]
    return event.get("reason")


def seen(events):
    """{kind: {event: sorted reasons}} (reasons empty where none apply)."""
    out = {}
    for e in events:
        reasons = out.setdefault(e["process"]["kind"], {}).setdefault(e["event"], set())
        if why(e):
            reasons.add(why(e))
    return {kind: {name: sorted(r) for name, r in names.items()} for kind, names in out.items()}


def os_release():
    fields = {}
    try:
        with open("/etc/os-release") as f:
            for line in f:
                key, _, value = line.strip().partition("=")
                fields[key] = value.strip('"')
    except OSError:
        pass
    return fields


class CompatibilityTest(IntegrationCase):

    results = {}

    @classmethod
    def tearDownClass(cls):
        out = os.environ.get("FORKSAFE_COMPAT_OUT")
        if not out or not cls.results:
            return
        release = os_release()
        version = subprocess.run([UWSGI, "--version"], stdout=subprocess.PIPE,
                                 universal_newlines=True).stdout.strip()
        doc = {
            "distribution": release.get("PRETTY_NAME", platform.platform()),
            "distribution_id": release.get("VERSION_CODENAME") or release.get("VERSION_ID", ""),
            "uwsgi": version,
            "python": cls.python_version or "",
            "expected": {k: {e: sorted(r or ()) for e, r in v.items()} for k, v in EXPECTED.items()},
            "modes": cls.results,
        }
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out + ".tmp", "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
        os.replace(out + ".tmp", out)

    python_version = None

    def test_preloaded(self):
        self.run_life("preloaded")

    def test_lazy_apps(self):
        self.run_life("lazy-apps")

    def run_life(self, mode):
        u = Uwsgi(self, CONFIG + MODES[mode], settings={"python_log": "%(here)s/python.jsonl"})
        os.makedirs(os.path.join(u.dir, "spool"))
        python_log = os.path.join(u.dir, "python.jsonl")

        def both(predicate):
            """The native recorder and the python handler each satisfy it."""
            return predicate(u.events()) and predicate(read_jsonl(python_log))

        def count(events, kind, name, reason=None):
            return len([e for e in events if e["process"]["kind"] == kind and e["event"] == name
                        and (reason is None or why(e) == reason)])

        u.start(wait_ready=2)
        match = re.search(r"Python version: (\d+\.\d+\.\d+)", u.log_text())
        if match:
            type(self).python_version = match.group(1)
        wait_for(lambda: both(lambda ev: count(ev, "mule", "post-fork") >= 1 and
                              count(ev, "spooler", "post-fork") >= 1 and
                              count(ev, "worker", "worker-ready") >= 2),
                 what="the workers ready, the mule and the spooler forked")

        # The spooler runs one task and ends by itself (spooler-max-tasks),
        # which is a graceful exit; the master forks a new one.
        self.assertTrue(u.get("/spool").isdigit())
        wait_for(lambda: u.events("child-death") and [
            e for e in u.events("child-death") if e["child"]["kind"] == "spooler"] or
            both(lambda ev: count(ev, "spooler", "post-fork") >= 2),
            what="the spooler's end and a new spooler")

        # A worker SIGKILLed: a child-death in the master, a new worker.
        victim = [e for e in u.events("worker-ready")][0]["process"]["pid"]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: both(lambda ev: count(ev, "worker", "worker-ready") >= 3),
                 what="the killed worker's replacement ready")

        # A reload (SIGHUP), then a stop (SIGINT).
        u.send_signal(signal.SIGHUP)
        wait_for(lambda: both(lambda ev: count(ev, "master", "master-start") >= 2 and
                              count(ev, "worker", "worker-ready") >= 5 and
                              count(ev, "mule", "post-fork") >= 2),
                 what="the reloaded generation ready")
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])

        native, python = seen(u.events()), seen(read_jsonl(python_log))
        type(self).results[mode] = {"native": native, "python": python}
        for kind, names in EXPECTED.items():
            for name, reasons in names.items():
                for handler, got in (("native", native), ("python", python)):
                    with self.subTest(kind=kind, event=name, handler=handler):
                        self.assertIn(name, got.get(kind, {}),
                                      "%s handlers saw no %s in a %s (%s): they saw %s"
                                      % (handler, name, kind, mode, got))
                        if reasons:
                            self.assertEqual(set(got[kind][name]) & reasons, reasons,
                                             "%s in a %s (%s)" % (name, kind, mode))
        # nothing a process kind must not see
        for handler, got in (("native", native), ("python", python)):
            for kind, names in got.items():
                self.assertLessEqual(set(names), set(EXPECTED.get(kind, {})),
                                     "%s handlers in a %s (%s)" % (handler, kind, mode))


if __name__ == "__main__":
    unittest.main()
