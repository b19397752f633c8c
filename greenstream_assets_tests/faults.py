"""A fault-injecting HTTP proxy in front of the S3 endpoint: real 503 SlowDown answers on the wire,
so botocore's own retry logic is what gets tested."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

SLOW_DOWN = (
    b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>SlowDown</Code>'
    b"<Message>Please reduce your request rate.</Message></Error>"
)


class FaultyS3Proxy:
    """Forwards every request to ``upstream``; the first ``failures`` GETs of each object whose key
    ends with a suffix in ``targets`` get 503 SlowDown instead."""

    def __init__(self, upstream: str, targets: dict[str, int]) -> None:
        self.upstream = urlparse(upstream)
        self.targets = targets
        self.injected: Counter[str] = Counter()
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # keep test output quiet
                pass

            def _forward(self) -> None:
                path = unquote(urlparse(self.path).path)
                if self.command == "GET":
                    for suffix, failures in proxy.targets.items():
                        if path.endswith(suffix):
                            with proxy.lock:
                                fail = proxy.injected[suffix] < failures
                                if fail:
                                    proxy.injected[suffix] += 1
                            if fail:
                                self.send_response(503)
                                self.send_header("Content-Type", "application/xml")
                                self.send_header("Content-Length", str(len(SLOW_DOWN)))
                                self.end_headers()
                                self.wfile.write(SLOW_DOWN)
                                return
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else None
                conn = http.client.HTTPConnection(proxy.upstream.hostname, proxy.upstream.port, timeout=60)
                headers = {k: v for k, v in self.headers.items() if k.lower() != "connection"}
                conn.request(self.command, self.path, body=body, headers=headers)
                reply = conn.getresponse()
                payload = reply.read()
                self.send_response(reply.status)
                for key, value in reply.getheaders():
                    if key.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)
                conn.close()

            do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _forward

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FaultyS3Proxy:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()
