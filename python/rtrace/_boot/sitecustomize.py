"""Imported by Python at start-up because ``rtrace run`` put this folder on
``PYTHONPATH``: starts recording, then runs the ``sitecustomize`` this one
shadows, if there is one."""

import importlib.util
import os
import sys


def _shadowed_sitecustomize():
    """The ``sitecustomize.py`` this one shadows: the next one on
    ``sys.path``, or None."""
    here = os.path.dirname(os.path.abspath(__file__))
    for entry in sys.path:
        if not entry or os.path.abspath(entry) == here:
            continue
        candidate = os.path.join(entry, "sitecustomize.py")
        if os.path.isfile(candidate):
            return candidate
    return None


def _import_rtrace():
    """Imports rtrace; for an interpreter that does not have it installed
    (another virtualenv, the base interpreter by its absolute path), loads
    the rtrace package this folder belongs to, without putting anything else
    on ``sys.path``. That works when it has an extension module built for
    this Python version."""
    try:
        import rtrace._autostart

        return rtrace._autostart
    except ImportError as error:
        first_error = error
    package_dir = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    spec = importlib.util.spec_from_file_location(
        "rtrace",
        os.path.join(package_dir, "__init__.py"),
        submodule_search_locations=[package_dir],
    )
    try:
        module = importlib.util.module_from_spec(spec)
        sys.modules["rtrace"] = module
        spec.loader.exec_module(module)
        import rtrace._autostart

        return rtrace._autostart
    except ImportError:
        for name in [n for n in sys.modules if n == "rtrace" or n.startswith("rtrace.")]:
            del sys.modules[name]
        version = "%d.%d" % sys.version_info[:2]
        tag = "cpython-%d%d" % sys.version_info[:2]
        try:
            built = any(name.startswith("_native." + tag) for name in os.listdir(package_dir))
        except OSError:
            built = True
        if sys.version_info < (3, 11):
            why = "rtrace records CPython 3.11 and later"
        elif not built:
            why = (
                f"rtrace is not installed in it, and the rtrace that `rtrace run` runs "
                f"from ({package_dir}) has no extension built for Python {version}; "
                "install rtrace into that interpreter (pip install) to record it"
            )
        else:
            why = str(first_error)
        print(f"rtrace: not recording {sys.executable} (Python {version}): {why}", file=sys.stderr)
        return None


# Searched before recording starts: the search is rtrace's work, and would
# otherwise open every process's timeline (~350 events of path functions).
_shadowed = _shadowed_sitecustomize()
_autostart = _import_rtrace()
if _autostart is not None:
    _autostart.start_from_environment()
if _shadowed is not None:
    # Run at module level, in no function of ours: from here on it is the
    # program's own start-up, recorded like the rest of it.
    _spec = importlib.util.spec_from_file_location("_rtrace_shadowed_sitecustomize", _shadowed)
    if _spec and _spec.loader:
        _spec.loader.exec_module(importlib.util.module_from_spec(_spec))
