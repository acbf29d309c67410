"""A small multi-process program with the shapes rtrace records: a process
pool, a thread pool, a child interpreter started with subprocess, a
generator pipeline, asyncio tasks, and an exception caught far from where it
was raised.

    rtrace run -o pipeline.pftrace -- examples/pipeline.py
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import subprocess
import sys
import threading
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor


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


def shard(shard_id: int) -> int:
    """Runs in a worker process: its calls land on that process's track."""
    with ThreadPoolExecutor(max_workers=2, thread_name_prefix=f"shard{shard_id}") as pool:
        return sum(pool.map(handle_batch, range(shard_id * 4, shard_id * 4 + 4)))


def report(total: int) -> None:
    """A separate interpreter, started the way services start helpers."""
    code = "import sys\ndef render(n): return f'total={n}'\nprint(render(int(sys.argv[1])))"
    subprocess.run([sys.executable, "-c", code, str(total)], check=True)


def main() -> None:
    # "spawn" starts fresh interpreters, which `rtrace run` records too.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as processes:
        totals = list(processes.map(shard, range(2)))
    squares = asyncio.run(gather_all())
    report(sum(totals))
    print("batches:", sum(totals), "squares:", squares, "check:", check(sum(totals) + squares))


if __name__ == "__main__":
    main()
