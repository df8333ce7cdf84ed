"""A webhook receiver on loopback that counts what escalation notifications deliver.

It checks each post's signature, and honours the `Idempotency-Key` the sender puts on every
attempt at one notification: the first delivery of a key is processed, a repeat (a sender
killed after sending and before recording it sends again when its lease ends) is answered 200
and dropped. `deliveries` counts every post per key, `processed` the keys acted on.
"""

from __future__ import annotations

import hmac
import json
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from escalation.notifications import sign


class WebhookReceiver:
    def __init__(self, *, port: int, secret: str, delay: float = 0.0):
        self.port = port
        self.secret = secret
        # Each post takes this long: widens the window between sending and recording, where
        # a kill makes the sender deliver again.
        self.delay = delay
        self.deliveries: Counter[str] = Counter()
        self.processed: list[str] = []
        self.refused = 0
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/escalations"

    @property
    def redelivered(self) -> int:
        """Posts beyond the first for a key: dropped by the key."""
        return sum(count - 1 for count in self.deliveries.values())

    def _receive(self, headers, payload: bytes) -> int:
        expected = sign(self.secret, headers.get("X-ClinicDesk-Timestamp", ""), payload)
        key = headers.get("Idempotency-Key", "")
        try:
            signed_key = json.loads(payload).get("delivery")
        except ValueError:
            signed_key = None
        if not hmac.compare_digest(expected, headers.get("X-ClinicDesk-Signature", "")) or (
            not key or key != signed_key
        ):
            with self._lock:
                self.refused += 1
            return 401
        if self.delay:
            time.sleep(self.delay)
        with self._lock:
            self.deliveries[key] += 1
            if self.deliveries[key] == 1:
                self.processed.append(key)
        return 200

    def start(self) -> WebhookReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                payload = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                status = receiver._receive(self.headers, payload)
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> WebhookReceiver:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
