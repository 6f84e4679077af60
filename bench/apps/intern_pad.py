"""Imported in the master by the spawn benchmark's callgrind pass: interns
$FORKSAFE_BENCH_PAD extra strings.

A worker that interns a few new strings (uWSGI's python plugin imports
random in every new worker) may push the interpreter's table of interned
strings over its resize threshold and copy the whole table: ~370,000
instructions, decided by how many strings the master happened to intern.
Instances with different paddings put that threshold at different places,
so that the median over them measures the variant rather than the luck of
one process image."""
import os
import sys

_padding = [sys.intern("forksafe_bench_padding_%d" % i)
            for i in range(int(os.environ.get("FORKSAFE_BENCH_PAD", "0")))]
