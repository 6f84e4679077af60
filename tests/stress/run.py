"""make check-stress: the suites that start servers, run N times back to back
while tests/stress/load.py keeps every core busy; each failure is reported
with its test name and round, and the last line is "N passed, N failed"
over all rounds.

    run.py [--rounds N] [--suites "integration python embedded"] [--idle]
    run.py --modules "test_reasons test_attribution" [--rounds N] [--idle]
                                            those integration modules alone
    run.py --full [--rounds N] [--idle]     the whole `make check`, N times

A test that waits on time instead of on a state, or reads a file while
another process writes it, passes on an idle machine and fails here. --idle
runs the same rounds without the load, as the control.
"""

import argparse
import os
import re
import signal
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.path.join(ROOT, "build")
PYTHON = os.environ.get("PYTHON", "/usr/bin/python3")
# Every suite that starts a server, and where its tests are.
SUITES = {
    "integration": "tests/integration",
    "python": "python/tests",
    "embedded": "tests/embedded",
    "package": "tests/package",
    "differential": "tests/differential",
    "fresh": "tests/fresh",
}


class Load:
    """tests/stress/load.py in a session of its own: stopped by its pid, its
    process group killed after, and reaped."""

    def __init__(self, log):
        self.log = log
        # A new file: the wait below reads it for this generator's first line.
        out = open(log, "wb")
        self.proc = subprocess.Popen([PYTHON, os.path.join(ROOT, "tests", "stress", "load.py")],
                                     stdout=out, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        out.close()
        deadline = time.monotonic() + 30
        while "load:" not in self.text() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("the load generator exited at once:\n" + self.text())
            time.sleep(0.05)
        print(self.text().strip(), flush=True)

    def text(self):
        with open(self.log, errors="replace") as f:
            return f.read()

    def stop(self):
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.proc.poll() is None:
            self.proc.wait(timeout=30)
        return self.text().strip().splitlines()[-1]


def read_results():
    """[(suite, passed, failed)], [failure lines] of the round just run."""
    results, failures = [], []
    try:
        with open(os.path.join(BUILD, "results.txt")) as f:
            for line in f:
                suite, passed, failed = line.split()
                results.append((suite, int(passed), int(failed)))
    except FileNotFoundError:
        pass
    try:
        with open(os.path.join(BUILD, "failures.txt")) as f:
            failures = [line.rstrip("\n") for line in f if line.strip()]
    except FileNotFoundError:
        pass
    return results, failures


def run_round(number, options, log):
    for name in ("results.txt", "failures.txt"):
        try:
            os.unlink(os.path.join(BUILD, name))
        except FileNotFoundError:
            pass
    env = dict(os.environ, PYTHON=PYTHON)
    started = time.monotonic()
    with open(log, "ab") as out:
        if options.full:
            subprocess.run(["make", "--no-print-directory", "check"], cwd=ROOT, env=env,
                           stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        elif options.modules:
            subprocess.run(["tests/run_suite.sh", "integration", SUITES["integration"]]
                           + options.modules, cwd=ROOT, env=env, stdout=out,
                           stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        else:
            for suite in options.suites:
                subprocess.run(["tests/run_suite.sh", suite, SUITES[suite]], cwd=ROOT, env=env,
                               stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - started
    results, failures = read_results()
    if not results:
        failures.append("round %d: no suite reported a result (see %s)" % (number, log))
        results = [("none", 0, 1)]
    return seconds, results, failures


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=int(os.environ.get("STRESS_ROUNDS", "3")))
    parser.add_argument("--suites", default=os.environ.get("STRESS_SUITES",
                                                           "integration python embedded"))
    parser.add_argument("--full", action="store_true", help="each round is a whole make check")
    parser.add_argument("--idle", action="store_true", help="no load: the control run")
    parser.add_argument("--modules", default="", help="integration test modules alone")
    options = parser.parse_args()
    options.suites = options.suites.split()
    options.modules = options.modules.split()
    unknown = [s for s in options.suites if s not in SUITES]
    if unknown:
        parser.error("unknown suite(s) %s; known: %s" % (" ".join(unknown), " ".join(SUITES)))

    directory = os.path.join(BUILD, "stress")
    os.makedirs(directory, exist_ok=True)
    what = "make check" if options.full else "suites " + " ".join(options.suites)
    print("stress: %d round(s) of %s, %s" % (options.rounds, what,
                                             "idle" if options.idle else "under load"),
          flush=True)
    load = None if options.idle else Load(os.path.join(directory, "load.log"))
    rows, by_test = [], {}
    try:
        for number in range(1, options.rounds + 1):
            log = os.path.join(directory, "round-%d.log" % number)
            if os.path.exists(log):
                os.unlink(log)
            seconds, results, failures = run_round(number, options, log)
            passed = sum(p for _, p, _ in results)
            failed = sum(f for _, _, f in results)
            rows.append((number, seconds, passed, failed))
            print("stress: round %d: %d passed, %d failed in %dm%02ds (log: %s)"
                  % (number, passed, failed, seconds // 60, seconds % 60,
                     os.path.relpath(log, ROOT)), flush=True)
            for line in failures:
                print("  " + line, flush=True)
                name = re.sub(r"\s+", " ", line)
                by_test.setdefault(name, []).append(number)
    finally:
        if load is not None:
            print(load.stop(), flush=True)

    passed = sum(r[2] for r in rows)
    failed = sum(r[3] for r in rows)
    print("stress: %d round(s), %s" % (len(rows), ", ".join(
        "%dm%02ds" % (r[1] // 60, r[1] % 60) for r in rows)))
    if by_test:
        print("failed tests (rounds):")
        for name, rounds in sorted(by_test.items(), key=lambda item: -len(item[1])):
            print("  %s  (%s)" % (name, ", ".join(map(str, rounds))))
    print("%d passed, %d failed" % (passed, failed))
    return 0 if failed == 0 and passed > 0 else 1


if __name__ == "__main__":
    sys.exit(main())
