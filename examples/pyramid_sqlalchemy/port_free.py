"""port_free.py HOST:PORT INI -- exits 1 with one clear line when HOST:PORT
cannot be bound (as uWSGI would bind it: SO_REUSEADDR), so `make run` says
why before starting a server that would only print a bind() error among its
start-up lines and exit."""

import socket
import sys


def main(address, ini):
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            sys.exit("make run: cannot serve on %s: %s (is another server running there? "
                     "stop it, or change http-socket in %s)" % (address, e.strerror, ini))


if __name__ == "__main__":
    main(*sys.argv[1:3])
