"""Filters: include/exclude, exclude_stdlib, max_depth, min_duration,
sample and log_args, on both hook mechanisms (sys.monitoring on 3.12+, and
the legacy profile hook, which 3.11 always uses)."""

from __future__ import annotations

import sys
import sysconfig
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import rtrace
from conftest import check_nesting, read_events

HOOKS = ["default", "legacy"] if sys.version_info >= (3, 12) else ["default"]


@pytest.fixture(params=HOOKS)
def hook_env(request) -> dict:
    """The environment selecting the hook mechanism under test."""
    return {"RTRACE_HOOK": "legacy"} if request.param == "legacy" else {}


MYAPP = {
    "__init__.py": """
        from . import codec, text
        def main(n):
            return [handle(i) for i in range(n)]
        def handle(i):
            data = codec.parse('{"a": [1, {"b": 2}]}')
            return len(text.words("one two %d" % i)) + len(data)
        """,
    "codec.py": """
        import json
        def hook(obj):
            return obj
        def parse(s):
            return json.loads(s, object_hook=hook)   # json calls back into myapp
        """,
    "text.py": """
        import re
        def words(s):
            return re.findall(r"\\w+", s)
        """,
}


def write_myapp(root: Path) -> None:
    pkg = root / "myapp"
    pkg.mkdir()
    for name, code in MYAPP.items():
        (pkg / name).write_text(textwrap.dedent(code))


def call_tree(events) -> list[tuple[str, str, str | None]]:
    """(module, name, module.name of the nearest myapp caller) per myapp
    call, in order: nesting as seen through any filter."""
    out = []
    stack: list = []
    for ev in events:
        if ev.kind in ("call", "c_call"):
            if ev.module.startswith("myapp"):
                parent = next((f"{e.module}.{e.name}" for e in reversed(stack)
                               if e.module.startswith("myapp")), None)
                out.append((ev.module, ev.name, parent))
            stack.append(ev)
        elif ev.kind in ("return", "exception", "c_return"):
            stack.pop()
    return out


def test_include_keeps_exactly_my_package_with_nesting(run_py, tmp_path, hook_env):
    write_myapp(tmp_path)
    for variant, options in (("filtered", '{"include": ["myapp.*"]}'), ("full", "{}")):
        run_py(
            f"""
            import rtrace, myapp
            with rtrace.record(output="{variant}.rtrace", **{options}):
                myapp.main(5)
            """,
            env=hook_env,
        )
    filtered, _ = read_events(tmp_path / "filtered.rtrace")
    full, _ = read_events(tmp_path / "full.rtrace")
    check_nesting(filtered)
    assert filtered and all(e.module.startswith("myapp") for e in filtered), \
        sorted({(e.module, e.name) for e in filtered if not e.module.startswith("myapp")})
    stdlib = sysconfig.get_paths()["stdlib"]
    assert not any(e.file.startswith(stdlib) or not e.file for e in filtered)
    # Every call of myapp is there, under the same nearest myapp caller.
    assert call_tree(filtered) == call_tree(full)
    counts = Counter((e.kind, e.name) for e in filtered)
    assert counts[("call", "handle")] == 5 and counts[("call", "words")] == 5
    assert counts[("call", "parse")] == 5
    # The callback json makes into myapp nests under parse, json's frames left out.
    assert counts[("call", "hook")] == 10
    assert ("myapp.codec", "hook", "myapp.codec.parse") in call_tree(filtered)
    assert {e.name for e in full} & {"loads", "findall", "decode"}  # they were there


def test_exclude_stdlib_leaves_out_library_code_keeps_callbacks(run_py, tmp_path, hook_env):
    run_py(
        """
        import json, os.path, rtrace
        def hook(obj):
            return obj
        def work():
            json.loads('{"a": {"b": 1}}', object_hook=hook)
            return os.path.join("a", "b"), len([1]), sorted([2, 1])
        with rtrace.record(output="s.rtrace", exclude_stdlib=True, exclude=["*.noisy"]):
            def noisy(): pass
            work()
            noisy()
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "s.rtrace")
    check_nesting(events)
    names = Counter((e.kind, e.name) for e in events)
    assert names == Counter({("call", "work"): 1, ("return", "work"): 1,
                             ("call", "hook"): 2, ("return", "hook"): 2}), names
    assert all(e.file.endswith("scenario.py") for e in events)


def test_min_duration_keeps_exactly_the_slow_calls_and_their_parents(run_py, tmp_path, hook_env):
    run_py(
        """
        import time, rtrace
        def fast(): return 1
        def brief(): return sum(range(100))   # a microsecond or so
        def slow(): time.sleep(0.005); return fast()
        def middle():
            for _ in range(10): fast()
            return slow()
        def outer():
            for _ in range(3): slow()
            for _ in range(10): fast()
            brief()
            return middle()
        with rtrace.record(output="d.rtrace", min_duration=0.001):
            outer()
            for _ in range(10): fast()
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "d.rtrace")
    per_thread = check_nesting(events)
    counts = Counter((e.kind, e.name) for e in events if e.kind in ("call", "c_call"))
    assert counts == Counter({("call", "outer"): 1, ("call", "slow"): 4, ("call", "middle"): 1,
                              ("c_call", "sleep"): 4}), counts
    # Every kept call lasted at least min_duration.
    for evs in per_thread.values():
        stack = []
        for ev in evs:
            if ev.kind in ("call", "c_call"):
                stack.append(ev)
            else:
                assert ev.ts_ns - stack.pop().ts_ns >= 1_000_000 * 0.99, ev


def test_max_depth_counts_recorded_calls(run_py, tmp_path, hook_env):
    run_py(
        """
        import json, rtrace
        def rec(n):
            return 0 if n == 0 else rec(n - 1) + 1
        def top():
            json.dumps([1])              # excluded: does not count as a level
            return rec(10)
        with rtrace.record(output="m.rtrace", max_depth=3, exclude_stdlib=True):
            top()
            top()
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "m.rtrace")
    check_nesting(events)
    counts = Counter((e.kind, e.name) for e in events)
    assert counts[("call", "top")] == 2 and counts[("call", "rec")] == 4
    depth = deepest = 0
    for ev in events:
        depth += 1 if ev.kind in ("call", "c_call") else -1 if ev.kind != "line" else 0
        deepest = max(deepest, depth)
    assert deepest == 3


def test_sample_records_one_top_level_call_in_n(run_py, tmp_path, hook_env):
    run_py(
        """
        import rtrace
        def work(i): return i
        def request(i): return work(i)
        with rtrace.record(output="p.rtrace", sample=4):
            for i in range(10):
                request(i)
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "p.rtrace")
    check_nesting(events)
    counts = Counter((e.kind, e.name) for e in events)
    # requests 0, 4 and 8, each with its call of work; top-level C calls
    # (range) are not requests and are left out.
    assert counts == Counter({("call", "request"): 3, ("return", "request"): 3,
                              ("call", "work"): 3, ("return", "work"): 3}), counts


def test_filters_apply_to_threads(run_py, tmp_path, hook_env):
    run_py(
        """
        import threading, json, rtrace
        def leaf(): json.dumps(1)
        def work():
            for _ in range(100): leaf()
        with rtrace.record(output="t.rtrace", include=["__main__.*"]):
            threads = list(map(lambda _: threading.Thread(target=work), range(4)))
            for t in threads: t.start()
            for t in threads: t.join()
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "t.rtrace")
    check_nesting(events)
    counts = Counter((e.kind, e.name) for e in events)
    assert counts == Counter({("call", "work"): 4, ("return", "work"): 4,
                              ("call", "leaf"): 400, ("return", "leaf"): 400,
                              ("call", "<lambda>"): 4, ("return", "<lambda>"): 4}), counts


@pytest.mark.parametrize(
    "options, error, message",
    [
        ({"min_duration": -1}, ValueError, "min_duration must be between 0 and 3600"),
        ({"min_duration": "1ms"}, TypeError, "min_duration must be a number of seconds"),
        ({"min_duration": 0.01, "lines": True}, ValueError, "cannot be combined with lines"),
        ({"max_depth": 0}, ValueError, "max_depth must be at least 1"),
        ({"max_depth": 2.5}, TypeError, "max_depth must be an int"),
        ({"sample": 0}, ValueError, "sample must be at least 1"),
        ({"include": 5}, TypeError, "include must be a pattern string or a list"),
        ({"exclude": ["ok", ""]}, TypeError, "exclude patterns must be non-empty strings"),
        ({"exclude_stdlib": "yes"}, TypeError, "exclude_stdlib must be True or False"),
        ({"log_args": [1]}, TypeError, "log_args patterns must be non-empty strings"),
    ],
)
def test_bad_filter_options_say_what_is_wrong(options, error, message):
    with pytest.raises(error, match=message):
        rtrace.record(output="never.rtrace", **options)
