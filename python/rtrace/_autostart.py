"""Starts recording at interpreter start-up when ``RTRACE_AUTOSTART=1``.

``rtrace run`` puts ``rtrace/_boot`` on ``PYTHONPATH``; its
``sitecustomize`` calls :func:`start_from_environment` in every Python
process started under it. Settings come from the environment:

RTRACE_COLLECTOR   where to stream (set by ``rtrace run``)
RTRACE_SESSION     session name
RTRACE_LINES       "1" to record line events
RTRACE_C_CALLS     "0" not to record C calls
RTRACE_ON_FULL     "drop" (default) or "block"
RTRACE_FOLLOW_CHILDREN "0" not to record this process's children
RTRACE_INCLUDE, RTRACE_EXCLUDE     comma-separated patterns
RTRACE_EXCLUDE_STDLIB              "1" to leave out the stdlib and site-packages
RTRACE_MAX_DEPTH, RTRACE_MIN_DURATION (seconds), RTRACE_SAMPLE
RTRACE_LOG_ARGS    "1" for every recorded function, or comma-separated patterns
RTRACE_PARENT_PID, RTRACE_REAPER_PID   the recording parent, and ``rtrace
                   run``'s pid: see ``_children.recorded_parent``

multiprocessing's own helper processes (the resource tracker, the fork
server) are not recorded; the workers a fork server forks are.
"""

from __future__ import annotations

import os
import sys


def start_from_environment(forked_from_server_of: int | None = None) -> None:
    """Starts a recording as the environment says; never raises: a broken
    set-up is reported on stderr and the program runs unrecorded."""
    if os.environ.get("RTRACE_AUTOSTART") != "1":
        return
    try:
        from . import _children, _filters, _recording

        if _recording.current() is not None:
            return
        # A fork server's worker has the server's command line: not a helper.
        helper = None if forked_from_server_of else _children.multiprocessing_helper()
        if helper == "forkserver":
            # Record the workers it forks, not the server itself; they are
            # shown as children of the program that started the server.
            program = os.getppid()
            os.register_at_fork(after_in_child=lambda: start_from_environment(program))
            return
        if helper is not None:
            return
        recording = _recording.record(
            os.environ.get("RTRACE_SESSION") or None,
            lines=os.environ.get("RTRACE_LINES") == "1",
            c_calls=os.environ.get("RTRACE_C_CALLS", "1") != "0",
            on_full=os.environ.get("RTRACE_ON_FULL", "drop"),
            follow_children=os.environ.get("RTRACE_FOLLOW_CHILDREN", "1") != "0",
            **_filters.from_environment(dict(os.environ)),
        )
        recording._autostarted = True
        recording._parent_pid = forked_from_server_of
        recording.start()
    except Exception as error:  # noqa: BLE001 - never harm the program
        print(f"rtrace: not recording this process: {error}", file=sys.stderr)
