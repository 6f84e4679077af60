#!/usr/bin/python3
"""The version matrix: forksafe built and tested against the uWSGI and the
Python that each Debian release ships, each release in a root of its own.

    matrix.py [--rows debian13,sid] [--modules test_reasons,...]

Rows: Debian 12 is this machine (its suites run in `make check` anyway;
here only the compatibility check runs, for the table).  Debian 13 (trixie:
uWSGI 2.0.28, Python 3.13) and sid (uWSGI 2.0.31, Python 3.14) are roots
made with `debootstrap --variant=minbase` under build/matrix/SUITE, kept and
reused while their package list and ROOT_FORMAT stay the same.  In each:
the checkout is copied in, forksafe is built with that release's compiler
against its uWSGI, and the server suites run with its Python.  Then the
cross-loading check (tests/matrix/test_abi.py) and the table check
(tests/matrix/test_table.py).

Every mount (/proc, /dev) is made inside a private mount namespace
(`unshare --mount`) that ends with the command it runs: nothing stays
mounted after a run, also after a failure or a kill, and the host's /dev
never sees a mount or an unmount.  Processes a suite left running in a root
are killed by pid when it ends.

Like tests/run_suite.sh, each suite appends "NAME PASSED FAILED" to
build/results.txt and what failed to build/failures.txt; the compatibility
check's findings go to build/matrix/compat-ROW.json.

Environment: FORKSAFE_MATRIX_MIRROR (default http://deb.debian.org/debian),
FORKSAFE_MATRIX_DIR (default build/matrix), PYTHON (default /usr/bin/python3).
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
CHECKOUT = os.path.dirname(os.path.dirname(HERE))
BUILD = os.path.join(CHECKOUT, "build")
MATRIX_DIR = os.path.abspath(os.environ.get("FORKSAFE_MATRIX_DIR") or os.path.join(BUILD, "matrix"))
MIRROR = os.environ.get("FORKSAFE_MATRIX_MIRROR", "http://deb.debian.org/debian")
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")

# Bumped when the way a root is made changes, so old roots are remade.
ROOT_FORMAT = 1

# What building forksafe and running the row's suites needs, from the
# release's own archive.  No recommends: the list is the whole of it.
PACKAGES = [
    "build-essential", "pkg-config", "libjansson-dev",
    "uwsgi-core", "uwsgi-dev", "uwsgi-plugin-python3",
    "python3", "python3-pastedeploy", "python3-pyramid", "python3-uwsgidecorators",
    "gunicorn", "python3-sqlalchemy", "python3-psycopg2", "postgresql",
    "python3-celery", "python3-prometheus-client",
]


class Row:
    def __init__(self, name, suite, label):
        self.name = name      # the results' suite names: matrix-NAME
        self.suite = suite    # the Debian suite debootstrap makes
        self.label = label

    @property
    def root(self):
        return os.path.join(MATRIX_DIR, self.suite)


ROWS = [
    Row("debian13", "trixie", "Debian 13 (trixie)"),
    Row("sid", "sid", "Debian sid"),
]
HOST_ROW = "debian12"

# The suites each root runs (tests/integration modules): the lifecycle,
# Python handlers, pyramid_forksafe, gunicorn, the fault matrix, the set-ups
# refused at start-up, the compatibility check the table is made from, fork
# hazards (uWSGI's threads and Python's thread names differ by release), and
# os.register_at_fork handlers under gunicorn (the Celery half of that module
# needs redis-server, which the roots do not have, as test_celery does), and
# recipe:sqlalchemy on PostgreSQL (SQLAlchemy 2.0 there, 1.4 here).
INTEGRATION_MODULES = ["test_compat", "test_lifecycle", "test_python", "test_pyramid",
                       "test_gunicorn", "test_faults", "test_mismatch", "test_attribution",
                       "test_reasons", "test_hazards", "test_python_atfork",
                       "test_atfork_servers.GunicornAtForkTest", "test_postgres",
                       "test_fast_respawn"]

ROW_TIMEOUT = 40 * 60
PROVISION_TIMEOUT = 20 * 60


class MatrixError(Exception):
    pass


def say(text):
    print("matrix: %s" % text, flush=True)


# ------------------------------------------------------------- processes

def processes_in(root):
    """Pids of the processes whose root directory is ROOT."""
    try:
        want = os.stat(root)
    except FileNotFoundError:
        return []
    pids = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            st = os.stat("/proc/%s/root" % name)
        except OSError:
            continue
        if (st.st_dev, st.st_ino) == (want.st_dev, want.st_ino):
            pids.append(int(name))
    return pids


def kill_processes_in(root):
    """SIGKILLs what still runs in ROOT (a suite's leftovers, or everything
    after a timeout), by pid, and waits until it is gone."""
    for _ in range(100):
        pids = processes_in(root)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    raise MatrixError("processes in %s survive SIGKILL: %s" % (root, processes_in(root)))


def mounts_under(path):
    prefix = os.path.realpath(path).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].replace("\\040", " ")
            if point.startswith(prefix) or point == prefix.rstrip("/"):
                found.append(point)
    return found


def in_root(root, argv, timeout, env=None, log=None):
    """Runs ARGV chrooted into ROOT with /proc and /dev mounted in a private
    mount namespace; returns its exit status (124 on timeout)."""
    script = ('mount -t proc proc "$1/proc" && mount --rbind /dev "$1/dev" && '
              'exec chroot "$@"')
    environment = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                   "HOME": "/root", "LANG": "C.UTF-8", "TERM": "dumb",
                   "DEBIAN_FRONTEND": "noninteractive"}
    environment.update(env or {})
    proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "--",
                             "/bin/sh", "-c", script, "sh", root] + list(argv),
                            env=environment, stdin=subprocess.DEVNULL, stdout=log,
                            stderr=subprocess.STDOUT if log else None, start_new_session=True)
    try:
        status = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        say("%s did not end within %d s: killing it" % (" ".join(argv), timeout))
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        status = 124
    finally:
        kill_processes_in(root)
    leftover = mounts_under(root)
    if leftover:
        raise MatrixError("mounts left under %s: %s" % (root, leftover))
    return status


# ----------------------------------------------------------------- roots

def remove_root(path):
    if not os.path.lexists(path):
        return
    kill_processes_in(path)
    if mounts_under(path):
        raise MatrixError("will not remove %s: something is mounted under it: %s"
                          % (path, mounts_under(path)))
    # --one-file-system: never follow into anything mounted there after all
    subprocess.run(["rm", "-rf", "--one-file-system", path], check=True)


def root_recipe(row):
    return json.dumps({"format": ROOT_FORMAT, "suite": row.suite, "mirror": MIRROR,
                       "packages": PACKAGES}, sort_keys=True)


def ensure_root(row):
    """The row's root, made (or remade) when its recipe changed."""
    stamp = os.path.join(row.root, ".forksafe-root")
    try:
        with open(stamp) as f:
            if f.read() == root_recipe(row):
                say("%s: reusing %s" % (row.name, row.root))
                return
    except OSError:
        pass
    if not shutil.which("debootstrap"):
        raise MatrixError("debootstrap not found (apt-get install debootstrap; scripts/deps.sh does)")
    fresh = row.root + ".new"
    remove_root(row.root)
    remove_root(fresh)
    os.makedirs(MATRIX_DIR, exist_ok=True)
    started = time.monotonic()
    say("%s: debootstrap --variant=minbase %s %s %s" % (row.name, row.suite, fresh, MIRROR))
    log_path = os.path.join(MATRIX_DIR, "%s-root.log" % row.suite)
    with open(log_path, "wb") as log:
        # debootstrap mounts /proc in the target itself: in a private
        # namespace, so that a failure half way leaves nothing mounted here.
        status = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                                 "debootstrap", "--variant=minbase", row.suite, fresh, MIRROR],
                                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                timeout=PROVISION_TIMEOUT).returncode
        if status != 0:
            raise MatrixError("debootstrap %s failed (status %d): see %s"
                              % (row.suite, status, log_path))
        # A frozen or slow mirror's Release file may be past its Valid-Until
        # (sid's is valid for a week); services must not start in a root.
        with open(os.path.join(fresh, "etc/apt/apt.conf.d/99forksafe-matrix"), "w") as f:
            f.write('Acquire::Check-Valid-Until "false";\nAPT::Install-Recommends "false";\n')
        policy = os.path.join(fresh, "usr/sbin/policy-rc.d")
        with open(policy, "w") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
        shutil.copy("/etc/resolv.conf", os.path.join(fresh, "etc/resolv.conf"))
        say("%s: apt-get install %d packages" % (row.name, len(PACKAGES)))
        log.flush()
        status = in_root(fresh, ["/bin/sh", "-c", "apt-get update -qq && apt-get install -y -qq "
                                 + " ".join(PACKAGES)], PROVISION_TIMEOUT, log=log)
        if status != 0:
            raise MatrixError("installing the packages in the %s root failed (status %d): see %s"
                              % (row.suite, status, log_path))
    with open(os.path.join(fresh, ".forksafe-root"), "w") as f:
        f.write(root_recipe(row))
    os.rename(fresh, row.root)
    say("%s: root ready in %.0f s" % (row.name, time.monotonic() - started))


def checkout_files():
    """The files of the checkout, as git sees them (tracked, and new files
    not ignored), or everything but build/ outside git."""
    try:
        out = subprocess.run(["git", "-C", CHECKOUT, "ls-files", "-z", "--cached", "--others",
                              "--exclude-standard"], stdout=subprocess.PIPE,
                             stderr=subprocess.DEVNULL, check=True).stdout
        return [p for p in out.decode().split("\0") if p and os.path.isfile(os.path.join(CHECKOUT, p))]
    except (OSError, subprocess.CalledProcessError):
        files = []
        for top, dirs, names in os.walk(CHECKOUT):
            dirs[:] = [d for d in dirs if os.path.join(top, d) != BUILD and d != ".git"]
            files += [os.path.relpath(os.path.join(top, n), CHECKOUT) for n in names]
        return files


def copy_checkout(row):
    target = os.path.join(row.root, "forksafe")
    if os.path.lexists(target):
        subprocess.run(["rm", "-rf", "--one-file-system", target], check=True)
    for path in checkout_files():
        destination = os.path.join(target, path)
        os.makedirs(os.path.dirname(destination), exist_ok=True)
        shutil.copy2(os.path.join(CHECKOUT, path), destination)


# ---------------------------------------------------------------- results

def append_results(results_text, failures_text):
    os.makedirs(BUILD, exist_ok=True)
    with open(os.path.join(BUILD, "results.txt"), "a") as f:
        f.write(results_text)
    if failures_text:
        with open(os.path.join(BUILD, "failures.txt"), "a") as f:
            f.write(failures_text)


def count_failure(suite, why):
    print("!! %s: %s" % (suite, why), flush=True)
    append_results("%s 0 1\n" % suite, "%s: %s\n" % (suite, why))


def read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def run_row(row, modules=None):
    suite = "matrix-" + row.name
    print("=== suite: %s (%s)" % (suite, row.label), flush=True)
    try:
        ensure_root(row)
        copy_checkout(row)
    except (MatrixError, OSError, subprocess.SubprocessError) as e:
        count_failure(suite, "no %s root: %s" % (row.suite, e))
        return
    inside = os.path.join(row.root, "forksafe")
    script = (
        "cd /forksafe && uwsgi --version && python3 --version && "
        "make -s PYTHON=/usr/bin/python3 forksafe_plugin.so build/libforksafe.so fixtures || "
        "{ echo 'matrix: the build failed'; exit 3; }; "
        "PYTHON=/usr/bin/python3 FORKSAFE_COMPAT_OUT=/forksafe/build/compat.json "
        "tests/run_suite.sh %s tests/integration %s; "
        "%s exit 0"
        % (suite, " ".join(modules or INTEGRATION_MODULES),
           "" if modules else "PYTHON=/usr/bin/python3 tests/run_suite.sh %s-python python/tests;"
           % suite))
    started = time.monotonic()
    status = in_root(row.root, ["/bin/sh", "-c", script], ROW_TIMEOUT)
    say("%s: %.0f s in the root" % (row.name, time.monotonic() - started))
    results = read(os.path.join(inside, "build/results.txt"))
    append_results(results, read(os.path.join(inside, "build/failures.txt")))
    if status == 3:
        count_failure(suite, "forksafe does not build in the %s root" % row.suite)
    elif status != 0:
        count_failure(suite, "the %s root's run ended with status %d" % (row.suite, status))
    elif not results.strip():
        count_failure(suite, "the %s root's run recorded no results" % row.suite)
    compat = os.path.join(inside, "build/compat.json")
    if os.path.exists(compat):
        shutil.copy(compat, os.path.join(MATRIX_DIR, "compat-%s.json" % row.name))


def run_host_row():
    """Debian 12 is this machine: its compatibility check, for the table."""
    os.makedirs(MATRIX_DIR, exist_ok=True)
    env = dict(os.environ, PYTHON=PYTHON,
               FORKSAFE_COMPAT_OUT=os.path.join(MATRIX_DIR, "compat-%s.json" % HOST_ROW))
    subprocess.run([os.path.join(CHECKOUT, "tests/run_suite.sh"), "matrix-" + HOST_ROW,
                    "tests/integration", "test_compat"], cwd=CHECKOUT, env=env)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", default=",".join(r.name for r in ROWS),
                        help="comma-separated rows (default: all): %s"
                        % ", ".join(r.name for r in ROWS))
    parser.add_argument("--modules", default="",
                        help="comma-separated integration test modules to run in each root "
                        "(default: all of them, and python/tests)")
    args = parser.parse_args()
    modules = [name for name in args.modules.split(",") if name]
    wanted = [name for name in args.rows.split(",") if name]
    unknown = set(wanted) - {r.name for r in ROWS}
    if unknown:
        parser.error("no such row: %s" % ", ".join(sorted(unknown)))
    if os.geteuid() != 0:
        count_failure("matrix", "the matrix makes roots and chroots into them: run it as root")
        return 1
    for name in ("compat-%s.json" % r for r in [HOST_ROW] + [r.name for r in ROWS]):
        if os.path.exists(os.path.join(MATRIX_DIR, name)):
            os.unlink(os.path.join(MATRIX_DIR, name))
    run_host_row()
    for row in ROWS:
        if row.name in wanted:
            run_row(row, modules)
    env = dict(os.environ, PYTHON=PYTHON, FORKSAFE_MATRIX_ROWS=",".join(wanted))
    subprocess.run([os.path.join(CHECKOUT, "tests/run_suite.sh"), "matrix-checks",
                    "tests/matrix"], cwd=CHECKOUT, env=env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
