# Build description for uWSGI's own build system: used by
# `uwsgi --build-plugin /path/to/forksafe` and by embedded (monolithic)
# builds (`embedded_plugins = python, forksafe=/path/to/forksafe` in a
# buildconf profile).  `make` builds the same sources without it.
import glob
import os
import subprocess
import sys

NAME = 'forksafe'


def plugin_dir():
    """This directory, absolute: CFLAGS must name include/ and lib/ from
    whatever directory uWSGI builds in."""
    try:
        return os.path.dirname(os.path.abspath(__file__))
    except NameError:
        pass
    # uwsgiconfig.py exec()s this file without __file__; the function doing
    # so holds the plugin directory in its local `path`.
    frame = sys._getframe(1)
    while frame is not None:
        path = frame.f_locals.get('path')
        if isinstance(path, str) and os.path.isfile(os.path.join(path, 'uwsgi', 'plugin.c')):
            return os.path.abspath(path)
        frame = frame.f_back
    raise RuntimeError('forksafe uwsgiplugin.py: cannot tell which directory it was loaded from')


def pkg_config(*args):
    try:
        return subprocess.check_output(['pkg-config', *args, 'jansson']).decode().split()
    except (OSError, subprocess.CalledProcessError):
        return []


here = plugin_dir()
# Hidden by default, as in `make`: only what include/forksafe.h declares
# (FORKSAFE_EXPORT) and the plugin struct are exported, also from a
# monolithic uwsgi, which exports its symbols (-rdynamic).
CFLAGS = ['-I%s/include' % here, '-I%s/lib' % here, '-I%s/uwsgi' % here, '-fvisibility=hidden'] + pkg_config('--cflags')
# lib/child_page.ld: what a new child writes of forksafe's static data on
# one page of its own (as `make` links it); a copy of the sources without
# it still builds, that section unaligned.
CHILD_PAGE_LD = os.path.join(here, 'lib', 'child_page.ld')
LDFLAGS = ['-Wl,-T,%s' % CHILD_PAGE_LD] if os.path.exists(CHILD_PAGE_LD) else []
LIBS = (pkg_config('--libs') or ['-ljansson']) + ['-ldl']
# The uWSGI glue (uwsgi/) and the core (lib/).
GCC_LIST = sorted(
    os.path.relpath(path, here)[:-2]
    for folder in ('uwsgi', 'lib') for path in glob.glob(os.path.join(here, folder, '*.c')))
