"""Checking the filter options of :func:`rtrace.record` and building the
native ``Filters`` the hook applies (see ``python/src/filter.rs``)."""

from __future__ import annotations

import os
import sys

from . import _native

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Callable, Iterable, Union

    Patterns = Union[str, Iterable[str], None]

#: Longest repr of one argument or return value kept by ``log_args``; the
#: text of one call (all its arguments) is cut at ``MAX_ARGS_TEXT``.
MAX_REPR = 120
MAX_ARGS_TEXT = 1000


def patterns(name: str, value: Patterns) -> list[str]:
    """A list of patterns from None, one string, or an iterable of them."""
    if value is None:
        return []
    if isinstance(value, str):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(
            f"{name} must be a pattern string or a list of them, not {type(value).__name__}"
        ) from None
    for item in items:
        if not isinstance(item, str) or not item:
            raise TypeError(f"{name} patterns must be non-empty strings, not {item!r}")
    return items


def library_paths() -> list[str]:
    """Directories of the standard library and of installed packages."""
    import site
    import sysconfig

    found: list[str] = []
    paths = sysconfig.get_paths()
    candidates = [paths.get(k) for k in ("stdlib", "platstdlib", "purelib", "platlib")]
    candidates += site.getsitepackages() if hasattr(site, "getsitepackages") else []
    if site.ENABLE_USER_SITE:
        candidates.append(site.getusersitepackages())
    for path in candidates:
        if not path:
            continue
        for form in (os.path.abspath(path), os.path.realpath(path)):
            if form not in found:
                found.append(form)
    return found


def bounded_repr() -> Callable[[Any], str]:
    """A repr whose cost and length stay small for big containers."""
    import reprlib

    r = reprlib.Repr()
    r.maxlevel = 3
    r.maxstring = r.maxother = r.maxlong = MAX_REPR // 2
    r.maxlist = r.maxtuple = r.maxset = r.maxfrozenset = r.maxdeque = r.maxarray = 8
    r.maxdict = 8
    return r.repr


def _int_or_none(name: str, value: Any, minimum: int) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum}, not {value}")
    return value


def build(
    *,
    include: Patterns,
    exclude: Patterns,
    exclude_stdlib: bool,
    max_depth: int | None,
    min_duration: float | None,
    log_args: bool | Patterns,
    sample: int | None,
    lines: bool,
) -> Any:
    """The native filters for these options, or None when nothing is
    filtered (the hook then takes its plain, fastest path)."""
    include_list = patterns("include", include)
    exclude_list = patterns("exclude", exclude)
    if not isinstance(exclude_stdlib, bool):
        raise TypeError(f"exclude_stdlib must be True or False, not {exclude_stdlib!r}")
    max_depth = _int_or_none("max_depth", max_depth, 1)
    sample = _int_or_none("sample", sample, 1)
    if min_duration is None:
        min_duration = 0.0
    if isinstance(min_duration, bool) or not isinstance(min_duration, (int, float)):
        raise TypeError(
            f"min_duration must be a number of seconds, not {type(min_duration).__name__}"
        )
    min_duration = float(min_duration)
    if not 0.0 <= min_duration <= 3600.0:
        raise ValueError(f"min_duration must be between 0 and 3600 seconds, not {min_duration}")
    if min_duration > 0 and lines:
        raise ValueError(
            "min_duration cannot be combined with lines=True: a line event would have to wait "
            "for its call to be long enough"
        )
    if log_args is True:
        args: list[str] | None = []
    elif log_args is False or log_args is None:
        args = None
    else:
        args = patterns("log_args", log_args)
    nothing = (
        not include_list
        and not exclude_list
        and not exclude_stdlib
        and max_depth is None
        and min_duration == 0.0
        and args is None
        and (sample or 1) == 1
    )
    if nothing:
        return None
    import opcode

    return _native.Filters(
        include=include_list,
        exclude=exclude_list,
        library_paths=library_paths() if exclude_stdlib else None,
        stdlib_modules=sorted(sys.stdlib_module_names),
        max_depth=max_depth,
        min_duration=min_duration,
        log_args=args,
        repr=bounded_repr() if args is not None else None,
        resume_opcode=opcode.opmap["RESUME"],
        sample=sample or 1,
    )


def from_environment(environ: dict[str, str]) -> dict[str, Any]:
    """The filter options ``rtrace run`` passes to its children (RTRACE_*)."""

    def split(name: str) -> list[str]:
        return [p for p in environ.get(name, "").split(",") if p]

    options: dict[str, Any] = {
        "include": split("RTRACE_INCLUDE"),
        "exclude": split("RTRACE_EXCLUDE"),
        "exclude_stdlib": environ.get("RTRACE_EXCLUDE_STDLIB") == "1",
    }
    if environ.get("RTRACE_MAX_DEPTH"):
        options["max_depth"] = int(environ["RTRACE_MAX_DEPTH"])
    if environ.get("RTRACE_MIN_DURATION"):
        options["min_duration"] = float(environ["RTRACE_MIN_DURATION"])
    if environ.get("RTRACE_SAMPLE"):
        options["sample"] = int(environ["RTRACE_SAMPLE"])
    log_args = environ.get("RTRACE_LOG_ARGS", "")
    if log_args == "1":
        options["log_args"] = True
    elif log_args and log_args != "0":
        options["log_args"] = split("RTRACE_LOG_ARGS")
    return options


def to_environment(options: dict[str, Any]) -> dict[str, str | None]:
    """The RTRACE_* variables that give exec'd children these filter options
    (the inverse of :func:`from_environment`); None unsets a variable."""

    def joined(value: Patterns) -> str | None:
        items = patterns("pattern", value)
        return ",".join(items) if items else None

    def number(value: Any) -> str | None:
        return None if value is None else str(value)

    log_args = options.get("log_args")
    return {
        "RTRACE_INCLUDE": joined(options.get("include")),
        "RTRACE_EXCLUDE": joined(options.get("exclude")),
        "RTRACE_EXCLUDE_STDLIB": "1" if options.get("exclude_stdlib") else None,
        "RTRACE_MAX_DEPTH": number(options.get("max_depth")),
        "RTRACE_MIN_DURATION": number(options.get("min_duration") or None),
        "RTRACE_SAMPLE": number(options.get("sample")),
        "RTRACE_LOG_ARGS": "1" if log_args is True else (joined(log_args) if log_args else None),
    }
