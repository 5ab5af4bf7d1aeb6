"""Loopback ports and the HTTP server for the emulators tests, benchmarks and the demo start."""

from __future__ import annotations

import contextlib
import socket
import sys
from http.server import ThreadingHTTPServer
from typing import Any

__all__ = ["LoopbackHTTPServer", "free_port", "free_ports"]


class LoopbackHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that does not print a traceback when a client goes away.

    Killed operators (the crash benchmark SIGKILLs hundreds) drop their connections mid-request;
    that is the client's business, not an error of the emulator, and the tracebacks buried the
    benchmark's own output. Every other error is reported as before.
    """

    daemon_threads = True
    request_queue_size = 256

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], ConnectionError):
            return
        super().handle_error(request, client_address)


def free_ports(count: int) -> list[int]:
    """Ports the kernel considers free now; held together so the answers differ from each other."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def free_port() -> int:
    return free_ports(1)[0]
