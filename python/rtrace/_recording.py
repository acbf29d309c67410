"""The Python API for recording: ``record``, ``start``, ``stop``."""

from __future__ import annotations

import atexit
import functools
import os
import re
import sys
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

from . import _filters, _native
from ._filters import Patterns
from ._hooks import INTERNAL_FILES, Hook

__all__ = ["Recording", "RecordingError", "record", "start", "stop", "current"]

RecordingError = _native.RecordingError

F = TypeVar("F", bound=Callable[..., Any])

_ON_FULL = ("drop", "block")
_DEFAULT_BUFFER_EVENTS = 1 << 20
_DEFAULT_FLUSH_INTERVAL = 0.1

_state_lock = threading.RLock()
_active: Recording | None = None


def _default_session() -> str:
    from_env = os.environ.get("RTRACE_SESSION")
    if from_env:
        return from_env
    program = Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else ""
    return program or "python"


def _safe_name(session: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", session).strip("._") or "session"


def _default_output(session: str, suffix: str) -> Path:
    directory = Path(os.environ.get("RTRACE_OUTPUT_DIR") or ".")
    base = f"rtrace-{_safe_name(session)}-{os.getpid()}"
    path = directory / f"{base}{suffix}"
    n = 2
    while path.exists():
        path = directory / f"{base}-{n}{suffix}"
        n += 1
    return path


def _thread_names() -> list[tuple[int, str]]:
    return [(t.native_id, t.name) for t in threading.enumerate() if t.native_id]


class Recording:
    """A recording of this process's function calls into a stream file.

    Use it as a context manager, as a decorator, or with ``start()`` and
    ``stop()``. Create it with :func:`rtrace.record`.
    """

    def __init__(
        self,
        session: str | None = None,
        *,
        output: str | os.PathLike[str] | None = None,
        collector: str | None = None,
        threads: bool = True,
        c_calls: bool = True,
        lines: bool = False,
        on_full: str = "drop",
        buffer_events: int = _DEFAULT_BUFFER_EVENTS,
        flush_interval: float = _DEFAULT_FLUSH_INTERVAL,
        include: Patterns = None,
        exclude: Patterns = None,
        exclude_stdlib: bool = False,
        max_depth: int | None = None,
        min_duration: float | None = None,
        log_args: bool | Patterns = False,
        sample: int | None = None,
    ) -> None:
        if collector is None and output is None:
            collector = os.environ.get("RTRACE_COLLECTOR") or None
        if collector is not None and not collector.startswith(("unix://", "tcp://")):
            raise ValueError(
                f"collector must look like unix:///path/to.sock or tcp://host:port, not {collector!r}"
            )
        if session is not None and not isinstance(session, str):
            raise TypeError(f"session must be a str, not {type(session).__name__}")
        if on_full not in _ON_FULL:
            raise ValueError(f'on_full must be "drop" or "block", not {on_full!r}')
        if not isinstance(buffer_events, int) or buffer_events < 128:
            raise ValueError(f"buffer_events must be an int >= 128, not {buffer_events!r}")
        if not (isinstance(flush_interval, (int, float)) and 0.001 <= flush_interval <= 60):
            raise ValueError(
                f"flush_interval must be between 0.001 and 60 seconds, not {flush_interval!r}"
            )
        self._filters = _filters.build(
            include=include,
            exclude=exclude,
            exclude_stdlib=exclude_stdlib,
            max_depth=max_depth,
            min_duration=min_duration,
            log_args=log_args,
            sample=sample,
            lines=lines,
        )
        self.session = session or _default_session()
        self._output = Path(output) if output is not None else None
        self.collector = collector
        self.threads = threads
        self.c_calls = c_calls
        self.lines = lines
        self.on_full = on_full
        self.buffer_events = buffer_events
        self.flush_interval = float(flush_interval)
        self.path: Path | None = self._output
        self.hook: str | None = None
        self._hook: Hook | None = None
        self._pid: int | None = None
        self._final: tuple[int, int, int, str | None] | None = None
        self._autostarted = False

    # -- state ---------------------------------------------------------------

    @property
    def active(self) -> bool:
        """True while this recording is running."""
        return _active is self

    def _stats(self) -> tuple[int, int, int, str | None]:
        if self.active:
            live = _native.stats()
            if live is not None:
                return live
        return self._final or (0, 0, 0, None)

    @property
    def events(self) -> int:
        """Events written to the stream so far (final after ``stop()``)."""
        return self._stats()[0]

    @property
    def lost(self) -> int:
        """Events lost because the queue was full (or the file failed)."""
        return self._stats()[1]

    @property
    def bytes(self) -> int:
        """Bytes written to the stream."""
        return self._stats()[2]

    @property
    def error(self) -> str | None:
        """The first error writing the stream, if any."""
        return self._stats()[3]

    def __repr__(self) -> str:
        state = "active" if self.active else "stopped" if self._final else "new"
        return (
            f"<rtrace.Recording session={self.session!r} path={str(self.path)!r} "
            f"{state} events={self.events} lost={self.lost}>"
        )

    # -- start and stop ------------------------------------------------------

    def start(self) -> Recording:
        """Starts recording; raises RecordingError if one is already active."""
        global _active
        with _state_lock:
            if _active is not None and _active._autostarted:
                # `rtrace run` started this process's recording; a recording
                # the program asks for itself takes its place.
                _active.stop()
            if _active is not None:
                raise RecordingError(
                    f"rtrace is already recording session {_active.session!r} to "
                    f"{str(_active.path)!r}; stop it first (rtrace.stop()) — recordings "
                    "cannot be nested or run concurrently in one process"
                )
            path = self._output or _default_output(
                self.session, ".spill.rtrace" if self.collector else ".rtrace"
            )
            hook = Hook(threads=self.threads, c_calls=self.c_calls, lines=self.lines)
            hook.choose()
            _native.start(
                session=self.session,
                output=str(path),
                collector=self.collector,
                on_full=self.on_full,
                buffer_events=self.buffer_events,
                flush_interval=self.flush_interval,
                argv=[str(a) for a in sys.argv],
                recorder=f"rtrace python {sys.version.split()[0]}; {hook.describe()}",
                only_current_thread=not self.threads,
                missing=hook.missing,
                thread_names=_thread_names(),
                internal_files=INTERNAL_FILES,
                filters=self._filters,
            )
            self.path = path
            self.hook = hook.describe()
            self._hook = hook
            self._pid = os.getpid()
            self._final = None
            _active = self
            try:
                hook.install()  # the last step: what follows is recorded
            except BaseException:
                _active = None
                _native.stop([])
                raise
        return self

    def stop(self) -> Recording:
        """Stops recording, writes everything and closes the stream file."""
        global _active
        with _state_lock:
            if _active is not self:
                raise RecordingError(
                    f"this recording (session {self.session!r}) is not active"
                )
            assert self._hook is not None
            self._hook.uninstall()
            final = _native.stop(_thread_names())
            self._final = final or (0, 0, 0, None)
            _active = None
        if self.error:
            print(f"rtrace: {self.error}", file=sys.stderr)
        return self

    def __enter__(self) -> Recording:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __call__(self, func: F) -> F:
        """Records every call of ``func`` (a new stream file per call when
        no ``output`` was given)."""

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                return func(*args, **kwargs)
            with self:
                return func(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    # -- fork and exit -------------------------------------------------------

    def _abandon_in_child(self) -> None:
        global _active
        if self._hook is not None:
            self._hook.uninstall_after_fork()
        _native.after_fork_in_child()
        self._final = (0, 0, 0, None)
        _active = None


def record(
    session: str | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    collector: str | None = None,
    threads: bool = True,
    c_calls: bool = True,
    lines: bool = False,
    on_full: str = "drop",
    buffer_events: int = _DEFAULT_BUFFER_EVENTS,
    flush_interval: float = _DEFAULT_FLUSH_INTERVAL,
    include: Patterns = None,
    exclude: Patterns = None,
    exclude_stdlib: bool = False,
    max_depth: int | None = None,
    min_duration: float | None = None,
    log_args: bool | Patterns = False,
    sample: int | None = None,
) -> Recording:
    """Prepares a recording; use it with ``with``, as a decorator, or call
    ``.start()``.

    session:        name shown in the timeline (default ``$RTRACE_SESSION``,
                    else the program's name).
    output:         stream file (default ``$RTRACE_OUTPUT_DIR`` or ``.``,
                    ``rtrace-<session>-<pid>.rtrace``); with a collector, the
                    spill file used while it is unreachable.
    collector:      stream to this collector (``unix:///path.sock`` or
                    ``tcp://host:port``; default ``$RTRACE_COLLECTOR`` when
                    no ``output`` is given).
    threads:        record every thread (False: only the calling one).
    c_calls:        record calls of functions implemented in C.
    lines:          record line events too (slower).
    on_full:        "drop" (count lost events, never stall) or "block".
    buffer_events:  events that may wait in memory before ``on_full`` applies.
    flush_interval: seconds an event may wait before it is written.

    Filters (applied in the hook, before anything is queued):

    include:        record only functions matching one of these patterns
                    (see below); e.g. ``["myapp.*"]``.
    exclude:        never record functions matching one of these patterns.
    exclude_stdlib: leave out the standard library and installed packages
                    (site-packages), Python and C functions alike. Ignored
                    for functions an ``include`` pattern names.
    max_depth:      record calls at most this many recorded calls deep.
    min_duration:   seconds; leave out calls shorter than this (their time
                    stays in their caller's slice).
    log_args:       True, or patterns: record the reprs of the arguments
                    and return values of (these) recorded functions, cut at
                    120 characters each.
    sample:         record only the first of every ``sample`` top-level
                    calls (with everything they call).

    A pattern is a shell-style glob (``*``, ``?``, ``[...]``) matched
    against a function's module (``myapp.db``), its qualified name
    (``Db.get``) and both (``myapp.db.Db.get``); a pattern with a ``/`` or
    ending in ``.py`` is matched against its source file instead (the full
    path with a ``/``, else the file name). What an excluded function calls
    is still recorded, nested under the nearest recorded caller.
    """
    return Recording(
        session,
        output=output,
        collector=collector,
        threads=threads,
        c_calls=c_calls,
        lines=lines,
        on_full=on_full,
        buffer_events=buffer_events,
        flush_interval=flush_interval,
        include=include,
        exclude=exclude,
        exclude_stdlib=exclude_stdlib,
        max_depth=max_depth,
        min_duration=min_duration,
        log_args=log_args,
        sample=sample,
    )


def start(session: str | None = None, **options: Any) -> Recording:
    """Starts recording now; same options as :func:`record`."""
    return record(session, **options).start()


def stop() -> Recording:
    """Stops the active recording and returns it."""
    with _state_lock:
        recording = _active
    if recording is None:
        raise RecordingError("rtrace is not recording; nothing to stop")
    return recording.stop()


def current() -> Recording | None:
    """The active recording, or None."""
    return _active


def _before_fork() -> None:
    if _active is not None:
        _native.before_fork()


def _after_fork_in_child() -> None:
    if _active is not None:
        _active._abandon_in_child()


def _stop_at_exit() -> None:
    recording = _active
    if recording is not None and recording._pid == os.getpid():
        recording.stop()


os.register_at_fork(
    # The parked writer restarts by itself at the next hand-over.
    before=_before_fork,
    after_in_child=_after_fork_in_child,
)
atexit.register(_stop_at_exit)
