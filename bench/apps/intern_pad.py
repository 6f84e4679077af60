"""Imported in the master of every spawn-benchmark instance: interns
$FORKSAFE_BENCH_PAD extra strings.

A worker that interns a few new strings (uWSGI's python plugin imports
random in every new worker, and atexit as it exits) may push the
interpreter's table of interned strings over its resize threshold and copy
the whole table: ~1.5 ms and ~370,000 instructions, decided by how many
strings the master happened to intern.  Instances with different paddings
put that threshold at different places, so that a variant is measured
over several process images rather than by the luck of one."""
import os
import sys

_padding = [sys.intern("forksafe_bench_padding_%d" % i)
            for i in range(int(os.environ.get("FORKSAFE_BENCH_PAD", "0")))]
