"""Imported by Python at start-up because ``rtrace run`` put this folder on
``PYTHONPATH``: starts recording, then runs the ``sitecustomize`` this one
shadows, if there is one."""

import importlib.util
import os
import sys


def _chain_to_shadowed_sitecustomize() -> None:
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            spec = importlib.util.spec_from_file_location("_rtrace_shadowed_sitecustomize", candidate)
            if spec and spec.loader:
                spec.loader.exec_module(importlib.util.module_from_spec(spec))
            return


try:
    from rtrace._autostart import start_from_environment

    start_from_environment()
except ImportError as _error:
    print(f"rtrace: cannot import rtrace in {sys.executable}: {_error}", file=sys.stderr)
_chain_to_shadowed_sitecustomize()
