"""rtrace: a cross-process execution timeline recorder.

Record a block, a function, or a whole program::

    import rtrace

    with rtrace.record(session="svc-a") as rec:
        serve()
    print(rec.path, rec.events, rec.lost)

    for event in rtrace.read(rec.path):
        print(event.ts_ns, event.kind, event.name)
"""

from __future__ import annotations

import os

from . import _native
from ._native import Event, Reader, StreamError
from ._recording import Recording, RecordingError, current, record, start, stop

__all__ = [
    "Event",
    "Reader",
    "Recording",
    "RecordingError",
    "StreamError",
    "current",
    "read",
    "record",
    "start",
    "stop",
]

__version__ = "0.1.0"


def read(path: str | os.PathLike[str]) -> Reader:
    """Opens a stream file and returns an iterable of its events.

    Each event has ``ts_ns`` (CLOCK_MONOTONIC nanoseconds), ``pid``, ``tid``,
    ``kind`` ("call", "return", "exception", "c_call", "c_return", "line"),
    ``name``, ``module``, ``file`` and ``line``, and with ``log_args``
    ``args_repr`` (calls) and ``return_repr`` (returns), else None. After
    iterating to the end,
    ``reader.truncated`` is True if the stream had no end marker (the
    process died); a torn last frame is skipped, not raised.
    """
    return _native.Reader(os.fspath(path))
