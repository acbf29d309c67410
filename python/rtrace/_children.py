"""How a recording follows the processes its program starts.

- Programs started anew (``subprocess``, ``multiprocessing`` "spawn" and
  "forkserver", ``os.exec*``) inherit environment variables that make a
  Python interpreter start recording at start-up: ``rtrace/_boot`` on
  ``PYTHONPATH`` (its ``sitecustomize`` calls ``rtrace._autostart``) and
  ``RTRACE_AUTOSTART=1`` with the recording's settings. Other programs
  ignore them and run untraced.
- Forked children (``os.fork()``, ``multiprocessing`` "fork", the workers a
  fork server forks) start a recording of their own right after the fork
  (see ``_recording``).
- Children often leave through ``os._exit()``, which skips ``atexit``: while
  recording, ``os._exit`` first ends the recording so that the stream is
  complete (coverage.py patches ``os._exit`` for the same reason).
"""

from __future__ import annotations

import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Callable, Mapping

# A path string, not a pathlib.Path: `import rtrace` does not import pathlib.
BOOT_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "_boot")

# Helper processes multiprocessing starts for itself: not the program's
# work, so not recorded (the workers a fork server forks are).
_MULTIPROCESSING_HELPERS = (
    "from multiprocessing.resource_tracker import main",
    "from multiprocessing.forkserver import main",
)


# Set by a recording process for the processes it starts: its pid, their
# parent's if it exits before they start recording (see `recorded_parent`).
PARENT_VARIABLE = "RTRACE_PARENT_PID"
# Set by `rtrace run` when it is its program's child subreaper: its pid.
REAPER_VARIABLE = "RTRACE_REAPER_PID"


def recorded_parent() -> int | None:
    """The pid of the recording process that started this one, when this
    process was reparented before it started recording (its parent exited:
    a child it did not wait for, a daemon) to init or to ``rtrace run``'s
    subreaper, which would otherwise be named as its parent. None when the
    parent is the one the OS says."""
    recorded = os.environ.get(PARENT_VARIABLE, "")
    if not recorded.isdecimal():
        return None
    parent = os.getppid()
    reaper = os.environ.get(REAPER_VARIABLE, "")
    reapers = {1, int(reaper) if reaper.isdecimal() else 1}
    return int(recorded) if parent in reapers and parent != int(recorded) else None


def child_environment(
    *,
    session: str,
    collector: str | None,
    output_dir: str | None,
    lines: bool,
    c_calls: bool,
    on_full: str,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables that make Python children record like this process:
    the updates to apply to ``base`` (default ``os.environ``)."""
    base = os.environ if base is None else base
    paths = [p for p in base.get("PYTHONPATH", "").split(os.pathsep) if p]
    env = {
        "RTRACE_AUTOSTART": "1",
        "RTRACE_SESSION": session,
        "RTRACE_LINES": "1" if lines else "0",
        "RTRACE_C_CALLS": "1" if c_calls else "0",
        "RTRACE_ON_FULL": on_full,
        "PYTHONPATH": os.pathsep.join([BOOT_DIR] + [p for p in paths if p != BOOT_DIR]),
    }
    if collector:
        env["RTRACE_COLLECTOR"] = collector
    elif output_dir:
        env["RTRACE_OUTPUT_DIR"] = output_dir
    return env


class EnvironmentPatch:
    """Changes to ``os.environ`` that can be undone, by the process that
    made them only (a forked child shares them with its parent)."""

    def __init__(self, updates: Mapping[str, str | None]) -> None:
        self._pid = os.getpid()
        self._saved: dict[str, str | None] = {}
        for key, value in updates.items():
            self._saved[key] = os.environ.get(key)
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def restore(self) -> None:
        if os.getpid() != self._pid:
            return
        for key, value in self._saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved = {}


def command_line() -> str:
    """This process's command line as the kernel has it (the ``-c`` code
    included, which ``sys.argv`` lacks)."""
    try:
        with open("/proc/self/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return ""
    return raw.replace(b"\0", b" ").decode("utf-8", "replace")


def multiprocessing_helper() -> str | None:
    """"resource_tracker" or "forkserver" if this process is one of
    multiprocessing's helpers, else None."""
    line = command_line()
    for marker in _MULTIPROCESSING_HELPERS:
        if marker in line:
            return marker.split()[1].rsplit(".", 1)[1]
    return None


_real_exit = os._exit
_on_exit: Callable[[], None] | None = None


def _exit(status: int) -> None:
    """``os._exit`` while recording: end the recording, then exit."""
    callback = _on_exit
    if callback is not None:
        try:
            callback()
        except BaseException:  # noqa: BLE001 - exiting must not fail
            pass
    _real_exit(status)


_exit.__doc__ = (_real_exit.__doc__ or "") + "\n\n(rtrace: ends the recording first.)"


def patch_exit(on_exit: Callable[[], None]) -> None:
    """Makes ``os._exit`` call ``on_exit`` first."""
    global _on_exit
    _on_exit = on_exit
    os._exit = _exit


def unpatch_exit() -> None:
    global _on_exit
    _on_exit = None
    if os._exit is _exit:
        os._exit = _real_exit
