#!/usr/bin/env python3
"""A crash loop with and without forksafe: forksafe must add no work to it.

A mule that segfaults in another plugin's post_fork (the crasher fixture,
tests/fixtures/uwsgi/crasher_plugin.c, before forksafe's own post_fork ran)
is respawned by uWSGI's master again and again.  forksafe reports each
death as child-death (cause crash) and must neither speed the loop up (more
forks than bare: the master woken more often) nor slow the master down
(a stats read that waits on it).

Variants, taking turns round after round, each for the same window:
bare (python3 + the crasher), bare again (the noise floor), forksafe with
a native recorder on every event, forksafe with a python: recorder on every
event.  Per variant: mule forks in the window (uWSGI's own "spawned uWSGI
mule" lines) and the slowest of the stats reads made every half second
during it, as ratios against bare.
"""

import os
import time

from common import BUILD, HEADER, Uwsgi, env_int, median, read_socket, report, table, verdict

ROUNDS = env_int("BENCH_CRASH_ROUNDS", 3)
WINDOW = env_int("BENCH_CRASH_WINDOW", 6)
CRASHER = os.path.join(BUILD, "fixtures", "uwsgi", "crasher_plugin.so")

COMMON = HEADER + """processes = 2
wsgi-file = {test_apps}/simple_app.py
mule = {test_apps}/mule_loop.py
"""
SETTINGS = "\n[app:main]\nforksafe.event_log = {dir}/events.jsonl\npython_log = {dir}/py.jsonl\n"

VARIANTS = [
    ("bare", COMMON + "plugins = python3,%s\n" % CRASHER),
    ("bare, again", COMMON + "plugins = python3,%s\n" % CRASHER),
    ("forksafe dl: on *", COMMON + "plugins = python3,forksafe,%s\n" % CRASHER
     + "forksafe-settings = %p\nforksafe-subscribe = * dl:{event_log_so}:record\n" + SETTINGS),
    ("forksafe python: on *", COMMON + "plugins = python3,forksafe,%s\n" % CRASHER
     + "forksafe-settings = %p\nforksafe-subscribe = * python:handlers:record\n" + SETTINGS),
]


def one_window(name, body):
    u = Uwsgi(name, body.replace("disable-logging = true\n", "")).start()
    try:
        u.wait_ready()
        slowest = 0.0
        end = time.monotonic() + WINDOW
        while time.monotonic() < end:
            started = time.monotonic()
            read_socket(u.stats)
            slowest = max(slowest, time.monotonic() - started)
            time.sleep(0.5)
        forks = u.log_tail(10 ** 7).count("spawned uWSGI mule")
        return forks, slowest
    finally:
        u.stop()


def main():
    samples = {name: ([], []) for name, _ in VARIANTS}
    for _ in range(ROUNDS):
        for name, body in VARIANTS:
            forks, slowest = one_window(name, body)
            samples[name][0].append(forks)
            samples[name][1].append(slowest)
    base_forks = median(samples["bare"][0])
    base_read = median(samples["bare"][1])
    rows, worst = [], 0.0
    for name, _ in VARIANTS:
        forks, reads = median(samples[name][0]), median(samples[name][1])
        ratio = forks / base_forks if base_forks else float("nan")
        if name.startswith("forksafe"):
            worst = max(worst, ratio)
        rows.append((name, "%.1f" % forks, "%.2fx" % ratio, "%.1f ms" % (reads * 1000),
                     "%+.1f ms" % ((reads - base_read) * 1000)))
    text = ("Mule forks in a %d s window (median of %d rounds) and the slowest stats read "
            "during it.\n\n" % (WINDOW, ROUNDS))
    text += table(["variant", "mule forks", "vs bare", "slowest stats read", "vs bare"], rows)
    text += ("\n\nTarget: no more forks than bare (<= 1.10x, the noise floor): %s\n"
             % verdict(worst <= 1.10))
    report("crash_loop", "Crash loop", text)


if __name__ == "__main__":
    main()
