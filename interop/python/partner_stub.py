"""A shipping partner's HTTP API for `make demo` and the chaos run: a real server on a port.

    python partner_stub.py PORT [TOKEN]

`POST /shipments` with a JSON body answers `201 {"tracking_number", "carrier"}`. The tracking
number is made from the request's `Idempotency-Key` (email-worker sends `shipment-<order id>`), so
the same key always gets the same number and a retried call books nothing twice; the server
counts bookings per key and prints one line per call. With TOKEN, a call without
`Authorization: Bearer TOKEN` gets 401. `GET /shipments` lists the bookings as JSON (what the
demo shows). Standard library only.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_bookings: dict[str, dict] = {}
_lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    token: str | None = None

    def _answer(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (the stdlib's name)
        if self.path != "/shipments":
            self._answer(404, {"error": "not found"})
            return
        with _lock:
            self._answer(200, list(_bookings.values()))

    def do_POST(self) -> None:  # noqa: N802
        if self.path != "/shipments":
            self._answer(404, {"error": "not found"})
            return
        if self.token and self.headers.get("Authorization") != f"Bearer {self.token}":
            self._answer(401, {"error": "missing or wrong token"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        try:
            request = json.loads(self.rfile.read(length) or b"null")
        except json.JSONDecodeError as e:
            self._answer(400, {"error": f"body is not JSON: {e}"})
            return
        key = self.headers.get("Idempotency-Key")
        if not key:
            self._answer(400, {"error": "Idempotency-Key header required"})
            return
        with _lock:
            booking = _bookings.get(key)
            if booking is None:
                digits = int(hashlib.sha256(key.encode()).hexdigest(), 16) % 10**10
                booking = {
                    "tracking_number": f"SF{digits:010d}",
                    "carrier": "ShopFDS Express",
                    "key": key,
                    "recipient": (request or {}).get("recipient"),
                    "calls": 0,
                }
                _bookings[key] = booking
            booking["calls"] += 1
        self._answer(201, {k: booking[k] for k in ("tracking_number", "carrier")})

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        print(f"partner: {self.command} {self.path} {format % args}", flush=True)


def main() -> None:
    port = int(sys.argv[1])
    Handler.token = sys.argv[2] if len(sys.argv) > 2 else None
    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"partner: listening on 127.0.0.1:{port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
