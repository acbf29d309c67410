"""The Python API for recording: ``record``, ``start``, ``stop``."""

from __future__ import annotations

import _thread
import atexit
import os
import sys

from . import _children, _filters, _native
from ._hooks import INTERNAL_FILES, USER_CALLERS, Hook

# What only recording needs (threading) is imported where it is used: a
# program that imports rtrace and never records should pay for rtrace's own
# modules alone, and starting a recording for threading alone: paths are
# strings here, and `Recording.path` makes its pathlib.Path only when asked
# (pathlib and what it imports took ~13 ms of a fresh interpreter's first
# record(); tests/python/test_import_cost.py).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any, Callable, TypeVar

    from ._filters import Patterns

    F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["Recording", "RecordingError", "record", "start", "stop", "current"]

RecordingError = _native.RecordingError

_ON_FULL = ("drop", "block")
_DEFAULT_BUFFER_EVENTS = 1 << 20
_DEFAULT_FLUSH_INTERVAL = 0.02

_state_lock = _thread.RLock()
_active: Recording | None = None


def _check_type(name: str, value: Any, types: type | tuple[type, ...], *, none: bool = False) -> None:
    """Raises TypeError naming the option when ``value`` is not of ``types``
    (a bool is not taken for a number)."""
    if value is None and none:
        return
    wanted = types if isinstance(types, tuple) else (types,)
    if isinstance(value, wanted) and (bool in wanted or not isinstance(value, bool)):
        return
    names = " or ".join(t.__name__ for t in wanted) + (" or None" if none else "")
    raise TypeError(f"{name} must be {names}, not {type(value).__name__} ({value!r})")


def _collector_from_environment(address: str) -> str | None:
    """``$RTRACE_COLLECTOR``, or None with a warning when it is not an
    address: the environment's mistake must not stop the program, which
    then records to a stream file as without a collector."""
    try:
        _native.check_address(address)
    except ValueError as e:
        import warnings

        warnings.warn(
            f"rtrace: ignoring $RTRACE_COLLECTOR: {e}; recording to a stream file instead",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return address


def _default_session() -> str:
    from_env = os.environ.get("RTRACE_SESSION")
    if from_env:
        return from_env
    script = os.path.basename(sys.argv[0].rstrip(os.sep)) if sys.argv else ""
    program = os.path.splitext(script)[0]
    return program or "python"


_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-")


def _safe_name(session: str) -> str:
    """``session`` for a file name: each run of other characters than
    letters, digits, ``.``, ``_`` and ``-`` as one ``_`` (without ``re``,
    which recording does not otherwise import)."""
    out: list[str] = []
    in_run = False
    for c in session:
        if c in _SAFE:
            out.append(c)
        elif not in_run:
            out.append("_")
        in_run = c not in _SAFE
    return "".join(out).strip("._") or "session"


def _default_output(session: str, suffix: str) -> str:
    directory = os.environ.get("RTRACE_OUTPUT_DIR") or "."
    base = f"rtrace-{_safe_name(session)}-{os.getpid()}"

    def named(name: str) -> str:
        # As pathlib would say it: "rtrace-s-1.rtrace", not "./rtrace-s-1.rtrace".
        return name if directory == "." else os.path.join(directory, name)

    path = named(f"{base}{suffix}")
    n = 2
    while os.path.exists(path):
        path = named(f"{base}-{n}{suffix}")
        n += 1
    return path


def _thread_names() -> list[tuple[int, str]]:
    import threading

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
        token: str | None = None,
        threads: bool = True,
        c_calls: bool = True,
        lines: bool = False,
        on_full: str = "drop",
        buffer_events: int = _DEFAULT_BUFFER_EVENTS,
        flush_interval: float = _DEFAULT_FLUSH_INTERVAL,
        follow_children: bool = True,
        include: Patterns = None,
        exclude: Patterns = None,
        exclude_stdlib: bool = False,
        max_depth: int | None = None,
        min_duration: float | None = None,
        log_args: bool | Patterns = False,
        sample: int | None = None,
    ) -> None:
        _check_type("session", session, str, none=True)
        _check_type("output", output, (str, bytes, os.PathLike), none=True)
        _check_type("collector", collector, str, none=True)
        _check_type("token", token, str, none=True)
        for name, flag in (("threads", threads), ("c_calls", c_calls), ("lines", lines),
                           ("follow_children", follow_children)):
            _check_type(name, flag, bool)
        _check_type("on_full", on_full, str)
        _check_type("buffer_events", buffer_events, int)
        _check_type("flush_interval", flush_interval, (int, float))
        if collector is not None:
            _native.check_address(collector)
        elif output is None and os.environ.get("RTRACE_COLLECTOR"):
            collector = _collector_from_environment(os.environ["RTRACE_COLLECTOR"])
        if on_full not in _ON_FULL:
            raise ValueError(f'on_full must be "drop" or "block", not {on_full!r}')
        if buffer_events < 128:
            raise ValueError(f"buffer_events must be at least 128, not {buffer_events!r}")
        if not 0.001 <= flush_interval <= 60:
            raise ValueError(
                f"flush_interval must be between 0.001 and 60 seconds, not {flush_interval!r}"
            )
        # Kept as given, for the children that follow this recording.
        self._filter_options: dict[str, Any] = dict(
            include=include,
            exclude=exclude,
            exclude_stdlib=exclude_stdlib,
            max_depth=max_depth,
            min_duration=min_duration,
            log_args=log_args,
            sample=sample,
        )
        self._filters = _filters.build(**self._filter_options, lines=lines)
        self.session = session or _default_session()
        self._output = os.fsdecode(output) if output is not None else None
        self.collector = collector
        self._token = token if token is not None else os.environ.get("RTRACE_TOKEN") or None
        self.threads = threads
        self.c_calls = c_calls
        self.lines = lines
        self.on_full = on_full
        self.buffer_events = buffer_events
        self.flush_interval = float(flush_interval)
        self.follow_children = bool(follow_children)
        self._path: str | None = self._output
        self.hook: str | None = None
        self._hook: Hook | None = None
        self._pid: int | None = None
        self._final: tuple[int, int, int, str | None] | None = None
        self._autostarted = False
        # The parent shown in the timeline, when not the OS parent.
        self._parent_pid: int | None = None
        self._environment: _children.EnvironmentPatch | None = None
        # In a forked child: the recording that carries this one on.
        self._continued_by: Recording | None = None

    # -- state ---------------------------------------------------------------

    @property
    def path(self) -> Path | None:
        """The stream file: the ``output`` given, or the one chosen at
        ``start()`` (with a collector, the spill file, written only if the
        collector cannot be reached)."""
        if self._path is None:
            return None
        from pathlib import Path

        return Path(self._path)

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
            f"<rtrace.Recording session={self.session!r} path={self._path!r} "
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
                    f"{_active._path!r}; stop it first (rtrace.stop()) — recordings "
                    "cannot be nested or run concurrently in one process"
                )
            path = self._output or _default_output(
                self.session, ".spill.rtrace" if self.collector else ".rtrace"
            )
            hook = Hook(threads=self.threads, c_calls=self.c_calls, lines=self.lines)
            hook.choose()
            _native.start(
                session=self.session,
                output=path,
                collector=self.collector,
                token=self._token,
                on_full=self.on_full,
                buffer_events=self.buffer_events,
                flush_interval=self.flush_interval,
                argv=[str(a) for a in sys.argv],
                recorder=f"rtrace python {sys.version.split()[0]}; {hook.describe()}",
                only_current_thread=not self.threads,
                missing=hook.missing,
                thread_names=_thread_names(),
                internal_files=INTERNAL_FILES,
                parent_pid=self._parent_pid or _children.recorded_parent(),
                filters=self._filters,
            )
            self._path = path
            self.hook = hook.describe()
            self._hook = hook
            self._pid = os.getpid()
            self._final = None
            self._continued_by = None
            _active = self
            self._environment = _children.EnvironmentPatch(self._children_environment(path))
            _children.patch_exit(_stop_at_exit)
            try:
                hook.install()  # the last step: what follows is recorded
            except BaseException:
                _active = None
                _native.stop([])
                self._environment.restore()
                _children.unpatch_exit()
                raise
        return self

    def _children_environment(self, path: str) -> dict[str, str | None]:
        """What ``os.environ`` must say for exec'd children to follow (or,
        with ``follow_children=False``, not to)."""
        if not self.follow_children:
            return {"RTRACE_AUTOSTART": None}
        env: dict[str, str | None] = dict(
            _children.child_environment(
                session=self.session,
                collector=self.collector,
                output_dir=os.path.dirname(os.path.realpath(path)),
                lines=self.lines,
                c_calls=self.c_calls,
                on_full=self.on_full,
            )
        )
        env.update(_filters.to_environment(self._filter_options))
        if self.collector and self._token:
            env["RTRACE_TOKEN"] = self._token
        env[_children.PARENT_VARIABLE] = str(os.getpid())
        return env

    def stop(self) -> Recording:
        """Stops recording, writes everything and closes the stream file."""
        global _active
        if self._pid is not None and self._pid != os.getpid():
            # A forked child leaving the parent's `with record()`: end the
            # child's own recording, if it has one.
            successor = self._continued_by
            if successor is not None and successor.active:
                successor.stop()
            return self
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
            if self._environment is not None:
                self._environment.restore()
            _children.unpatch_exit()
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

        import functools

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                return func(*args, **kwargs)
            with self:
                return func(*args, **kwargs)

        # The wrapper is rtrace's frame, but what it calls is the user's.
        USER_CALLERS.add(wrapper.__code__)
        return wrapper  # type: ignore[return-value]

    # -- fork and exit -------------------------------------------------------

    def _abandon_in_child(self) -> None:
        """Right after ``fork()``, in the child: leave the parent's stream
        alone and, when following children, start the child's own."""
        global _active
        if self._hook is not None:
            self._hook.uninstall_after_fork()
        _native.after_fork_in_child()
        self._final = (0, 0, 0, None)
        _active = None
        _children.unpatch_exit()
        if not self.follow_children:
            return
        child = self._for_child()
        try:
            child.start()
        except Exception as error:  # noqa: BLE001 - never harm the program
            print(f"rtrace: not recording forked process {os.getpid()}: {error}", file=sys.stderr)
            return
        self._continued_by = child

    def _for_child(self) -> Recording:
        """The recording a forked child starts: the same settings, a stream
        of its own."""
        output = None
        if self._output is not None:
            directory, name = os.path.split(self._output)
            stem, suffix = os.path.splitext(name)
            output = os.path.join(directory, f"{stem}-{os.getpid()}{suffix}")
        child = Recording(
            self.session,
            output=output,
            collector=self.collector,
            token=self._token,
            threads=self.threads,
            c_calls=self.c_calls,
            lines=self.lines,
            on_full=self.on_full,
            buffer_events=self.buffer_events,
            flush_interval=self.flush_interval,
            follow_children=self.follow_children,
            **self._filter_options,
        )
        child._autostarted = self._autostarted
        return child


def record(
    session: str | None = None,
    *,
    output: str | os.PathLike[str] | None = None,
    collector: str | None = None,
    token: str | None = None,
    threads: bool = True,
    c_calls: bool = True,
    lines: bool = False,
    on_full: str = "drop",
    buffer_events: int = _DEFAULT_BUFFER_EVENTS,
    flush_interval: float = _DEFAULT_FLUSH_INTERVAL,
    follow_children: bool = True,
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
    token:          shared token the collector requires on TCP (default
                    ``$RTRACE_TOKEN``); sent on each connection, never
                    written to a file.
    threads:        record every thread (False: only the calling one).
    c_calls:        record calls of functions implemented in C.
    lines:          record line events too (slower).
    on_full:        "drop" (count lost events, never stall) or "block".
    buffer_events:  events that may wait in memory before ``on_full`` applies.
    flush_interval: seconds an event may wait before it is written
                    (default 0.02): also how often a collector learns that
                    it may write what it holds of this stream.
    follow_children: child Python processes record too, into the same
                    collector (or, without one, into stream files beside
                    this one), each under this session name with its own pid
                    and a link to its parent: forked children (os.fork,
                    multiprocessing "fork"/"forkserver" workers) and new
                    interpreters (subprocess, multiprocessing "spawn"),
                    which inherit RTRACE_* variables and ``PYTHONPATH`` from
                    ``os.environ`` while recording runs.

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
    sample:         record only the first of every ``sample`` requests, with
                    everything inside them: top-level calls, and top-level
                    spans (``rtrace.span`` with no other span open on its
                    thread), each on a count of its own.

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
        token=token,
        threads=threads,
        c_calls=c_calls,
        lines=lines,
        on_full=on_full,
        buffer_events=buffer_events,
        flush_interval=flush_interval,
        follow_children=follow_children,
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
    # Held across fork(), so that the child's copy of the lock is not held
    # by a thread that does not exist there.
    _state_lock.acquire()
    if _active is not None:
        _native.before_fork()


def _after_fork_in_parent() -> None:
    _state_lock.release()


def _after_fork_in_child() -> None:
    try:
        if _active is not None:
            _active._abandon_in_child()
    finally:
        _state_lock.release()


def _stop_at_exit() -> None:
    recording = _active
    if recording is not None and recording._pid == os.getpid():
        recording.stop()


os.register_at_fork(
    # The parked writer restarts by itself at the next hand-over.
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
atexit.register(_stop_at_exit)


def _publish() -> None:
    """Makes this module's public names the package's own attributes. The
    package imports this module when one of them is first asked for (its
    ``__getattr__``), and the start-up hook imports it directly: either
    way, from then on a recorded program's ``rtrace.stop()`` is a plain
    lookup, not a call of the package's ``__getattr__`` (and of the import
    machinery) that would be recorded."""
    package = sys.modules[__package__]
    for name in __all__:
        setattr(package, name, globals()[name])


_publish()
