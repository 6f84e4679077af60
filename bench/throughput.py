#!/usr/bin/env python3
"""Request throughput: bare uWSGI vs uWSGI + forksafe with three
subscriptions, one request per connection (uWSGI's http-socket).  forksafe does nothing per request, so the target is
>= 0.99x of bare.  Each round runs Debian's wrk for BENCH_SECONDS against
each variant in turn (order alternating round to round)."""

import re
import subprocess
import sys

from common import THREE_SUBSCRIPTIONS, TWO_WORKERS, Uwsgi, env_int, median, report, table, verdict

SECONDS = env_int("BENCH_SECONDS", 4)
ROUNDS = env_int("BENCH_ROUNDS", 7)
CONNECTIONS = 8
TARGET = 0.99


VARIANTS = [
    ("bare", TWO_WORKERS + "plugins = python3\n"),
    ("forksafe, 3 subscriptions", TWO_WORKERS + THREE_SUBSCRIPTIONS),
]


def wrk(url, seconds=SECONDS):
    out = subprocess.run(["wrk", "-t1", "-c%d" % CONNECTIONS, "-d%ds" % seconds, url],
                         capture_output=True, text=True, timeout=seconds + 30)
    if out.returncode != 0:
        raise RuntimeError("wrk failed: %s" % out.stderr)
    # uWSGI's http-socket closes every connection after its answer, which
    # wrk counts as a read error; anything else is a real failure.
    errors = re.search(r"Socket errors: connect (\d+), read \d+, write (\d+), timeout (\d+)",
                       out.stdout)
    if "Non-2xx" in out.stdout or (errors and any(int(n) for n in errors.groups())):
        raise RuntimeError("wrk saw errors:\n%s" % out.stdout)
    return float(re.search(r"Requests/sec:\s*([0-9.]+)", out.stdout).group(1))


def main():
    servers = [Uwsgi(name, body).start() for name, body in VARIANTS]
    for u in servers:
        u.wait_ready()
    rates = {u.name: [] for u in servers}
    for u in servers:  # warm-up: every worker has served before measuring
        wrk("http://127.0.0.1:%d/" % u.port, seconds=1)
    for r in range(ROUNDS):
        order = servers if r % 2 == 0 else servers[::-1]
        for u in order:
            rates[u.name].append(wrk("http://127.0.0.1:%d/" % u.port))
        print("round %d: %s" % (r + 1, ", ".join("%s %.0f req/s" % (n, v[-1])
                                                for n, v in rates.items())), flush=True)
    for u in servers:
        u.stop()
    rows = []
    for name, values in rates.items():
        # paired: each round's ratio, so a load burst that hit one round
        # does not skew it; the result is their median
        per_round = [v / b for v, b in zip(values, rates["bare"])]
        ratio = median(per_round)
        target = "baseline" if name == "bare" else ">= %.2fx: %s" % (TARGET, verdict(ratio >= TARGET))
        rows.append((name, "%.0f" % median(values), "%.3fx" % ratio,
                     "%.3f-%.3f" % (min(per_round), max(per_round)), target))
    report("1-throughput", "Request throughput (wrk -t1 -c%d, %d rounds x %d s, 2 workers)"
           % (CONNECTIONS, ROUNDS, SECONDS),
           table(("variant", "median req/s", "median ratio", "per-round ratios", "target"), rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
