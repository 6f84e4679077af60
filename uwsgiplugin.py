# Build description for uWSGI's own build system: used by
# `uwsgi --build-plugin /path/to/forksafe` and by embedded (monolithic)
# builds.  `make` builds the same sources without it.
import glob
import os
import subprocess

NAME = 'forksafe'

here = os.path.dirname(os.path.abspath(__file__))


def pkg_config(*args):
    try:
        return subprocess.check_output(['pkg-config', *args, 'jansson']).decode().split()
    except (OSError, subprocess.CalledProcessError):
        return []


CFLAGS = ['-I%s/include' % here, '-I%s/lib' % here] + pkg_config('--cflags')
LDFLAGS = []
LIBS = (pkg_config('--libs') or ['-ljansson']) + ['-ldl']
GCC_LIST = ['forksafe_plugin'] + sorted(
    os.path.relpath(path, here)[:-2] for path in glob.glob(os.path.join(here, 'lib', '*.c')))
