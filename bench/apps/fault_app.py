"""The spawn fault benchmark's app: answers "PID MINFLT", MINFLT being the
minor page faults its worker has taken since the fork (a forked child's
rusage starts at zero), read as it serves the request."""
import os
import resource


def application(environ, start_response):
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [("%d %d" % (os.getpid(), faults)).encode()]
