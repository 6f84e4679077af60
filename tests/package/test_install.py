"""`make install` into a DESTDIR, the forksafe.pc files it and `make` write,
and the example handler's Makefile finding the header through pkg-config.
Nothing here touches the machine outside temporary directories."""
import os
import shutil
import subprocess
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
EXAMPLE = os.path.join(ROOT, "examples", "native_handler")


def header_version():
    with open(os.path.join(ROOT, "include", "forksafe.h")) as f:
        for line in f:
            if line.startswith("#define FORKSAFE_VERSION "):
                return line.split('"')[1]
    raise AssertionError("include/forksafe.h has no FORKSAFE_VERSION")


def run(args, check=True, env=None, **kwargs):
    full_env = dict(os.environ)
    for name in ("PKG_CONFIG_PATH", "PKG_CONFIG_LIBDIR", "PKG_CONFIG_SYSROOT_DIR", "DESTDIR",
                 "PREFIX", "CFLAGS", "CPATH", "C_INCLUDE_PATH", "MAKEFLAGS", "MFLAGS"):
        full_env.pop(name, None)
    full_env.update(env or {})
    result = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            universal_newlines=True, env=full_env, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError("%s exited %d:\n%s" % (" ".join(args), result.returncode,
                                                    result.stdout[-6000:]))
    return result


def read_pc(path):
    """The variables and fields of a .pc file, as a dict."""
    values = {}
    with open(path) as f:
        for line in f:
            line = line.strip()
            for sep in ("=", ":"):
                key, found, value = line.partition(sep)
                if found and key and " " not in key:
                    values[key] = value.strip()
                    break
    return values


class InstallTest(unittest.TestCase):
    maxDiff = None

    @classmethod
    def setUpClass(cls):
        # What `make` builds, without running scripts/deps.sh again.
        run(["make", "--no-print-directory", "forksafe_plugin.so", "build/libforksafe.so",
             "build/pkgconfig/forksafe.pc", "build/examples/event_log.so"], cwd=ROOT)

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="forksafe-install-")
        self.addCleanup(shutil.rmtree, self.tmp, True)

    def copy_example(self):
        work = os.path.join(self.tmp, "native_handler")
        shutil.copytree(EXAMPLE, work, ignore=shutil.ignore_patterns("*.so", "*.o"))
        return work

    def test_uninstalled_pc_points_at_the_tree(self):
        pc_dir = os.path.join(ROOT, "build", "pkgconfig")
        env = {"PKG_CONFIG_PATH": pc_dir}
        cflags = run(["pkg-config", "--cflags", "forksafe"], env=env).stdout.strip()
        self.assertEqual(cflags, "-I%s/include" % ROOT)
        version = run(["pkg-config", "--modversion", "forksafe"], env=env).stdout.strip()
        self.assertEqual(version, header_version())
        pc = read_pc(os.path.join(pc_dir, "forksafe.pc"))
        self.assertEqual(pc["prefix"], ROOT)
        self.assertEqual(pc["plugindir"], ROOT)
        self.assertTrue(os.path.exists(os.path.join(pc["plugindir"], "forksafe_plugin.so")))
        self.assertTrue(os.path.exists(os.path.join(ROOT, "build", "examples", "event_log.so")))

    def test_example_makefile_takes_the_header_from_pkg_config(self):
        """A forksafe.pc naming another include directory: the example's
        compile line uses it (and the build works with that header)."""
        include = os.path.join(self.tmp, "elsewhere", "include")
        os.makedirs(include)
        shutil.copy(os.path.join(ROOT, "include", "forksafe.h"), include)
        pc_dir = os.path.join(self.tmp, "pc")
        os.makedirs(pc_dir)
        with open(os.path.join(pc_dir, "forksafe.pc"), "w") as f:
            f.write("includedir=%s\n\nName: forksafe\nDescription: test\nVersion: 9.9\n"
                    "Cflags: -I${includedir}\n" % include)
        work = self.copy_example()
        out = run(["make"], cwd=work, env={"PKG_CONFIG_PATH": pc_dir}).stdout
        self.assertIn("-I%s" % include, out)
        self.assertNotIn(ROOT, out)
        self.assertTrue(os.path.exists(os.path.join(work, "event_log.so")))

    def test_example_makefile_says_when_pkg_config_cannot_find_forksafe(self):
        work = self.copy_example()
        result = run(["make"], cwd=work, check=False,
                     env={"PKG_CONFIG_LIBDIR": os.path.join(self.tmp, "nothing")})
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("pkg-config cannot find forksafe", result.stdout)
        self.assertFalse(os.path.exists(os.path.join(work, "event_log.so")))

    def install(self, *args):
        destdir = os.path.join(self.tmp, "root")
        run(["make", "--no-print-directory", "install", "DESTDIR=" + destdir, *args], cwd=ROOT)
        return destdir

    def test_install_with_a_prefix_and_build_against_it(self):
        destdir = self.install("PREFIX=/opt/fs", "PLUGINDIR=/opt/fs/plugins")
        files = {
            "opt/fs/plugins/forksafe_plugin.so": 0o644,
            "opt/fs/include/forksafe.h": 0o644,
            "opt/fs/include/forksafe_host.h": 0o644,
            "opt/fs/lib/libforksafe.so.%s" % header_version(): 0o644,
            "opt/fs/lib/pkgconfig/forksafe.pc": 0o644,
        }
        for path, mode in files.items():
            full = os.path.join(destdir, path)
            self.assertTrue(os.path.isfile(full), path)
            self.assertEqual(os.stat(full).st_mode & 0o777, mode, path)
        self.assertEqual(os.readlink(os.path.join(destdir, "opt/fs/lib/libforksafe.so.0")),
                         "libforksafe.so.%s" % header_version())
        for header in ("forksafe.h", "forksafe_host.h"):
            with open(os.path.join(destdir, "opt/fs/include", header)) as a, \
                    open(os.path.join(ROOT, "include", header)) as b:
                self.assertEqual(a.read(), b.read())
        pc = read_pc(os.path.join(destdir, "opt/fs/lib/pkgconfig/forksafe.pc"))
        self.assertEqual((pc["prefix"], pc["includedir"], pc["plugindir"]),
                         ("/opt/fs", "/opt/fs/include", "/opt/fs/plugins"))
        self.assertEqual(pc["Version"], header_version())
        self.assertNotIn("Libs", pc)

        # The staged tree as a sysroot: pkg-config prefixes DESTDIR, and the
        # example builds against the installed header.
        env = {"PKG_CONFIG_PATH": os.path.join(destdir, "opt/fs/lib/pkgconfig"),
               "PKG_CONFIG_SYSROOT_DIR": destdir}
        cflags = run(["pkg-config", "--cflags", "forksafe"], env=env).stdout.strip()
        self.assertEqual(cflags, "-I%s/opt/fs/include" % destdir)
        work = self.copy_example()
        out = run(["make"], cwd=work, env=env).stdout
        self.assertIn("-I%s/opt/fs/include" % destdir, out)
        self.assertTrue(os.path.exists(os.path.join(work, "event_log.so")))

        run(["make", "--no-print-directory", "uninstall", "DESTDIR=" + destdir,
             "PREFIX=/opt/fs", "PLUGINDIR=/opt/fs/plugins"], cwd=ROOT)
        left = [os.path.join(d, f) for d, _, fs in os.walk(destdir) for f in fs]
        left += [os.path.join(d, x) for d, xs, _ in os.walk(destdir) for x in xs
                 if os.path.islink(os.path.join(d, x))]
        self.assertEqual(left, [])

    def test_install_defaults(self):
        """PREFIX /usr/local, but the plugin where `plugins = forksafe` finds
        it: the directory compiled into uWSGI."""
        flags = run(["uwsgi", "--cflags"]).stdout
        plugin_dir = flags.split('UWSGI_PLUGIN_DIR="\\"')[1].split('\\"')[0]
        destdir = self.install()
        for path in (plugin_dir.lstrip("/") + "/forksafe_plugin.so",
                     "usr/local/include/forksafe.h",
                     "usr/local/lib/libforksafe.so.0",
                     "usr/local/lib/pkgconfig/forksafe.pc"):
            self.assertTrue(os.path.exists(os.path.join(destdir, path)), path)
        pc = read_pc(os.path.join(destdir, "usr/local/lib/pkgconfig/forksafe.pc"))
        self.assertEqual((pc["prefix"], pc["includedir"], pc["plugindir"]),
                         ("/usr/local", "/usr/local/include", plugin_dir))


if __name__ == "__main__":
    unittest.main()
