"""simple_app with 100 more descriptors open in the master (files, which
are no fork hazard): what forksafe's look for hazards reads at each fork
grows with the master's descriptors, so bench/spawn.py prices it here."""
import os

from simple_app import application  # noqa: F401 - the WSGI callable uWSGI serves

_held = [os.open(os.devnull, os.O_RDONLY) for _ in range(100)]
