"""simple_app with a uwsgidecorators @postfork hook doing bench_handlers.work."""
from uwsgidecorators import postfork

import bench_handlers
from simple_app import application  # noqa: F401 - the WSGI callable uWSGI serves


@postfork
def after_fork():
    bench_handlers.work()
