"""``--http HOST:PORT``: ``/healthz`` (200 ok / 503 with the reason) and Prometheus ``/metrics``.

No patient data is served: counts, queue depths, spool size and latency histograms only.
Bind it to a loopback or management address; it has no authentication.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

CONTENT_TYPE_METRICS = "text/plain; version=0.0.4; charset=utf-8"


class StatusServer:
    """A small threaded HTTP server in the background."""

    def __init__(self, address: tuple[str, int], health: Callable[[], str | None], metrics: Callable[[], str]) -> None:
        handler = _handler(health, metrics)
        self.server = ThreadingHTTPServer(address, handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, name="medclear-http", daemon=True)

    @property
    def port(self) -> int:
        return self.server.server_address[1]

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _handler(health: Callable[[], str | None], metrics: Callable[[], str]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            path = self.path.split("?", 1)[0]
            if path == "/healthz":
                problem = health()
                self._send(503 if problem else 200, f"{problem or 'ok'}\n", "text/plain; charset=utf-8")
            elif path == "/metrics":
                self._send(200, metrics(), CONTENT_TYPE_METRICS)
            else:
                self._send(404, "not found: try /healthz or /metrics\n", "text/plain; charset=utf-8")

        def _send(self, code: int, body: str, content_type: str) -> None:
            data = body.encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:  # scrapes are not worth a log line each
            pass

    return Handler
