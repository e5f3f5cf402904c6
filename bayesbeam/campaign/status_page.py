"""The control room's status page: a read-only HTTP server on 127.0.0.1 (stdlib ``ThreadingHTTPServer``).

``GET /`` the page (``status_static/index.html``, its script and style beside it; nothing is fetched from
elsewhere: the Content-Security-Policy allows this server only), ``GET /status.json`` the status
(``bayesbeam.campaign.status``); the page fetches it every 2 s (``?refresh=S`` in the page's address sets
another period, s) and renders it with ``textContent`` only, so no text from the queue or the catalog is
ever read as HTML. ``GET`` and ``HEAD`` only: any other method is refused (405). Requests whose ``Host`` is
not a loopback name are refused (403: a page elsewhere cannot read it through DNS rebinding); reach it from
another machine through an ssh tunnel. ``serve_status`` runs it in a daemon thread: a viewer, or a failing
gather (500 with one line), never blocks or breaks the program serving it.
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

STATIC = Path(__file__).with_name("status_static")
ASSETS = {"/": ("index.html", "text/html; charset=utf-8"), "/index.html": ("index.html", "text/html; charset=utf-8"),
          "/status.js": ("status.js", "text/javascript; charset=utf-8"),
          "/status.css": ("status.css", "text/css; charset=utf-8")}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; "
       "base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]")
DEFAULT_PORT = 60630  # beside bluesky-queueserver's 60615 (control), 60625 (info) and bluesky-httpserver's 60610


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = "bayesbeam-status"
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass  # quiet: the campaign's output is for the campaign

    def _send(self, code: int, body: bytes, content_type: str, head_only: bool = False, **headers: str) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Content-Security-Policy", CSP)
        for key, value in headers.items():
            self.send_header(key.replace("_", "-"), value)
        self.end_headers()
        if not head_only:
            self.wfile.write(body)

    def _text(self, code: int, text: str, head_only: bool = False, **headers: str) -> None:
        self._send(code, (text + "\n").encode(), "text/plain; charset=utf-8", head_only, **headers)

    def _loopback_host(self) -> bool:
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return name in LOOPBACK_NAMES

    def do_GET(self, head_only: bool = False) -> None:  # noqa: N802 - http.server's name
        if not self._loopback_host():
            return self._text(403, "this page answers to 127.0.0.1 / localhost only", head_only)
        path = self.path.split("?", 1)[0].split("#", 1)[0]
        if path == "/status.json":
            try:
                body = json.dumps(self.server.source.get(), allow_nan=False).encode()
            except Exception as exc:  # a bug in a gather must not take the server down
                return self._send(500, json.dumps({"error": f"{type(exc).__name__}: {exc}"[:300]}).encode(),
                                  "application/json", head_only)
            return self._send(200, body, "application/json", head_only)
        if path in ASSETS:
            name, content_type = ASSETS[path]
            return self._send(200, (STATIC / name).read_bytes(), content_type, head_only)
        return self._text(404, f"no {path} here: the page is at /", head_only)

    def do_HEAD(self) -> None:  # noqa: N802
        self.do_GET(head_only=True)

    def _refuse(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if 0 < length <= 1 << 20:
            self.rfile.read(length)  # drain a small body, so the answer is read rather than a reset
        self._text(405, f"{self.command} refused: this status page is read-only", Allow="GET, HEAD",
                   Connection="close")
        self.close_connection = True

    def __getattr__(self, name: str):
        if name.startswith("do_"):  # POST, PUT, DELETE, PATCH, OPTIONS, anything: 405, not 501
            return self._refuse
        raise AttributeError(name)


class StatusServer(ThreadingHTTPServer):
    """The page on 127.0.0.1:``port`` (0: a free port; ``url`` says which), serving ``source.get()``."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, source, port: int = 0):
        super().__init__(("127.0.0.1", int(port)), _Handler)
        self.source = source
        self.port = self.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._thread: threading.Thread | None = None

    def handle_error(self, request, client_address) -> None:
        import sys

        if not isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):  # a viewer that went away
            super().handle_error(request, client_address)

    def start(self) -> StatusServer:
        """Serve in a daemon thread (it never keeps the program alive)."""
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.5},
                                        name=f"status page {self.port}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        if self._thread is not None:
            self.shutdown()  # only a started server: shutdown() waits for serve_forever
            self._thread.join(timeout=5)
        self.server_close()
        self.source.close()


def serve_status(source, port: int = 0) -> StatusServer:
    """``StatusServer(source, port)`` started; ``OSError`` (e.g. the port is taken) before any thread starts."""
    return StatusServer(source, port).start()
