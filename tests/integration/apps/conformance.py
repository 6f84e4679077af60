"""The conformance handler: records every event it gets, whatever the
server, one JSON line per event into settings['conformance_log']."""
import json
import os


def record(payload):
    line = json.dumps(payload, sort_keys=True) + "\n"
    fd = os.open(payload["settings"]["conformance_log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)
