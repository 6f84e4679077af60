"""python: handlers for the integration tests."""
import json
import os

not_callable = 42


def record(payload):
    """Appends the payload, one JSON line, to settings['python_log']."""
    line = json.dumps(payload, sort_keys=True) + "\n"
    fd = os.open(payload["settings"]["python_log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


def boom(payload):
    raise ValueError("boom on %s" % payload["event"])


class Nested:
    @staticmethod
    def handler(payload):
        record(payload)


def stop_at_respawn(payload):
    """Stops the instance (SIGINT to the master) when a worker is forked
    again: in pre-fork, a moment before the fork; in post-fork-parent, a
    moment after it."""
    child = payload["child"]
    if child["kind"] == "worker" and child["respawn"] >= 1:
        import signal
        os.kill(os.getpid(), signal.SIGINT)


def stop_at_mule_respawn(payload):
    """stop_at_respawn for a mule forked again."""
    child = payload["child"]
    if child["kind"] == "mule" and child["respawn"] >= 1:
        import signal
        os.kill(os.getpid(), signal.SIGINT)
