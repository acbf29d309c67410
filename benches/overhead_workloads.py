"""The workloads of benches/overhead.py.

The parent (overhead.py) only needs the ``WORKLOADS`` descriptors: names,
sizes and labels. The measured process (overhead_child.py) calls
``runner(name)`` to get the function, which for the pyperformance programs
imports them from the installed ``pyperformance`` package (its
``data-files/benchmarks/bm_*/run_benchmark.py``, the code pyperformance
itself runs); nothing of theirs is copied here.
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from typing import Callable

THREADS = 4
PROCESSES = 2


@dataclass(frozen=True)
class Workload:
    name: str
    sizes: tuple[int, int]  # (default, --quick)
    what: str  # the label, with {size} in it
    pyperformance: bool = False

    def label(self, size: int) -> str:
        return self.what.format(size=size, threads=THREADS, processes=PROCESSES)


WORKLOADS = {
    w.name: w
    for w in (
        Workload("fib", (30, 25), "fib({size})"),
        Workload("methods", (1_000_000, 100_000), "methods({size:,}x3)"),
        Workload("threads", (27, 22), "{threads} threads x fib({size})"),
        Workload("multiprocessing", (28, 22), "{processes} processes x fib({size})"),
        Workload("richards", (2, 1), "richards x{size}", pyperformance=True),
        Workload("deltablue", (2000, 200), "deltablue({size})", pyperformance=True),
        Workload("nbody", (10_000, 1000), "nbody({size:,} steps)", pyperformance=True),
        Workload("raytrace", (48, 16), "raytrace({size}x{size})", pyperformance=True),
    )
}


# ---------------------------------------------------------------------------
# The synthetic workloads
# ---------------------------------------------------------------------------


def fib(n: int) -> int:
    return n if n < 2 else fib(n - 1) + fib(n - 2)


class Counter:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def inc(self) -> None:
        self.value += 1

    def add(self, amount: int) -> None:
        self.value += amount

    def get(self) -> int:
        return self.value


def methods(n: int) -> int:
    counter = Counter()
    for _ in range(n):
        counter.inc()
        counter.add(2)
        counter.get()
    return counter.get()


def fib_threads(n: int) -> None:
    workers = [threading.Thread(target=fib, args=(n,)) for _ in range(THREADS)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()


# ---------------------------------------------------------------------------
# pyperformance
# ---------------------------------------------------------------------------


class MissingPackage(RuntimeError):
    pass


def pyperformance_module(name: str):
    """Imports bm_<name>/run_benchmark.py from the installed pyperformance."""
    try:
        from importlib import resources

        import pyperformance  # noqa: F401
    except ImportError as exc:
        raise MissingPackage(f"pyperformance is not installed: {exc}") from None
    path = resources.files("pyperformance") / "data-files" / "benchmarks" / f"bm_{name}"
    path = path / "run_benchmark.py"
    if not path.is_file():
        raise MissingPackage(f"this pyperformance has no {path}")
    spec = importlib.util.spec_from_file_location(f"bm_{name}", str(path))
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # defines the benchmark; its __main__ block does not run
    return module


def richards(size: int) -> None:
    if not pyperformance_module_cache["richards"].Richards().run(size):
        raise RuntimeError("richards computed a wrong result")


def deltablue(size: int) -> None:
    pyperformance_module_cache["deltablue"].delta_blue(size)


def nbody(size: int) -> None:
    pyperformance_module_cache["nbody"].bench_nbody(1, "sun", size)


def raytrace(size: int) -> None:
    pyperformance_module_cache["raytrace"].bench_raytrace(1, size, size, None)


pyperformance_module_cache: dict = {}


# The workloads a script can run in its own interpreter (multiprocessing's
# processes are started by overhead_child.py).
IN_ONE_INTERPRETER = tuple(w for w in WORKLOADS if w != "multiprocessing")


def not_in_one_interpreter(name: str) -> str | None:
    """Why `name` is no workload a script can run in its own interpreter,
    for its usage error; None if it is one."""
    if name in IN_ONE_INTERPRETER:
        return None
    return (f"{name!r} is not a workload that runs in one interpreter; "
            f"choose from {', '.join(IN_ONE_INTERPRETER)}")


def runner(name: str) -> Callable[[int], object]:
    """The function that runs workload ``name`` (multiprocessing is run by
    overhead_child.py, which starts and instruments the processes)."""
    if WORKLOADS[name].pyperformance:
        pyperformance_module_cache[name] = pyperformance_module(name)
    return {
        "fib": fib,
        "methods": methods,
        "threads": fib_threads,
        "multiprocessing": fib,  # what each process runs
        "richards": richards,
        "deltablue": deltablue,
        "nbody": nbody,
        "raytrace": raytrace,
    }[name]
