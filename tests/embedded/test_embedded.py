"""The monolithic uWSGI of `make embedded`: what it is built from, what it
contains, and symbol: handlers linked into it."""

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile

import embedded_env  # noqa: F401  (before harness)
from embedded_env import BINARY, OUT, ROOT
from harness import IntegrationCase, Uwsgi, read_jsonl, wait_for

HEAD = """
[uwsgi]
plugin-dir = {plugin_dir}
plugins = python3,forksafe
master = true
http-socket = 127.0.0.1:{port}
pidfile = {pidfile}
wsgi-file = {app_dir}/simple_app.py
forksafe-settings = %p
"""


def run(*args):
    return subprocess.run([BINARY, *args], capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL)


class BinaryTest(IntegrationCase):

    def setUp(self):
        self.assertTrue(os.access(BINARY, os.X_OK),
                        "%s missing: `make embedded` did not build it (log: %s)"
                        % (BINARY, os.path.join(OUT, "build.log")))

    def test_version_is_the_debian_source_it_was_built_from(self):
        stamps = glob.glob(os.path.join(OUT, "uwsgi-*", ".forksafe-source"))
        self.assertEqual(len(stamps), 1, stamps)
        with open(stamps[0]) as f:
            _, version, tarball, sha256 = f.read().split()
        self.assertRegex(tarball, r"^uwsgi_[0-9.]+\.orig\.tar\.")
        self.assertRegex(sha256, r"^sha256:[0-9a-f]{64}$")
        out = run("--version")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(out.stdout.strip(), version)

    def test_python_and_forksafe_are_compiled_in(self):
        cflags = run("--cflags").stdout
        self.assertIn("UDEP(python);UDEP(forksafe);", cflags)
        # no option at all: only what is compiled in can be listed
        out = run("--plugins-list")
        listing = out.stdout + out.stderr
        generic = listing.split("*** uWSGI loaded generic plugins ***")[1].split("***")[0]
        request = listing.split("*** uWSGI loaded request plugins ***")[1].split("---")[0]
        self.assertIn("forksafe", generic.split())
        self.assertIn("0: python", request)
        slot = re.search(r"^(\d+): forksafe-lifecycle$", request, re.M)
        self.assertTrue(slot, listing)
        self.assertTrue(200 <= int(slot.group(1)) <= 249, slot.group(0))

    def test_exports_only_the_public_api(self):
        declared = set()
        for name in ("forksafe.h", "forksafe_host.h"):
            with open(os.path.join(ROOT, "include", name)) as f:
                declared |= set(re.findall(r"FORKSAFE_EXPORT [^;{]*?\b(forksafe_\w+)\s*\(",
                                           f.read()))
        out = subprocess.run(["nm", "-D", "--defined-only", BINARY], check=True,
                             capture_output=True, text=True).stdout
        exported = {line.split()[-1] for line in out.splitlines()
                    if "forksafe" in line.split()[-1]}
        # plus the plugin struct and the test handler linked in, with its marker
        self.assertEqual(exported, declared | {"forksafe_plugin", "forksafe_embedded_record",
                                               "forksafe_handler_abi"})


class SymbolHandlerTest(IntegrationCase):
    """tests/embedded/symbol_handlers.c is linked into the binary
    (additional_sources in buildconf/forksafe-embedded.ini)."""

    def test_linked_in_handler_runs_in_every_process(self):
        u = Uwsgi(self, HEAD + "processes = 2\n"
                  "mule = {app_dir}/mule_loop.py\n"
                  "forksafe-subscribe = * symbol:forksafe_embedded_record\n"
                  "forksafe-subscribe = * dl:{recorder}:record\n",
                  settings={"embedded.record": "%(here)s/symbol.jsonl"})
        with open(u.ini) as f:
            ini = f.read()
        self.assertNotRegex(ini, r"(?m)^\s*(plugins?|plugin-dir|need-plugins?)\s*=")
        symbol_record = os.path.join(u.dir, "symbol.jsonl")

        def per_process(events):
            out = {}
            for e in events:
                out.setdefault(e["process"]["pid"], []).append(e)
            return out

        def dl_events():
            return [e for e in u.events() if e["event"] != "app-loaded"]

        u.start(wait_ready=2)
        # wait_ready covers the workers only.  Before the stop, the mule must
        # be forked and recorded by both handlers (symbol: first, then dl:),
        # the master must have run post-fork-parent for it, and no process
        # may be between its symbol: and dl: handlers.
        def mule_recorded(events):
            return [e for e in events if e["event"] == "post-fork" and
                    e["process"]["kind"] == "mule"]

        def mule_parent(events):
            return [e for e in events if e["event"] == "post-fork-parent" and
                    e["child"]["kind"] == "mule"]

        def settled():
            by_symbol, by_dl = read_jsonl(symbol_record), dl_events()
            return (mule_recorded(by_symbol) and mule_recorded(by_dl) and
                    mule_parent(by_symbol) and mule_parent(by_dl) and
                    per_process(by_symbol) == per_process(by_dl))
        wait_for(settled, what="the mule's post-fork and post-fork-parent in both records")
        self.assertTrue(u.get("/").isdigit())
        with open("/proc/%d/maps" % u.master_pid) as f:
            self.assertNotIn("_plugin.so", f.read())
        self.assertEqual(u.stop(), 0)
        with open(symbol_record) as f:
            by_symbol = [json.loads(line) for line in f]
        by_dl = dl_events()

        # the same payloads, in the same order, in every process
        self.assertEqual(per_process(by_symbol), per_process(by_dl))
        kinds = {e["process"]["kind"] for e in by_symbol}
        self.assertEqual(kinds, {"master", "worker", "mule"})
        self.assertEqual(len([e for e in by_symbol if e["event"] == "worker-ready"]), 2)

    def test_unknown_symbol_stops_the_start_naming_file_and_line(self):
        u = Uwsgi(self, HEAD + "processes = 1\n"
                  "forksafe-subscribe = post-fork symbol:forksafe_embedded_recrod\n",
                  settings={})
        status = u.run_to_exit()
        log = u.log_text()
        self.assertNotEqual(status, 0, log)
        self.assertNotIn("spawned uWSGI worker", log)
        with open(u.ini) as f:
            line = next(i + 1 for i, l in enumerate(f) if "recrod" in l)
        errors = [l for l in log.splitlines() if l.startswith("[forksafe] ")]
        self.assertTrue(errors, log)
        self.assertIn("%s:%d:" % (u.ini, line), errors[-1])
        self.assertIn("no symbol 'forksafe_embedded_recrod'", errors[-1])


class UwsgiPluginPyTest(IntegrationCase):
    """uwsgiplugin.py also serves `uwsgi --build-plugin` (uWSGI exec()s it
    without __file__, in a directory of its own)."""

    def test_debian_uwsgi_builds_the_plugin_from_the_checkout(self):
        where = tempfile.mkdtemp(prefix="forksafe-build-plugin-")
        self.addCleanup(shutil.rmtree, where, True)
        done = subprocess.run(["uwsgi", "--build-plugin", ROOT], cwd=where, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        built = os.path.join(where, "forksafe_plugin.so")
        out = subprocess.run(["nm", "-D", "--defined-only", built], check=True,
                             capture_output=True, text=True).stdout
        self.assertIn(" forksafe_plugin\n", out)
        self.assertNotIn("forksafe__", out)
