"""Servers the tests start on 127.0.0.1: a folder over http, and a proxy that cuts uploads off or refuses them."""

from __future__ import annotations

import contextlib
import functools
import http.client
import http.server
import socket
import threading
import urllib.parse
from pathlib import Path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve_folder(folder: Path) -> http.server.ThreadingHTTPServer:
    """A running http server on 127.0.0.1 for `folder` (shut it down when done)."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


class _HoldingProxy(http.server.BaseHTTPRequestHandler):
    """Forwards HTTP requests to `server.target`; lets `server.allow` requests that complete an
    object through (a PUT of a whole object, or the POST that completes a multipart upload; the
    parts of a multipart upload always pass), and holds every later one unanswered (sets
    `server.held`) until `server.release` is set, then drops the connection. The first
    `server.refuse` of those requests are answered 403 AccessDenied instead, which no S3 client
    retries (counted in `server.refused`)."""

    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def completes_an_object(self) -> bool:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        return (self.command == "PUT" and "partNumber" not in query) or (self.command == "POST" and "uploadId" in query)

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        if self.completes_an_object():
            with self.server.lock:
                refuse = self.server.refused < self.server.refuse
                self.server.refused += refuse
                hold = not refuse and self.server.puts >= self.server.allow
                if not hold and not refuse:
                    self.server.puts += 1
            if refuse:
                error = b"<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code></Error>"
                self.send_response(403)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(error)))
                self.end_headers()
                self.wfile.write(error)
                return
            if hold:
                self.server.held.set()
                self.server.release.wait(600)
                self.close_connection = True
                return
        upstream = http.client.HTTPConnection(*self.server.target, timeout=60)
        upstream.request(self.command, self.path, body=body, headers=dict(self.headers))
        answer = upstream.getresponse()
        data = answer.read()
        self.send_response(answer.status)
        for key, value in answer.getheaders():
            if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                self.send_header(key, value)
        self.send_header("Content-Length", answer.getheader("Content-Length") or str(len(data)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        upstream.close()

    do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = forward


@contextlib.contextmanager
def holding_proxy(target_url: str, allow: int, refuse: int = 0):
    """A proxy on 127.0.0.1 in front of `target_url` that lets `allow` objects be stored and hangs
    on every later one: an upload cut off part way, deterministically; the first `refuse` uploads
    are refused (403) first. Yields the server (`.url`, `.held`: an Event set when it first holds
    one, `.refused`)."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _HoldingProxy)
    server.daemon_threads = False  # server_close() then waits for uploads still being forwarded
    parsed = urllib.parse.urlsplit(target_url)
    server.target = (parsed.hostname, parsed.port)
    server.allow, server.puts, server.lock = allow, 0, threading.Lock()
    server.refuse, server.refused = refuse, 0
    server.held, server.release = threading.Event(), threading.Event()
    server.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.release.set()
        server.shutdown()
        server.server_close()
