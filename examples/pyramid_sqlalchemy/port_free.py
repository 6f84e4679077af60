"""port_free.py HOST:PORT WHERE -- exits 1 with one clear line when HOST:PORT
cannot be bound (as a server binds it: SO_REUSEADDR), so `make run` says
why before starting a server that would only print a bind() error among its
start-up lines and exit.  WHERE says where the address is set."""

import socket
import sys


def main(address, where):
    host, port = address.rsplit(":", 1)
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as e:
            sys.exit("make run: cannot serve on %s: %s (is another server running there? "
                     "stop it, or change the address in %s)" % (address, e.strerror, where))


if __name__ == "__main__":
    main(*sys.argv[1:3])
