"""A throw-away PostgreSQL cluster for the integration tests.

    with PostgresCluster() as pg:           # or: pg = PostgresCluster(); pg.start()
        url = pg.create_database("app")     #     testcase.addClassCleanup(pg.stop)
        ...

`start()` runs Debian's PostgreSQL binaries (initdb, pg_ctl; the newest major
version installed) as the unprivileged `postgres` system user (`runuser -u
postgres --` when we are root; directly when we are not), in a fresh temp dir
owned by that user:
trust authentication, listening only on 127.0.0.1 on a free port, the unix
socket in the temp dir, fsync off.  `stop()` runs `pg_ctl stop -m fast` (and
SIGKILLs the postmaster by the pid in its own pidfile if that fails), then
removes the dir; it is idempotent and runs even when `start()` failed half
way, so register it as a cleanup *before* starting.

Nothing is skipped: when PostgreSQL cannot start, `start()` raises
PostgresError with the command, its output and the server log.
"""

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time

from harness import free_port



def _newest_bindir():
    """Debian installs each major version under /usr/lib/postgresql/N
    (15 on Debian 12, 17 on Debian 13): the newest one installed."""
    versions = []
    for name in os.listdir("/usr/lib/postgresql") if os.path.isdir("/usr/lib/postgresql") else ():
        if name.isdigit():
            versions.append(int(name))
    return "/usr/lib/postgresql/%d/bin" % max(versions) if versions else "/usr/lib/postgresql/15/bin"


BINDIR = os.environ.get("FORKSAFE_PG_BINDIR") or _newest_bindir()
SYSTEM_USER = "postgres"
SUPERUSER = "postgres"


class PostgresError(RuntimeError):
    pass


class PostgresCluster:
    def __init__(self, bindir=BINDIR, start_timeout=60):
        self.bindir = bindir
        self.start_timeout = start_timeout
        self.dir = None
        self.data = None
        self.log = None
        self.port = None
        self.host = "127.0.0.1"
        self.running = False
        self._as_root = os.geteuid() == 0

    # ------------------------------------------------------------ plumbing

    def _bin(self, name):
        return os.path.join(self.bindir, name)

    def _run(self, argv, timeout=120, check=True):
        """Runs a PostgreSQL binary as the postgres system user."""
        if self._as_root:
            argv = ["runuser", "-u", SYSTEM_USER, "--"] + argv
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, timeout=timeout, cwd=self.dir or "/",
                                  env=dict(os.environ, LC_ALL="C", LANG="C"))
        except FileNotFoundError as e:
            raise PostgresError("cannot run %s: %s (is Debian's postgresql installed?)"
                                % (argv[0], e)) from None
        except subprocess.TimeoutExpired as e:
            out = (e.output or b"").decode(errors="replace")
            raise PostgresError("%s timed out after %ss:\n%s%s"
                                % (" ".join(argv), timeout, out, self._log_tail())) from None
        out = proc.stdout.decode(errors="replace")
        if check and proc.returncode != 0:
            raise PostgresError("%s exited %d:\n%s%s"
                                % (" ".join(argv), proc.returncode, out, self._log_tail()))
        return out

    def _log_tail(self, size=4000):
        if not self.log:
            return ""
        try:
            with open(self.log, errors="replace") as f:
                text = f.read()
        except OSError:
            return ""
        return "\n--- server log (%s) ---\n%s" % (self.log, text[-size:])

    # ----------------------------------------------------------- lifecycle

    def start(self):
        if self.running:
            return self
        for name in ("initdb", "pg_ctl"):
            if not os.access(self._bin(name), os.X_OK):
                raise PostgresError("%s not found: install Debian's postgresql package "
                                    "(scripts/deps.sh does)" % self._bin(name))
        self.dir = tempfile.mkdtemp(prefix="forksafe-pg-")
        self.data = os.path.join(self.dir, "data")
        self.log = os.path.join(self.dir, "server.log")
        if self._as_root:
            try:
                user = pwd.getpwnam(SYSTEM_USER)
            except KeyError:
                raise PostgresError("no '%s' system user (Debian's postgresql-common creates it)"
                                    % SYSTEM_USER) from None
            os.chown(self.dir, user.pw_uid, user.pw_gid)
        os.chmod(self.dir, 0o700)
        self._run([self._bin("initdb"), "-D", self.data, "-A", "trust", "-U", SUPERUSER,
                   "-E", "UTF8", "--locale=C", "--no-sync"])
        self.port = free_port()
        with open(os.path.join(self.data, "postgresql.conf"), "a") as f:
            f.write("\n# forksafe test cluster\n"
                    "listen_addresses = '127.0.0.1'\n"
                    "port = %d\n"
                    "unix_socket_directories = '%s'\n"
                    "max_connections = 60\n"
                    "shared_buffers = 16MB\n"
                    "fsync = off\n"
                    "synchronous_commit = off\n"
                    "full_page_writes = off\n"
                    "log_min_messages = warning\n"
                    "log_connections = off\n" % (self.port, self.dir))
        # Whatever happens from here on, stop() must find a postmaster to stop.
        self.running = True
        self._run([self._bin("pg_ctl"), "-D", self.data, "-l", self.log, "-w",
                   "-t", str(self.start_timeout), "start"], timeout=self.start_timeout + 30)
        self._wait_accepting()
        return self

    def _wait_accepting(self):
        deadline = time.monotonic() + self.start_timeout
        last = None
        while time.monotonic() < deadline:
            try:
                self.execute("SELECT 1")
                return
            except Exception as e:  # noqa: BLE001 - any failure means "not yet"
                last = e
                time.sleep(0.1)
        raise PostgresError("PostgreSQL on 127.0.0.1:%s does not accept connections: %s%s"
                            % (self.port, last, self._log_tail()))

    def _postmaster_pid(self):
        try:
            with open(os.path.join(self.data, "postmaster.pid")) as f:
                return int(f.readline().strip())
        except (OSError, ValueError, TypeError):
            return None

    def stop(self):
        """Stops the server (fast) and removes the dir.  Idempotent."""
        try:
            if self.running and self.data and os.path.exists(self.data):
                try:
                    self._run([self._bin("pg_ctl"), "-D", self.data, "-m", "fast", "-w",
                               "-t", "30", "stop"], timeout=60, check=False)
                finally:
                    pid = self._postmaster_pid()
                    if pid is not None:
                        # pg_ctl failed to stop it: the postmaster we started, by its pid
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                        deadline = time.monotonic() + 10
                        while time.monotonic() < deadline:
                            try:
                                os.kill(pid, 0)
                            except ProcessLookupError:
                                break
                            time.sleep(0.05)
        finally:
            self.running = False
            if self.dir:
                shutil.rmtree(self.dir, ignore_errors=True)
                self.dir = None

    def __enter__(self):
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc):
        self.stop()
        return False

    # ------------------------------------------------------------- clients

    def dsn(self, database="postgres"):
        return "host=%s port=%d user=%s dbname=%s" % (self.host, self.port, SUPERUSER, database)

    def url(self, database="postgres"):
        """The SQLAlchemy URL (psycopg2 driver) of DATABASE over TCP."""
        return "postgresql+psycopg2://%s@%s:%d/%s" % (SUPERUSER, self.host, self.port, database)

    def connect(self, database="postgres"):
        import psycopg2

        conn = psycopg2.connect(self.dsn(database), connect_timeout=5)
        conn.autocommit = True
        return conn

    def execute(self, sql, params=None, database="postgres"):
        """Runs one statement in its own connection; returns all rows (or None)."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else None
        finally:
            conn.close()

    def create_database(self, name):
        """Creates DATABASE NAME; returns its SQLAlchemy URL."""
        self.execute('CREATE DATABASE "%s"' % name.replace('"', '""'))
        return self.url(name)

    def backends(self, database):
        """The pids of the client backends connected to DATABASE (not our own)."""
        rows = self.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s "
                            "AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
                            (database,))
        return sorted(r[0] for r in rows)
