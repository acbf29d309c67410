#!/usr/bin/env python3
"""The floor of a tracing hook: builds and installs benches/floor_hooks.c.

Two tiny C extensions are built from floor_hooks.c for the interpreter that
runs this file, with its own headers and compiler settings (sysconfig) and
nothing else:

  _floor_noop   every callback returns at once: the interpreter's cost of
                calling a C hook at all
  _floor_stamp  every callback reads the clock and stores a 16-byte event
                into a preallocated buffer: the least any recorder pays

    python benches/floor.py OUTDIR     # builds both into OUTDIR, prints JSON

``Floor(variant, mechanism)`` installs one: ``mechanism`` is "monitoring"
(sys.monitoring callbacks, 3.12+, for the events rtrace registers) or
"profile" (the C profile function on every thread, as rtrace's legacy hook).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import shlex
import subprocess
import sys
import sysconfig
import threading
from pathlib import Path

SOURCE = Path(__file__).resolve().with_name("floor_hooks.c")
VARIANTS = {"noop": "_floor_noop", "stamp": "_floor_stamp"}
MECHANISMS = ("monitoring", "profile")
BUILD_TIMEOUT_S = 120

# The events rtrace registers with sys.monitoring (python/rtrace/_hooks.py,
# c_calls=True, lines=False), and the floor callback that serves each.
MONITORING_CALLBACKS = {
    "PY_START": "py_start",
    "PY_RESUME": "py_start",
    "PY_THROW": "py_start",
    "PY_RETURN": "py_return",
    "PY_YIELD": "py_return",
    "PY_UNWIND": "py_unwind",
    "CALL": "call",
    "C_RETURN": "c_return",
    "C_RAISE": "c_return",
}
# Tool ids a floor may take, as rtrace: never 0 (debuggers) or 1 (coverage).
TOOL_IDS = (2, 4, 3, 5)


class BuildError(RuntimeError):
    pass


def compiler() -> list[str]:
    """The C compiler this Python was built with ($CC first), as argv."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def build(outdir: str | os.PathLike[str]) -> dict:
    """Compiles both variants into ``outdir``; returns what was built."""
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    include = sysconfig.get_paths()["include"]
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    built: dict = {"compiler": shlex.join(compiler()), "dir": str(out)}
    built.update(modules={}, commands={})
    for variant, module in VARIANTS.items():
        target = out / f"{module}{suffix}"
        command = [
            *compiler(),
            "-O2",
            "-fPIC",
            "-shared",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-Wno-unused-parameter",
            "-Wno-cast-function-type",
            f"-DFLOOR_STAMP={int(variant == 'stamp')}",
            "-I",
            include,
            str(SOURCE),
            "-o",
            str(target),
        ]
        try:
            proc = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise BuildError(f"cannot run the C compiler: {shlex.join(command)}: {exc}") from None
        if proc.returncode != 0:
            raise BuildError(
                f"building {module} failed (exit {proc.returncode}): {shlex.join(command)}\n"
                f"{proc.stderr.strip()}"
            )
        built["modules"][variant] = str(target)
        built["commands"][variant] = shlex.join(command)
    return built


def load(variant: str, directory: str):
    """Imports the built module of ``variant`` from ``directory``."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {sorted(VARIANTS)}, not {variant!r}")
    if directory not in sys.path:
        sys.path.insert(0, directory)
    return importlib.import_module(VARIANTS[variant])


class Floor:
    """One floor hook, installed on every thread (those started later too)."""

    def __init__(self, variant: str, mechanism: str, directory: str, clock: str = "tsc") -> None:
        if mechanism not in MECHANISMS:
            raise ValueError(f"mechanism must be one of {MECHANISMS}, not {mechanism!r}")
        if mechanism == "monitoring" and not hasattr(sys, "monitoring"):
            raise RuntimeError("sys.monitoring needs Python 3.12+")
        self.module = load(variant, directory)
        self.module.use_clock(clock)
        self.mechanism = mechanism
        self.tool_id: int | None = None
        self._all_threads = sys.version_info >= (3, 12)

    @property
    def events(self) -> int:
        """Events the stamp floor stored (0 for the no-op floor)."""
        return self.module.events()

    def start(self) -> Floor:
        if self.mechanism == "monitoring":
            self._start_monitoring()
        else:
            if not self._all_threads:  # 3.11: new threads install it themselves
                threading.setprofile(self._thread_installer)
            self.module.profile_install(self._all_threads)
        return self

    def stop(self) -> None:
        if self.mechanism == "monitoring":
            monitoring = sys.monitoring
            monitoring.set_events(self.tool_id, 0)
            for name in MONITORING_CALLBACKS:
                monitoring.register_callback(self.tool_id, getattr(monitoring.events, name), None)
            monitoring.free_tool_id(self.tool_id)
        else:
            self.module.profile_uninstall(self._all_threads)
            if not self._all_threads:
                threading.setprofile(None)

    def _thread_installer(self, frame, event, arg) -> None:
        self.module.profile_install(False)

    def _start_monitoring(self) -> None:
        monitoring = sys.monitoring
        free = [i for i in TOOL_IDS if monitoring.get_tool(i) is None]
        if not free:
            raise RuntimeError(f"no free sys.monitoring tool id among {TOOL_IDS}")
        self.tool_id = free[0]
        monitoring.use_tool_id(self.tool_id, "rtrace-bench-floor")
        mask = 0
        for name, callback in MONITORING_CALLBACKS.items():
            event = getattr(monitoring.events, name)
            monitoring.register_callback(self.tool_id, event, getattr(self.module, callback))
            if name not in ("C_RETURN", "C_RAISE"):  # these follow CALL
                mask |= event
        monitoring.set_events(self.tool_id, mask)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("outdir", help="directory to build _floor_noop and _floor_stamp into")
    args = parser.parse_args(argv)
    try:
        print(json.dumps(build(args.outdir)))
    except BuildError as exc:
        print(f"floor.py: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
