"""rtrace: a cross-process execution timeline recorder.

Record a block, a function, or a whole program::

    import rtrace

    with rtrace.record(session="svc-a") as rec:
        serve()
    print(rec.path, rec.events, rec.lost)

    for event in rtrace.read(rec.path):
        print(event.ts_ns, event.kind, event.name)

Add your own events, and arrows between processes::

    with rtrace.span("handle", user=uid):        # also @rtrace.span("handle")
        rtrace.instant("cache miss", key=k)
        rtrace.counter("queue_depth", len(queue))
        headers["traceparent"] = rtrace.flow_out()   # in the sender
    rtrace.flow_in(request.headers["traceparent"])   # in the receiver
"""

import os as _os

from . import _native
from ._native import (
    Event,
    Reader,
    StreamError,
    counter,
    flow_in,
    flow_out,
    instant,
    name_thread,
    span,
)

TYPE_CHECKING = False  # typing.TYPE_CHECKING, without importing typing
if TYPE_CHECKING:  # at run time, see __getattr__ below
    from ._recording import Recording, RecordingError, current, record, start, stop
del TYPE_CHECKING

# What starts and stops recordings is imported on first use: a program that
# imports rtrace for its spans and instants, and does not record, never
# loads it (about half of what `import rtrace` cost).
_RECORDING_NAMES = frozenset(("Recording", "RecordingError", "current", "record", "start", "stop"))


def __getattr__(name: str) -> object:
    if name in _RECORDING_NAMES:
        from . import _recording  # which makes its names this module's own

        return getattr(_recording, name)
    raise AttributeError(f"module 'rtrace' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _RECORDING_NAMES)

__all__ = [
    "Event",
    "Reader",
    "Recording",
    "RecordingError",
    "StreamError",
    "counter",
    "current",
    "flow_in",
    "flow_out",
    "instant",
    "name_thread",
    "read",
    "record",
    "span",
    "start",
    "stop",
]

__version__ = "0.1.0"


def read(path: str | bytes | _os.PathLike[str]) -> Reader:
    """Opens a stream file or a merged timeline and returns an iterator
    over its events (read once, as a file is).

    Each event has ``ts_ns`` (CLOCK_MONOTONIC nanoseconds), ``pid``,
    ``process`` (its process's number in ``reader.processes()``: unlike
    the pid, unique across hosts and containers), ``tid``,
    ``kind`` ("call", "return", "exception", "c_call", "c_return", "line",
    or for user events "span_begin", "span_end", "instant", "counter",
    "flow_out", "flow_in"), ``name``, ``module``, ``file``, ``line``, and
    for user events ``args`` (a dict or None), ``value`` (counters) and
    ``flow_id`` (flow ends), and with ``log_args`` ``args_repr`` (calls)
    and ``return_repr`` (returns), else None. After iterating to the end,
    ``reader.truncated`` is True if the stream had no end marker (the
    process died); a torn last frame is skipped, not raised.
    """
    return _native.Reader(_os.fsdecode(path))
