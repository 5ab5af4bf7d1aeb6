"""The emulators' HTTP server: a client killed mid-request prints nothing, other errors do."""

from __future__ import annotations

import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler

import pytest

from skyfleet.testing.net import LoopbackHTTPServer

pytestmark = pytest.mark.unit


class Boom(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/boom":
            raise RuntimeError("a bug in the emulator")
        self.rfile.read(1 << 20)  # waits for a body that never comes: the client is killed

    def log_message(self, format: str, *args: object) -> None:
        pass


def request(port: int, path: str, *, reset: bool) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n".encode())
        if reset:  # as a SIGKILLed process's socket: RST, not FIN
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        time.sleep(0.2)


@pytest.mark.parametrize(("path", "printed"), [("/", False), ("/boom", True)])
def test_a_killed_client_prints_no_traceback_but_an_emulator_bug_does(
    capsys: pytest.CaptureFixture[str], path: str, printed: bool
) -> None:
    server = LoopbackHTTPServer(("127.0.0.1", 0), Boom)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        request(server.server_address[1], path, reset=True)
        time.sleep(0.3)
    finally:
        server.shutdown()
        server.server_close()
    assert ("Traceback" in capsys.readouterr().err) is printed
