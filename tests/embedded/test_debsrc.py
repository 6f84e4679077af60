"""Getting uWSGI's source on a machine without deb-src entries: scripts/debsrc.py
against apt configurations in temp dirs (apt itself parses what it writes),
and scripts/embedded.sh run with APT_CONFIG pointing at such a sandbox, so
this machine's apt is never touched."""

import glob
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import unittest

from embedded_env import ROOT

sys.path.insert(0, os.path.join(ROOT, "scripts"))
import debsrc  # noqa: E402

PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
DEBIAN_SOURCES = """\
Types: deb
# http://snapshot.debian.org/archive/debian/20250520T000000Z
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: {keyring}

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: {keyring}
""".format(keyring=KEYRING)


class AptSandbox:
    """An apt configuration of its own: sources, lists and caches in a temp
    dir, selected by APT_CONFIG."""

    def __init__(self, testcase):
        self.dir = tempfile.mkdtemp(prefix="forksafe-apt-")
        testcase.addCleanup(shutil.rmtree, self.dir, True)
        self.sources_list = os.path.join(self.dir, "sources.list")
        self.parts = os.path.join(self.dir, "sources.list.d")
        self.lists = os.path.join(self.dir, "lists")
        self.out = os.path.join(self.dir, "out")
        for d in (self.parts, os.path.join(self.lists, "partial"),
                  os.path.join(self.dir, "cache", "archives", "partial")):
            os.makedirs(d)
        open(self.sources_list, "w").close()
        self.conf = os.path.join(self.dir, "apt.conf")
        with open(self.conf, "w") as f:
            f.write('Dir::Etc::sourcelist "%s";\n' % self.sources_list)
            f.write('Dir::Etc::sourceparts "%s";\n' % self.parts)
            f.write('Dir::State::lists "%s";\n' % self.lists)
            f.write('Dir::Cache "%s";\n' % os.path.join(self.dir, "cache"))
            f.write('Acquire::Retries "0";\n')
        self.env = dict(os.environ, APT_CONFIG=self.conf, FORKSAFE_EMBEDDED_DIR=self.out,
                        PYTHON=PYTHON)
        self.written = os.path.join(self.parts, "forksafe-src.sources")

    def add(self, path, text):
        path = os.path.join(self.dir, path)
        with open(path, "w") as f:
            f.write(textwrap.dedent(text))
        return path

    def debsrc(self, codename="bookworm"):
        return subprocess.run([PYTHON, os.path.join(ROOT, "scripts", "debsrc.py"),
                               "--sources-list", self.sources_list, "--sources-dir", self.parts,
                               "--lists", self.lists, "--codename", codename,
                               "--write", self.written],
                              capture_output=True, text=True, timeout=60)

    def source_targets(self):
        """The Sources indices apt would fetch: proof that apt parses the
        configuration as we meant it."""
        done = subprocess.run(["apt-get", "indextargets", "--no-release-info",
                               "--format", "$(TARGET_OF) $(URI)"],
                              env=self.env, capture_output=True, text=True)
        if done.returncode != 0:
            raise AssertionError("apt rejects the configuration: " + done.stderr)
        return {line.split()[1] for line in done.stdout.splitlines()
                if line.startswith("deb-src ")}

    def embedded(self, *args, timeout=300):
        return subprocess.run([os.path.join(ROOT, "scripts", "embedded.sh"), *args],
                              env=self.env, capture_output=True, text=True, timeout=timeout)


def sources_url(uri, suite, component="main"):
    return "%s/dists/%s/%s/source/Sources" % (uri, suite, component)


class DebSrcTest(unittest.TestCase):

    def test_debian_default_gets_deb_src_twins_once(self):
        box = AptSandbox(self)
        box.add("sources.list.d/debian.sources", DEBIAN_SOURCES)
        self.assertEqual(box.source_targets(), set())
        done = box.debsrc()
        self.assertEqual(done.returncode, 0, done.stderr)
        with open(box.written) as f:
            text = f.read()
        self.assertEqual(text.count("Types: deb-src"), 2, text)
        self.assertEqual(text.count("Signed-By: %s" % KEYRING), 2, text)
        self.assertEqual(box.source_targets(), {
            sources_url("http://deb.debian.org/debian", "bookworm"),
            sources_url("http://deb.debian.org/debian", "bookworm-updates"),
            sources_url("http://deb.debian.org/debian-security", "bookworm-security"),
        })
        again = box.debsrc()
        self.assertEqual((again.returncode, again.stdout), (0, ""), again.stderr)
        with open(box.written) as f:
            self.assertEqual(f.read(), text)

    def test_one_line_format_and_existing_deb_src(self):
        box = AptSandbox(self)
        box.add("sources.list", """\
            # the mirror already has its sources; only security lacks them
            deb [arch=amd64 signed-by=%s] http://mirror.example/debian/ bookworm main contrib
            deb-src [signed-by=%s] http://mirror.example/debian bookworm main contrib
            deb [ signed-by=%s ] http://security.example/debian-security bookworm-security main
            """ % (KEYRING, KEYRING, KEYRING))
        done = box.debsrc()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertNotIn("mirror.example", done.stdout)
        self.assertIn("Signed-By: %s" % KEYRING, done.stdout)
        self.assertEqual(box.source_targets(), {
            sources_url("http://mirror.example/debian", "bookworm"),
            sources_url("http://mirror.example/debian", "bookworm", "contrib"),
            sources_url("http://security.example/debian-security", "bookworm-security"),
        })

    def test_other_repositories_and_disabled_entries_are_left_alone(self):
        box = AptSandbox(self)
        box.add("sources.list.d/docker.list",
                "deb https://download.docker.com/linux/debian bookworm stable\n")
        # apt's copy of each suite's Release file says whose it is
        box.add("lists/download.docker.com_linux_debian_dists_bookworm_Release",
                "Origin: Docker\nSuite: bookworm\nCodename: bookworm\n")
        box.add("sources.list.d/other.sources", """\
            Types: deb
            URIs: https://deb.nodesource.com/node_20.x
            Suites: nodistro
            Components: main

            Types: deb
            URIs: http://disabled.example/debian
            Suites: bookworm
            Components: main
            Enabled: no
            """)
        box.add("sources.list.d/debian.sources.disabled", DEBIAN_SOURCES)
        box.add("sources.list.d/debian.sources", """\
            Types: deb
            URIs: http://deb.debian.org/debian
            Suites: bookworm
            Components: main
            """)
        box.add("lists/deb.debian.org_debian_dists_bookworm_Release",
                "Origin: Debian\nSuite: stable\nCodename: bookworm\n")
        done = box.debsrc()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(box.source_targets(),
                         {sources_url("http://deb.debian.org/debian", "bookworm")})

    def test_inline_signed_by_key_is_copied_whole(self):
        box = AptSandbox(self)
        key = ["-----BEGIN PGP PUBLIC KEY BLOCK-----", "", "bm90IGEgcmVhbCBrZXk=",
               "-----END PGP PUBLIC KEY BLOCK-----"]
        # deb822: continuation lines indented, an empty line written " ."
        block = "\n".join(" " + (line or ".") for line in key)
        box.add("sources.list.d/debian.sources",
                "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
                "Components: main\nSigned-By:\n%s\n" % block)
        done = box.debsrc()
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertIn("Signed-By: \n%s\n" % block, done.stdout)
        self.assertEqual(box.source_targets(),
                         {sources_url("http://deb.debian.org/debian", "bookworm")})

    def test_no_debian_suite_is_an_error(self):
        box = AptSandbox(self)
        box.add("sources.list.d/node.list", "deb https://deb.nodesource.com/node_20.x nodistro main\n")
        done = box.debsrc()
        self.assertEqual(done.returncode, 2)
        self.assertIn("no deb entry for a Debian bookworm suite", done.stderr)
        self.assertFalse(os.path.exists(box.written))

    def test_malformed_entry_names_file_and_line(self):
        box = AptSandbox(self)
        path = box.add("sources.list", "# fine\n\ndeb http://deb.debian.org/debian\n")
        done = box.debsrc()
        self.assertEqual(done.returncode, 2)
        self.assertIn("%s:3: cannot parse source line" % path, done.stderr)


class FetchTest(unittest.TestCase):
    """scripts/embedded.sh fetch on a machine that has no deb-src entries."""

    def test_unreachable_mirror_fails_loudly(self):
        box = AptSandbox(self)
        box.add("sources.list.d/local.list",
                "deb [trusted=yes] http://127.0.0.1:9/debian %s main\n" % debsrc.os_codename())
        done = box.embedded("fetch", timeout=120)
        self.assertNotEqual(done.returncode, 0, done.stdout)
        self.assertIn("embedded: ERROR: apt still knows no source package 'uwsgi'", done.stderr)
        self.assertIn("URIs: http://127.0.0.1:9/debian", done.stdout)
        self.assertEqual(glob.glob(os.path.join(box.out, "uwsgi*")), [])

    def test_clean_machine_gets_deb_src_and_the_verified_source(self):
        # this machine's deb entries, without any deb-src
        system = subprocess.run(["apt-config", "shell", "L", "Dir::Etc::sourcelist/f",
                                 "D", "Dir::Etc::sourceparts/d"],
                                env={k: v for k, v in os.environ.items() if k != "APT_CONFIG"},
                                check=True, capture_output=True, text=True).stdout
        paths = dict(line.split("=", 1) for line in system.split())
        entries = debsrc.read_sources(paths["L"].strip("'"), paths["D"].strip("'"))
        stanzas = ["Types: deb\nURIs: %s\nSuites: %s\nComponents: %s\n%s"
                   % (" ".join(e.uris), " ".join(e.suites), " ".join(e.components),
                      "".join("%s: %s\n" % kv for kv in e.carry))
                   for e in entries if "deb" in e.types and e.components]
        box = AptSandbox(self)
        box.add("sources.list.d/machine.sources", "\n".join(stanzas))
        self.assertEqual(box.source_targets(), set())
        before = sorted((p, os.stat(p).st_mtime_ns) for p in glob.glob("/etc/apt/sources.list*")
                        + glob.glob("/etc/apt/sources.list.d/*"))

        done = box.embedded("fetch")
        self.assertEqual(done.returncode, 0, done.stdout + done.stderr)
        self.assertIn("added deb-src entries to %s" % box.written, done.stdout)
        self.assertTrue(box.source_targets())
        stamps = glob.glob(os.path.join(box.out, "uwsgi-*", ".forksafe-source"))
        self.assertEqual(len(stamps), 1, done.stdout)
        with open(stamps[0]) as f:
            _, _, tarball, sha256 = f.read().split()
        with open(os.path.join(box.out, tarball), "rb") as f:
            self.assertEqual("sha256:" + hashlib.sha256(f.read()).hexdigest(), sha256)
        self.assertTrue(os.path.isfile(os.path.join(os.path.dirname(stamps[0]), "uwsgiconfig.py")))

        # idempotent: nothing fetched or written again
        again = box.embedded("fetch")
        self.assertEqual((again.returncode, again.stdout, again.stderr), (0, "", ""))
        after = sorted((p, os.stat(p).st_mtime_ns) for p in glob.glob("/etc/apt/sources.list*")
                       + glob.glob("/etc/apt/sources.list.d/*"))
        self.assertEqual(before, after, "the machine's apt configuration was touched")
