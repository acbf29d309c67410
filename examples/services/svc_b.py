"""svc-b: a small HTTP pricing service with a thread pool.

GET /price?item=N answers {"item": N, "price": ...}. A request that carries
a W3C ``traceparent`` header (svc-a sends one made by ``rtrace.flow_out()``)
is joined to its sender by ``rtrace.flow_in()``: the timeline draws an arrow
from the moment svc-a sent the request to the moment svc-b received it, and
another one back with the response's ``traceparent``.

    python svc_b.py [--port 0]     prints "listening on PORT", serves until stdin closes
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, HTTPServer
from urllib.parse import parse_qs, urlparse

import rtrace

CATALOGUE = {item: 10 + (item * 7) % 13 for item in range(100)}


def tax_rate(item: int) -> float:
    return 0.2 if item % 3 else 0.05


def price(item: int) -> float:
    base = CATALOGUE.get(item, 99)
    # Some work worth seeing on the timeline.
    discount = sum(i % 7 for i in range(2_000 + item * 50)) % 5
    return round((base - discount) * (1 + tax_rate(item)), 2)


class Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 - the http.server name
        token = self.headers.get("traceparent")
        if token:
            rtrace.flow_in(token, name="request received", path=self.path)
        query = parse_qs(urlparse(self.path).query)
        item = int(query.get("item", ["0"])[0])
        with rtrace.span("price lookup", item=item):
            body = json.dumps({"item": item, "price": price(item)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("traceparent", rtrace.flow_out(name="response sent"))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:  # quiet
        pass


class PooledHTTPServer(HTTPServer):
    """Hands each connection to a fixed pool of worker threads."""

    def __init__(self, address, handler, workers: int) -> None:
        super().__init__(address, handler)
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="svc-b-worker")

    def process_request(self, request, client_address) -> None:
        self.pool.submit(self._serve, request, client_address)

    def _serve(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)
        finally:
            self.shutdown_request(request)

    def server_close(self) -> None:
        super().server_close()
        self.pool.shutdown(wait=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0, help="port (0: any free port)")
    parser.add_argument("--workers", type=int, default=4, help="worker threads")
    args = parser.parse_args()
    server = PooledHTTPServer(("127.0.0.1", args.port), Handler, args.workers)
    serving = threading.Thread(target=server.serve_forever, name="svc-b-acceptor")
    serving.start()
    print(f"listening on {server.server_address[1]}", flush=True)
    sys.stdin.read()  # until the parent closes our stdin
    server.shutdown()
    serving.join()
    server.server_close()


if __name__ == "__main__":
    main()
