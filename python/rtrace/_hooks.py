"""Installing and removing rtrace's C-level hooks.

On CPython 3.12+ rtrace registers C callbacks with ``sys.monitoring`` under a
free tool id (never evicting another tool); on 3.11, or when every tool id
is taken, it installs C profile (and, for ``lines=True``, trace) functions on
every thread, and on threads started later through ``threading.setprofile``;
threads that start running Python outside ``threading`` are given them on
the next flush tick (``adopt`` in the extension).
"""

from __future__ import annotations

import os
import sys

from . import _native

# threading and warnings are imported where they are used: `import rtrace`
# stays cheap for a program that does not record.

# Tool ids rtrace may take, in order of preference. DEBUGGER_ID (0) and
# COVERAGE_ID (1) are left for debuggers and coverage tools.
_TOOL_IDS = (2, 4, 3, 5)
_TOOL_NAME = "rtrace"

_PY_EVENTS = ("PY_START", "PY_RESUME", "PY_THROW", "PY_RETURN", "PY_YIELD", "PY_UNWIND")
_C_EVENTS = ("CALL", "C_RETURN", "C_RAISE")


# rtrace's own machinery: never recorded, nor what it calls while running.
_HERE = os.path.dirname(os.path.abspath(__file__))
INTERNAL_FILES = [
    os.path.join(_HERE, name) for name in ("_recording.py", "_hooks.py", "_children.py")
]


# Code of rtrace frames that call the user's code once recording has
# started (the `record` decorator's wrapper): what they call is recorded,
# so they and the frames below them are not counted as rtrace's own.
USER_CALLERS: set = set()


def _declare_internal_frames() -> None:
    """Tells the recorder how many rtrace frames are on this thread's stack
    (this one excluded, as it returns before the hook goes live), so that
    their returns and what they still call are not recorded."""
    depth = 0
    frame = sys._getframe(1)
    while (
        frame is not None
        and frame.f_code.co_filename in INTERNAL_FILES
        and frame.f_code not in USER_CALLERS
    ):
        depth += 1
        frame = frame.f_back
    _native.set_starting_depth(depth)


class Hook:
    """An installed hook; ``describe`` says which mechanism it is."""

    def __init__(self, *, threads: bool, c_calls: bool, lines: bool) -> None:
        self.threads = threads
        self.c_calls = c_calls
        self.lines = lines
        self.tool_id: int | None = None
        self._previous_thread_profile = None
        self._previous_profile = None

    @property
    def missing(self):
        """``sys.monitoring.MISSING``, or None before 3.12."""
        monitoring = getattr(sys, "monitoring", None)
        return getattr(monitoring, "MISSING", None)

    def describe(self) -> str:
        if self.tool_id is not None:
            return f"sys.monitoring (tool id {self.tool_id})"
        return "legacy profile hook" + (" + trace hook" if self.lines else "")

    def choose(self) -> None:
        """Picks the mechanism: sys.monitoring with a free tool id, else legacy."""
        forced = os.environ.get("RTRACE_HOOK", "")
        monitoring = getattr(sys, "monitoring", None)
        if monitoring is None or forced == "legacy":
            return
        for tool_id in _TOOL_IDS:
            if monitoring.get_tool(tool_id) is None:
                self.tool_id = tool_id
                return
        import warnings

        taken = ", ".join(f"{i}={monitoring.get_tool(i)!r}" for i in _TOOL_IDS)
        warnings.warn(
            f"rtrace: every sys.monitoring tool id it may use is taken ({taken}); "
            "falling back to the slower legacy profile hook",
            RuntimeWarning,
            stacklevel=4,
        )

    def install(self) -> None:
        if self.tool_id is not None:
            self._install_monitoring()
        else:
            self._install_legacy()

    def uninstall(self) -> None:
        if self.tool_id is not None:
            self._uninstall_monitoring()
        else:
            self._uninstall_legacy(all_threads=self.threads)

    def uninstall_after_fork(self) -> None:
        """In a forked child, where only the calling thread exists."""
        if self.tool_id is not None:
            self._uninstall_monitoring()
        else:
            self._uninstall_legacy(all_threads=False)

    def _event_names(self) -> tuple[str, ...]:
        names = _PY_EVENTS
        if self.c_calls:
            names += _C_EVENTS
        if self.lines:
            names += ("LINE",)
        return names

    def _install_monitoring(self) -> None:
        monitoring = sys.monitoring
        events = monitoring.events
        callbacks = _native.monitoring_callbacks()
        monitoring.use_tool_id(self.tool_id, _TOOL_NAME)
        mask = 0
        for name in self._event_names():
            event = getattr(events, name)
            monitoring.register_callback(self.tool_id, event, callbacks[name])
            # C_RETURN and C_RAISE follow CALL; they cannot be set alone.
            if name not in ("C_RETURN", "C_RAISE"):
                mask |= event
        _declare_internal_frames()
        monitoring.set_events(self.tool_id, mask)

    def _uninstall_monitoring(self) -> None:
        monitoring = sys.monitoring
        if monitoring.get_tool(self.tool_id) != _TOOL_NAME:
            return
        monitoring.set_events(self.tool_id, 0)
        for name in self._event_names():
            monitoring.register_callback(self.tool_id, getattr(monitoring.events, name), None)
        monitoring.free_tool_id(self.tool_id)

    def _install_legacy(self) -> None:
        import threading

        self._previous_profile = sys.getprofile()
        if self.threads:
            self._previous_thread_profile = threading.getprofile()
            threading.setprofile(self._thread_installer)
            _declare_internal_frames()
            _native.set_legacy_all_threads(on=True, lines=self.lines, c_calls=self.c_calls)
        else:
            _native.set_legacy_all_threads(on=False, lines=False, c_calls=self.c_calls)
            _declare_internal_frames()
            _native.set_legacy_current_thread(on=True, lines=self.lines)

    def _thread_installer(self, frame, event, arg):
        # Runs once, as the Python-level profile function of a new thread:
        # replaces itself with the C hook and records the event it got.
        _native.set_legacy_current_thread(on=True, lines=self.lines)
        _native.legacy_event(frame, event, arg)

    def _uninstall_legacy(self, *, all_threads: bool) -> None:
        if all_threads:
            import threading

            _native.set_legacy_all_threads(on=False, lines=self.lines, c_calls=self.c_calls)
            threading.setprofile(self._previous_thread_profile)
        else:
            _native.set_legacy_current_thread(on=False, lines=self.lines)
        if self._previous_profile is not None:
            sys.setprofile(self._previous_profile)
