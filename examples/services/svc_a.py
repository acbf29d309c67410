"""svc-a: prices a batch of orders by calling svc-b over HTTP, then fans the
totals out to a process pool.

Every HTTP request carries a flow token in its ``traceparent`` header, and
every task sent to the pool carries one in its arguments, so the timeline
shows arrows svc-a → svc-b → svc-a and svc-a → pool worker.

    python svc_a.py http://127.0.0.1:PORT
"""

from __future__ import annotations

import json
import sys
import urllib.request
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor

import rtrace

ORDERS = [[1, 2, 3], [4, 5], [6, 7, 8, 9], [10, 11], [12], [13, 14, 15]]


def fetch_price(base_url: str, item: int) -> float:
    request = urllib.request.Request(f"{base_url}/price?item={item}")
    request.add_header("traceparent", rtrace.flow_out(name="request sent", item=item))
    with urllib.request.urlopen(request, timeout=10) as response:
        rtrace.flow_in(response.headers["traceparent"], name="response received")
        return json.load(response)["price"]


def invoice(order_id: int, prices: list[float], token: str) -> dict:
    """Runs in a pool worker process."""
    rtrace.flow_in(token, name="task received", order=order_id)
    with rtrace.span("invoice", order=order_id, lines=len(prices)):
        subtotal = sum(prices)
        shipping = 0.0 if subtotal > 50 else 4.9
        return {"order": order_id, "total": round(subtotal + shipping, 2)}


def main(base_url: str) -> None:
    with ThreadPoolExecutor(max_workers=3, thread_name_prefix="svc-a-client") as http_pool:
        priced = []
        for order_id, items in enumerate(ORDERS):
            with rtrace.span("price order", order=order_id, items=len(items)):
                prices = list(http_pool.map(lambda i: fetch_price(base_url, i), items))
            rtrace.counter("orders priced", order_id + 1)
            priced.append((order_id, prices))
    with ProcessPoolExecutor(max_workers=2) as workers:
        futures = [
            workers.submit(invoice, order_id, prices, rtrace.flow_out(name="task sent"))
            for order_id, prices in priced
        ]
        invoices = [f.result() for f in futures]
    total = sum(i["total"] for i in invoices)
    print(f"svc-a: {len(invoices)} orders invoiced, total {total:.2f}")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: svc_a.py http://127.0.0.1:PORT")
    main(sys.argv[1])
