"""Secrets in the settings never leak: not into any process's argv or
environment (master, workers, exec: handler children, scanned while they
run), not into uWSGI's log with forksafe-verbose on and every handler kind
subscribed, not into forksafe-check's listing, the forksafe-stats
document or the forksafe-metrics text -- while the handlers themselves do receive them."""

import json
import os
import re
import secrets
import socket
import subprocess

from harness import (RECORDER, UWSGI_HEAD, IntegrationCase, Uwsgi, read_jsonl, read_socket,
                     session_processes, wait_for)

INI = UWSGI_HEAD + """paste = config:%p
pythonpath = {app_dir}
forksafe-verbose = true
forksafe-stats = {dir}/stats.sock
forksafe-metrics = {dir}/metrics.sock
; the post-fork exec: handlers block until the test releases them
forksafe-timeout = 600

[DEFAULT]
smtp_password = {s_default}

[app:main]
use = call:simple_app:make_app
forksafe.event_log = {record}
python_log = {dir}/python.jsonl
db.password = {s_password}
sqlalchemy.url = postgresql://app:{s_url}@localhost/db
session.SECRET = {s_secret}
api_token = {s_token}
stripe.key = {s_key}
aws.credentials = {s_credential}
ldap.bindpasswd = {s_passwd}
db.dsn = host=localhost user=app password={s_dsn} dbname=app
plain = visible-value

[forksafe]
master-start = exec:cat > {dir}/exec-master.json
post-fork =
    exec:cat > {dir}/exec-stdin.$$; until [ -e {dir}/release ]; do sleep 0.05; done
    dl:{recorder}:record
    symbol:record
    python:handlers:record
    hook:print:hook handler ran
worker-ready =
    exec:echo notify postgresql://deploy:{s_spec}@db.example/app >/dev/null
    exec:exit 3
    python:handlers:boom
"""

# Settings: these must never be in argv, environ or any log line.
SETTING_SECRETS = ("s_default", "s_password", "s_url", "s_secret", "s_token", "s_key",
                   "s_credential", "s_passwd", "s_dsn")


def read_proc(pid, name):
    try:
        with open("/proc/%d/%s" % (pid, name), "rb") as f:
            return f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None



def http_over_unix(path):
    """The whole answer to GET /metrics on the unix socket PATH."""
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(30)
        s.connect(path)
        s.sendall(b"GET /metrics HTTP/1.1\r\nHost: forksafe\r\n\r\n")
        return b"".join(iter(lambda: s.recv(65536), b""))

class SecretsTest(IntegrationCase):

    def make(self):
        self.secrets = {name: "%s-%s" % (name.replace("_", ""), secrets.token_hex(12))
                        for name in SETTING_SECRETS + ("s_spec",)}
        u = Uwsgi(self, re.sub(r"\{(s_[a-z]+)\}", r"{{\1}}", INI))
        with open(u.ini) as f:
            text = f.read()
        for name, value in self.secrets.items():
            text = text.replace("{%s}" % name, value)
        with open(u.ini, "w") as f:
            f.write(text)
        return u

    def assertNoSecret(self, where, data, names=SETTING_SECRETS):
        if isinstance(data, str):
            data = data.encode()
        for name in names:
            self.assertNotIn(self.secrets[name].encode(), data,
                             "%s leaks %s" % (where, name))

    def test_no_secret_in_argv_environ_or_logs(self):
        u = self.make()
        env = dict(os.environ, LD_PRELOAD=RECORDER)  # symbol:record finds it in the process
        u.start(env=env)
        sid = u.proc.pid
        scanned, exec_shells = set(), set()

        def scan():
            for pid in session_processes(sid):
                cmdline, environ = read_proc(pid, "cmdline"), read_proc(pid, "environ")
                if cmdline is None or environ is None:
                    continue
                scanned.add(pid)
                if b"exec-stdin" in cmdline:
                    exec_shells.add(pid)  # the handler's shell, one per worker
                self.assertNoSecret("argv of pid %d (%r)" % (pid, cmdline[:80]), cmdline)
                self.assertNoSecret("environ of pid %d" % pid, environ)
            # Done once both workers' exec: handlers were seen alive: they
            # block (their shells and sleeps) until released below, and the
            # rest of post-fork runs after them.
            return len(exec_shells) >= 2

        wait_for(scan, interval=0.02, what="exec: handlers seen alive")
        with open(os.path.join(u.dir, "release"), "w"):
            pass
        wait_for(lambda: len(u.events("post-fork")) >= 2, what="post-fork in both workers")
        wait_for(lambda: len([f for f in os.listdir(u.dir) if f.startswith("exec-stdin.")]) >= 2,
                 what="exec: handler output")
        wait_for(lambda: u.log_text().count("python:handlers:boom' failed") >= 2,
                 what="worker-ready handlers")
        scan()
        self.assertGreaterEqual(len(scanned), 4, "master, 2 workers, exec: children")

        stats = read_socket(os.path.join(u.dir, "stats.sock"), parse=False)
        self.assertIn(b"postgresql://deploy:***@db.example/app", stats)
        self.assertNoSecret("the forksafe-stats document", stats, SETTING_SECRETS + ("s_spec",))
        metrics = http_over_unix(os.path.join(u.dir, "metrics.sock"))
        self.assertTrue(metrics.startswith(b"HTTP/1.1 200 OK\r\n"), metrics[:200])
        self.assertIn(b'handler="exec:', metrics)
        self.assertIn(b"postgresql://deploy:***@db.example/app", metrics)
        self.assertNoSecret("the forksafe-metrics text", metrics, SETTING_SECRETS + ("s_spec",))
        self.assertEqual(u.stop(), 0)

        # The handlers did get the settings (so the scan was meaningful)...
        with open(os.path.join(u.dir, [f for f in os.listdir(u.dir)
                                       if f.startswith("exec-stdin.")][0])) as f:
            payload = json.loads(f.read())
        self.assertEqual(payload["settings"]["db.password"], self.secrets["s_password"])
        self.assertEqual(payload["global_settings"]["smtp_password"], self.secrets["s_default"])
        with open(os.path.join(u.dir, "exec-master.json")) as f:
            self.assertIn(self.secrets["s_url"], json.load(f)["settings"]["sqlalchemy.url"])
        recorded = [e for e in u.events("post-fork")]
        self.assertEqual(len(recorded), 4)  # dl: and symbol:, in 2 workers
        self.assertEqual(recorded[0]["settings"]["api_token"], self.secrets["s_token"])
        python_payloads = read_jsonl(os.path.join(u.dir, "python.jsonl"))
        self.assertEqual(python_payloads[0]["settings"]["aws.credentials"],
                         self.secrets["s_credential"])

        # ...and the log, verbose, with failures and a traceback, has none.
        log = u.log_text()
        self.assertIn("hook handler ran", log)
        self.assertRegex(log, r"handler 'exec:exit 3' failed on worker-ready")
        self.assertIn("ValueError: boom on worker-ready", log)
        self.assertRegex(log, r"handler 'python:handlers:record' ran on post-fork in worker")
        self.assertRegex(log, r"handler 'exec:echo notify postgresql://deploy:\*\*\*@db\.exa")
        self.assertNoSecret("the uWSGI log", log, SETTING_SECRETS + ("s_spec",))

    def test_check_redacts_secret_keys_and_url_passwords(self):
        u = self.make()
        env = dict(os.environ, LD_PRELOAD=RECORDER)
        u.start(env=env, args=["--forksafe-check"])
        try:
            wait_for(lambda: u.proc.poll() is not None, what="forksafe-check to exit")
        except AssertionError:
            pass  # reported below, with the log
        self.assertEqual(u.proc.poll(), 0, u.log_text())
        log = u.log_text()
        for key in ("db.password", "session.SECRET", "api_token", "stripe.key",
                    "aws.credentials", "ldap.bindpasswd", "smtp_password"):
            self.assertIn("  %s = ***\n" % key, log)
        self.assertIn("  db.dsn = host=localhost user=app password=*** dbname=app\n", log)
        self.assertIn("  sqlalchemy.url = postgresql://app:***@localhost/db\n", log)
        self.assertIn("  plain = visible-value\n", log)
        self.assertIn("exec:echo notify postgresql://deploy:***@db.example/app", log)
        self.assertNoSecret("forksafe-check", log, SETTING_SECRETS + ("s_spec",))
        self.assertNotIn("spawned uWSGI worker", log)


PRIVILEGES_INI = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
processes = 1
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
wsgi-file = {app_dir}/simple_app.py
uid = nobody
gid = nogroup
forksafe-settings = {dir}/app.ini
forksafe-subscribe = master-start,pre-fork,post-fork-parent exec:id -u > {dir}/uid.$FORKSAFE_EVENT
forksafe-subscribe = post-fork,worker-ready exec:id -u > {dir}/uid.$FORKSAFE_EVENT
"""


class PrivilegesTest(IntegrationCase):
    """Which uid each handler runs as when uWSGI, started as root, drops to
    `uid`/`gid` -- what README's "Secrets and privileges" says."""

    def run_instance(self, extra="", settings_mode=0o644):
        u = Uwsgi(self, PRIVILEGES_INI + extra)
        os.chmod(u.dir, 0o777)
        os.chmod(u.ini, 0o644)
        path = os.path.join(u.dir, "app.ini")
        with open(path, "w") as f:
            f.write("[app:main]\ndb.password = x\n")
        os.chmod(path, settings_mode)
        return u

    def uids(self, u):
        names = ("master-start", "pre-fork", "post-fork-parent", "post-fork", "worker-ready")
        def written(name):
            try:
                with open(os.path.join(u.dir, "uid." + name)) as f:
                    return f.read().endswith("\n")
            except FileNotFoundError:
                return False

        wait_for(lambda: all(written(n) for n in names), what="every handler's uid")
        out = {}
        for name in names:
            with open(os.path.join(u.dir, "uid." + name)) as f:
                out[name] = int(f.read())
        return out

    def test_by_default_every_handler_runs_as_the_dropped_uid(self):
        nobody = int(subprocess.check_output(["id", "-u", "nobody"]))
        u = self.run_instance()
        u.start()
        self.assertEqual(set(self.uids(u).values()), {nobody}, u.log_text())
        self.assertEqual(u.stop(), 0)

    def test_by_default_settings_are_read_after_the_drop(self):
        u = self.run_instance(settings_mode=0o600)  # root's, unreadable to nobody
        status = u.run_to_exit()
        log = u.log_text()
        self.assertNotEqual(status, 0)
        self.assertNotIn("spawned uWSGI worker", log)
        self.assertRegex(log, r"\[forksafe\] %s:\d+: .*app\.ini: cannot open the settings file: "
                              r"Permission denied" % re.escape(u.ini))

    def test_master_as_root_keeps_master_handlers_root(self):
        nobody = int(subprocess.check_output(["id", "-u", "nobody"]))
        u = self.run_instance("master-as-root = true\n", settings_mode=0o600)
        u.start()
        uids = self.uids(u)
        self.assertEqual(u.stop(), 0)
        self.assertEqual(uids, {"master-start": 0, "pre-fork": 0, "post-fork-parent": 0,
                                "post-fork": nobody, "worker-ready": nobody})
