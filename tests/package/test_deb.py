"""The Debian packages from `make deb`, installed on this machine with apt,
used the way a user would (a uWSGI with just `plugins = python3,forksafe`,
a native handler built against the installed header with pkg-config, the
Python package from /usr/bin/python3), then purged.

The packages are purged by a class cleanup that runs even when a test
fails.  If any of them (or another forksafe that pkg-config, uWSGI or Python
would find instead) is already on the machine, the tests refuse to run,
saying so, rather than replace and then remove what was there.
"""
import glob
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tests", "integration"))

from harness import APP_DIR, Uwsgi, wait_for  # noqa: E402

DEB_DIR = os.path.join(ROOT, "build", "deb")
PACKAGES = ("uwsgi-plugin-forksafe", "libforksafe0", "python3-forksafe",
            "python3-pyramid-forksafe")
PLUGIN = "/usr/lib/uwsgi/plugins/forksafe_plugin.so"
HEADER = "/usr/include/forksafe.h"
PC = "/usr/share/pkgconfig/forksafe.pc"
EXAMPLES = "/usr/share/doc/uwsgi-plugin-forksafe/examples/native_handler"
SYSTEM_PYTHON = "/usr/bin/python3"
APT_LOCK = ["-o", "DPkg::Lock::Timeout=600"]


def header_version():
    with open(os.path.join(ROOT, "include", "forksafe.h")) as f:
        for line in f:
            if line.startswith("#define FORKSAFE_VERSION "):
                return line.split('"')[1]
    raise AssertionError("include/forksafe.h has no FORKSAFE_VERSION")


VERSION = header_version()


def run(args, check=True, **kwargs):
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(args), result.returncode,
                                                    result.stdout[-6000:]))
    return result


def clean_env(**extra):
    """The environment of a user's shell: no PYTHONPATH, no PKG_CONFIG_PATH,
    nothing pointing into this repository."""
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
           "HOME": os.environ.get("HOME", "/root"), "LANG": "C.UTF-8"}
    env.update(extra)
    return env


def package_status(name):
    """dpkg's status word ('installed', 'config-files', ...), or None."""
    result = run(["dpkg-query", "-W", "-f=${db:Status-Status}", name], check=False)
    status = result.stdout.strip() if result.returncode == 0 else ""
    return None if status in ("", "not-installed") else status


def deb_files():
    arch = run(["dpkg", "--print-architecture"]).stdout.strip()
    return [os.path.join(DEB_DIR, "%s_%s_%s.deb" % (name, VERSION, a))
            for name, a in (("uwsgi-plugin-forksafe", arch), ("libforksafe0", arch),
                            ("python3-forksafe", "all"), ("python3-pyramid-forksafe", "all"))]


def refusal():
    """Why this machine cannot be used (the test would replace or shadow an
    existing forksafe), or None."""
    present = ["%s (%s)" % (name, package_status(name))
               for name in PACKAGES if package_status(name)]
    if present:
        return ("already on this machine: %s. This test installs and purges these "
                "packages; it will not replace yours. Remove them first: apt-get purge %s"
                % (", ".join(present), " ".join(PACKAGES)))
    found = run(["pkg-config", "--variable=pcfiledir", "forksafe"], check=False, env=clean_env())
    if found.returncode == 0:
        return ("pkg-config already finds a forksafe.pc in %s (a `make install`?), which "
                "would be used instead of the package's; remove it first"
                % found.stdout.strip())
    if os.path.exists(PLUGIN):
        return "%s exists but no package owns it (a `make install`?); remove it first" % PLUGIN
    for module in ("forksafe", "pyramid_forksafe"):
        imported = run([SYSTEM_PYTHON, "-c", "import %s; print(%s.__file__)" % (module, module)],
                       check=False, cwd="/", env=clean_env())
        if imported.returncode == 0:
            return ("%s already imports %s from %s, which would shadow the package's; "
                    "remove it first" % (SYSTEM_PYTHON, module, imported.stdout.strip()))
    return None


def new_packages(apt_output):
    """The names apt listed under 'The following NEW packages will be installed:'."""
    names, inside = [], False
    for line in apt_output.splitlines():
        if line.startswith("The following NEW packages"):
            inside = True
        elif inside and line.startswith("  "):
            names += line.split()
        else:
            inside = False
    return names


class DebTest(unittest.TestCase):
    maxDiff = None
    installed_extra = []

    @classmethod
    def setUpClass(cls):
        why = refusal()
        if why:
            raise AssertionError("refusing to run the package tests: " + why)
        cls.debs = deb_files()
        if not all(os.path.exists(path) for path in cls.debs):
            run(["make", "--no-print-directory", "deb"], cwd=ROOT, timeout=1800)
        missing = [path for path in cls.debs if not os.path.exists(path)]
        if missing:
            raise AssertionError("make deb did not produce %s" % ", ".join(missing))
        # From here on, whatever happens, the machine is put back.
        cls.addClassCleanup(cls.purge)
        result = run(["apt-get", "install", "-y", "--no-install-recommends", *APT_LOCK,
                      *cls.debs], env=clean_env(DEBIAN_FRONTEND="noninteractive"), timeout=900)
        # Dependencies apt had to add (none when scripts/deps.sh ran): purged
        # with ours, since this transaction brought them.
        cls.installed_extra = [name.split(":")[0] for name in new_packages(result.stdout)
                               if name.split(":")[0] not in PACKAGES]
        cls.tmp = tempfile.mkdtemp(prefix="forksafe-deb-")
        cls.addClassCleanup(shutil.rmtree, cls.tmp, True)
        cls.handler = cls.build_example_handler()

    @classmethod
    def purge(cls):
        names = [name for name in PACKAGES + tuple(cls.installed_extra) if package_status(name)]
        if names:
            run(["apt-get", "purge", "-y", *APT_LOCK, *names],
                env=clean_env(DEBIAN_FRONTEND="noninteractive"), timeout=900)

    @classmethod
    def build_example_handler(cls):
        """The installed example, copied and built as its README says, with
        no PKG_CONFIG_PATH: the header can only come from the package."""
        work = os.path.join(cls.tmp, "native_handler")
        shutil.copytree(EXAMPLES, work)
        result = run(["make"], cwd=work, env=clean_env())
        so = os.path.join(work, "event_log.so")
        if not os.path.exists(so):
            raise AssertionError("make in the installed example built nothing:\n" + result.stdout)
        cls.example_build_log = result.stdout
        return so

    # ------------------------------------------------------------------

    def test_package_versions_and_depends(self):
        abi = "uwsgi-abi-" + hashlib.md5(run(["uwsgi-core", "--dot-h"]).stdout.encode()).hexdigest()
        provides = run(["dpkg-query", "-W", "-f=${Provides}", "uwsgi-core"]).stdout
        self.assertIn(abi, provides, "the installed uwsgi-core is not the ABI we hashed")
        for name in PACKAGES:
            fields = run(["dpkg", "-s", name]).stdout
            self.assertIn("Status: install ok installed", fields)
            self.assertIn("Version: %s\n" % VERSION, fields)
        plugin = run(["dpkg", "-s", "uwsgi-plugin-forksafe"]).stdout
        depends = [line for line in plugin.splitlines() if line.startswith("Depends:")][0]
        self.assertIn(abi, depends)
        self.assertIn("libjansson4", depends)
        python = run(["dpkg", "-s", "python3-pyramid-forksafe"]).stdout
        self.assertIn("python3-pyramid", python)
        self.assertIn("python3-forksafe (= %s)" % VERSION, python)
        self.assertIn("Architecture: all", python)
        # The framework-free adapters: nothing of Pyramid's.
        adapters = run(["dpkg", "-s", "python3-forksafe"]).stdout
        depends = [line for line in adapters.splitlines() if line.startswith("Depends:")][0]
        self.assertNotIn("pyramid", depends)
        self.assertNotIn("zope", depends)
        self.assertIn("Architecture: all", adapters)
        self.assertEqual(self.installed_extra, [],
                         "apt had to install packages scripts/deps.sh does not list")

    def test_files_are_where_debian_puts_them(self):
        multiarch = run(["dpkg-architecture", "-qDEB_HOST_MULTIARCH"]).stdout.strip()
        owners = {
            PLUGIN: "uwsgi-plugin-forksafe",
            HEADER: "uwsgi-plugin-forksafe",
            PC: "uwsgi-plugin-forksafe",
            "/usr/share/doc/uwsgi-plugin-forksafe/README.md.gz": "uwsgi-plugin-forksafe",
            "/usr/share/doc/uwsgi-plugin-forksafe/copyright": "uwsgi-plugin-forksafe",
            EXAMPLES + "/Makefile": "uwsgi-plugin-forksafe",
            EXAMPLES + "/event_log.c": "uwsgi-plugin-forksafe",
            "/usr/lib/%s/libforksafe.so.0" % multiarch: "libforksafe0",
            "/usr/lib/python3/dist-packages/pyramid_forksafe/__init__.py":
                "python3-pyramid-forksafe",
            "/usr/lib/python3/dist-packages/pyramid_forksafe/containers/uwsgi.py":
                "python3-pyramid-forksafe",
            "/usr/lib/python3/dist-packages/forksafe/__init__.py": "python3-forksafe",
            "/usr/lib/python3/dist-packages/forksafe/adapter.py": "python3-forksafe",
            "/usr/lib/python3/dist-packages/forksafe/gunicorn.py": "python3-forksafe",
            "/usr/lib/python3/dist-packages/forksafe/celery.py": "python3-forksafe",
            "/usr/lib/python3/dist-packages/forksafe/recipes.py": "python3-forksafe",
            "/usr/lib/python3/dist-packages/forksafe/recipe_sqlalchemy.py": "python3-forksafe",
            "/usr/share/doc/python3-forksafe/copyright": "python3-forksafe",
        }
        for path, package in owners.items():
            self.assertTrue(os.path.exists(path), path)
            self.assertEqual(run(["dpkg", "-S", path]).stdout.split(":")[0], package, path)
        with open(HEADER) as installed, open(os.path.join(ROOT, "include", "forksafe.h")) as ours:
            self.assertEqual(installed.read(), ours.read())
        self.assertEqual(os.stat(PLUGIN).st_mode & 0o777, 0o644)
        self.assertTrue(glob.glob(EXAMPLES + "/README.md*"))
        # the README's links lead into docs/, installed beside it
        self.assertTrue(glob.glob("/usr/share/doc/uwsgi-plugin-forksafe/docs/configuration.md*"))

    def test_pkg_config_finds_the_installed_header(self):
        env = clean_env()

        def pc(*args):
            return run(["pkg-config", *args, "forksafe"], env=env).stdout.strip()

        self.assertEqual(pc("--modversion"), VERSION)
        self.assertEqual(pc("--variable=pcfiledir"), os.path.dirname(PC))
        self.assertEqual(pc("--variable=includedir"), "/usr/include")
        self.assertEqual(pc("--variable=plugindir"), os.path.dirname(PLUGIN))
        # -I/usr/include is a system directory: pkg-config leaves it out.
        self.assertEqual(pc("--cflags"), "")
        self.assertEqual(pc("--libs"), "")
        # The example Makefile asked pkg-config, and its compile line has no
        # -I into this repository.
        self.assertNotIn(ROOT, self.example_build_log)
        self.assertIn("event_log.so", self.example_build_log)

    def test_uwsgi_loads_the_installed_plugin_by_name(self):
        """No plugin-dir: uWSGI finds forksafe in its own plugin directory;
        the app's pyramid_forksafe comes from the package (only the apps
        directory is on pythonpath)."""
        body = """
            [uwsgi]
            plugins = python3,forksafe
            master = true
            processes = 2
            http-socket = 127.0.0.1:{port}
            pidfile = {pidfile}
            pythonpath = {app_dir}
            paste = config:%p
            forksafe-subscribe = * dl:HANDLER:record
            """.replace("HANDLER", self.handler)
        app = """
            [app:main]
            use = call:pyramid_app:main
            answer = 42
            pyramid_log = %(here)s/pyramid.jsonl
            forksafe.event_log = %(here)s/events.jsonl

            [forksafe]
            pre-fork = recipe:gc-freeze
            """
        u = Uwsgi(self, body, extra_sections=app)
        u.start(wait_ready=2, env=clean_env())
        with open(u.ini) as f:
            self.assertNotIn("plugin-dir", f.read())
        with open("/proc/%d/maps" % u.master_pid) as f:
            maps = f.read()
        mapped = {line.split()[-1] for line in maps.splitlines() if "forksafe" in line}
        self.assertIn(PLUGIN, mapped)
        self.assertIn(self.handler, mapped)
        self.assertFalse([path for path in mapped if path.startswith(ROOT)], mapped)
        self.assertTrue(u.get("/").isdigit())
        self.assertEqual(u.stop(), 0, u.log_text()[-3000:])

        events = u.events()
        names = [e["event"] for e in events]
        for name in ("master-start", "pre-fork", "post-fork", "worker-ready", "worker-exit",
                     "master-exit"):
            self.assertIn(name, names, u.log_text()[-3000:])
        self.assertEqual(len(u.events("worker-ready")), 2)
        # the recipe came from python3-forksafe: no python-path names it
        self.assertRegex(u.log_text(), r"recipe:gc-freeze: the master froze \d+ objects before "
                                       r"its first fork of generation 0")
        for e in events:
            self.assertEqual(e["container"], "uwsgi")
            self.assertEqual(e["settings"]["answer"], "42")
            self.assertEqual(e["global_settings"]["__file__"], u.ini)

        with open(os.path.join(u.dir, "pyramid.jsonl")) as f:
            pyramid = f.read()
        for cls in ("ApplicationMasterStart", "ApplicationPostFork", "ApplicationPostWorkerInit",
                    "ApplicationMasterExit"):
            self.assertIn('"class": "%s"' % cls, pyramid)

    def test_python_package_from_the_system_python(self):
        """From / with a clean environment: the package, and libforksafe0
        through it (the core gunicorn and Celery use), running the handler
        built against the installed header."""
        ini = os.path.join(self.tmp, "app.ini")
        record = os.path.join(self.tmp, "host-events.jsonl")
        with open(ini, "w") as f:
            f.write("[app:main]\nanswer = 42\nforksafe.event_log = %s\n" % record)
        script = (
            "import json, pyramid_forksafe\n"
            "from pyramid_forksafe import host\n"
            "lib = host.load_library()\n"
            "h = host.Host('gunicorn', %r, subscriptions=['post-fork dl:%s:record'])\n"
            "print(json.dumps({'file': pyramid_forksafe.__file__, 'lib': lib._name,\n"
            "                  'host': host.__file__, 'version': pyramid_forksafe.__version__,\n"
            "                  'code': h.dispatch('post-fork', 'worker', 1)}))\n"
            % (ini + "#main", self.handler))
        result = run([SYSTEM_PYTHON, "-c", script], cwd="/", env=clean_env())
        out = json.loads(result.stdout.strip().splitlines()[-1])
        self.assertEqual(out["file"], "/usr/lib/python3/dist-packages/pyramid_forksafe/__init__.py")
        self.assertEqual(out["lib"], "libforksafe.so.0")
        # pyramid_forksafe.host is python3-forksafe's forksafe.host
        self.assertEqual(out["host"], "/usr/lib/python3/dist-packages/forksafe/host.py")
        self.assertEqual(out["version"], VERSION)
        self.assertEqual(out["code"], 0)
        with open(record) as f:
            event = json.loads(f.readline())
        self.assertEqual((event["event"], event["container"]), ("post-fork", "gunicorn"))
        self.assertEqual(event["settings"]["answer"], "42")

    def test_z_purge_removes_every_file(self):
        """Runs last (unittest sorts by name); the cleanup would purge anyway."""
        listed = []
        for name in PACKAGES:
            listed += [path for path in run(["dpkg", "-L", name]).stdout.splitlines()
                       if os.path.isfile(path)]
        self.assertIn(PLUGIN, listed)
        self.purge()
        for name in PACKAGES:
            self.assertIsNone(package_status(name))
        self.assertFalse(os.path.exists(PLUGIN))
        self.assertEqual([path for path in listed if os.path.exists(path)], [])
        self.assertNotEqual(run(["pkg-config", "--exists", "forksafe"], check=False,
                                env=clean_env()).returncode, 0)


if __name__ == "__main__":
    unittest.main()
