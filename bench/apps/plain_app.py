"""postfork_app without its @postfork hook: the same modules loaded in the
master (uwsgidecorators brings threading), so a forksafe python: handler
and a uwsgidecorators @postfork are compared on the same process image."""
import uwsgidecorators  # noqa: F401 - loaded only for the modules it imports

import bench_handlers  # noqa: F401
from simple_app import application  # noqa: F401 - the WSGI callable uWSGI serves
