"""What the Hub double and the S3 proxy share as loopback HTTP servers: a threaded server that can
end its open keep-alive connections on stop, run on a daemon thread, and a CLI that serves until
SIGTERM or SIGINT."""

from __future__ import annotations

import contextlib
import signal
import socket
import socketserver
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class ConnectionTrackingServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer that knows its open connections.

    `shutdown()` only stops accepting: an idle keep-alive connection would go on answering after
    the server was stopped, so `stop_serving` shuts every tracked connection down as well. Handlers
    call `track` in `setup()` and `untrack` in `finish()`.
    """

    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler_class: type[BaseHTTPRequestHandler]) -> None:
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__(address, handler_class)

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host's FQDN, which can stall without DNS; skip it.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def track(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.add(connection)

    def untrack(self, connection: socket.socket) -> None:
        with self._open_lock:
            self._open.discard(connection)

    def close_open_connections(self) -> None:
        with self._open_lock:
            connections = list(self._open)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


def serve_in_thread(server: socketserver.BaseServer, name: str, poll_interval: float) -> threading.Thread:
    thread = threading.Thread(
        target=server.serve_forever, kwargs={"poll_interval": poll_interval}, name=name, daemon=True
    )
    thread.start()
    return thread


def stop_serving(server: ConnectionTrackingServer, thread: threading.Thread | None, timeout: float) -> None:
    server.shutdown()
    server.close_open_connections()
    server.server_close()
    if thread is not None:
        thread.join(timeout=timeout)


def stop_requested() -> threading.Event:
    """An event set on SIGTERM or SIGINT, for the main thread of a `python -m` server to wait on.

    Installed before the server announces its URL, so a parent that stops it right after reading
    the URL still gets a clean stop.
    """
    stopped = threading.Event()

    def request_stop(signum: int, frame: object) -> None:
        stopped.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    return stopped
