"""A small program with the shapes rtrace records: a thread pool, a
generator pipeline, asyncio tasks, and an exception caught far from where
it was raised.

    rtrace run -o pipeline.rtrace -- examples/pipeline.py
"""

from __future__ import annotations

import asyncio
import json
import threading
from concurrent.futures import ThreadPoolExecutor


def parse(lines):
    for line in lines:
        yield json.loads(line)


def enrich(records):
    for record in records:
        record["size"] = len(record["name"])
        yield record


def checksum(record: dict) -> int:
    return sum(ord(c) for c in record["name"]) % 97


def handle_batch(batch_id: int) -> int:
    threading.current_thread().name = f"batch-{batch_id}"
    lines = [json.dumps({"name": f"item-{batch_id}-{i}"}) for i in range(200)]
    return sum(checksum(r) for r in enrich(parse(lines)))


async def fetch(i: int) -> int:
    await asyncio.sleep(0.001 * (i % 3))
    return i * i


async def gather_all() -> int:
    return sum(await asyncio.gather(*(fetch(i) for i in range(10))))


def validate(value: int) -> None:
    if value % 2:
        raise ValueError(f"odd total {value}")


def check(value: int) -> str:
    try:
        validate(value)
        return "even"
    except ValueError as error:
        return str(error)


def main() -> None:
    with ThreadPoolExecutor(max_workers=4, thread_name_prefix="pool") as pool:
        totals = list(pool.map(handle_batch, range(8)))
    squares = asyncio.run(gather_all())
    print("batches:", sum(totals), "squares:", squares, "check:", check(sum(totals) + squares))


if __name__ == "__main__":
    main()
