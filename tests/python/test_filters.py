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
            out = []
            for i in range(n):                # no comprehension: the same on 3.11
                out.append(handle(i))
            return out
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


def test_sample_counts_top_level_spans_as_requests(run_py, tmp_path, hook_env):
    """A server's loop is one long top-level call: its requests are spans,
    and sample= keeps one in N of them whole (calls, nested spans, instants),
    and leaves the user events of left-out top-level calls out too."""
    run_py(
        """
        import rtrace
        def work(i): return i
        def serve(n):
            for i in range(n):
                with rtrace.span("request", i=i):
                    with rtrace.span("inner"):
                        work(i)
                    rtrace.instant("done", i=i)
        def request(i):
            rtrace.instant("in request", i=i)
            return work(i)
        with rtrace.record(output="s.rtrace", sample=4):
            serve(12)                 # top-level call 0: kept
            for i in range(1, 8):     # top-level calls 1..7: 4 kept
                request(i)
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "s.rtrace")
    check_nesting(events)
    kept = [e.args["i"] for e in events if e.kind == "span_begin" and e.name == "request"]
    assert kept == [0, 4, 8], kept
    counts = Counter((e.kind, e.name) for e in events)
    assert counts[("span_begin", "inner")] == counts[("span_end", "inner")] == 3
    assert counts[("span_end", "request")] == 3
    assert [e.args["i"] for e in events if e.name == "done"] == [0, 4, 8]
    assert [e.args["i"] for e in events if e.name == "in request"] == [4]
    # work: once per kept span, once in the kept request.
    assert counts[("call", "work")] == 4 and counts[("call", "request")] == 1, counts


def test_user_events_keep_order_and_their_calls_under_min_duration(run_py, tmp_path, hook_env):
    """A call holding a user event is written before it, however short, so
    the thread's events stay in time order and well nested."""
    run_py(
        """
        import time, rtrace
        def quick(i):
            rtrace.instant("tick", i=i)
        def slow():
            time.sleep(0.003)
        def outer():
            for i in range(3):
                quick(i)
            slow()
        with rtrace.record(output="u.rtrace", min_duration=0.001):
            outer()
            quick(9)
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "u.rtrace")
    check_nesting(events)
    stamps = [e.ts_ns for e in events]
    assert stamps == sorted(stamps)
    counts = Counter((e.kind, e.name) for e in events)
    assert counts[("call", "quick")] == 4 and counts[("instant", "tick")] == 4, counts
    assert counts[("call", "slow")] == 1 and counts[("call", "outer")] == 1, counts


def test_record_filters_follow_children(run_py, tmp_path):
    """Children of a filtered record() record with the same filters: forked
    ones and new interpreters alike."""
    write_myapp(tmp_path)
    run_py(
        """
        import os, subprocess, sys, rtrace, myapp
        with rtrace.record(output="f.rtrace", include=["myapp.*"]):
            myapp.main(2)
            pid = os.fork()
            if pid == 0:
                myapp.main(3)
                os._exit(0)
            os.waitpid(pid, 0)
            subprocess.run([sys.executable, "-c", "import myapp; myapp.main(4)"], check=True)
        """,
    )
    files = sorted(tmp_path.glob("*.rtrace"))
    assert len(files) == 3, files
    handles = []
    for path in files:
        events, _ = read_events(path)
        check_nesting(events)
        assert events and all(e.module.startswith("myapp") for e in events), path
        handles.append(sum(1 for e in events if e.kind == "call" and e.name == "handle"))
    assert sorted(handles) == [2, 3, 4], handles


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


def test_log_args_records_bounded_reprs_of_arguments_and_return_values(run_py, tmp_path, hook_env):
    run_py(
        """
        import rtrace
        class Boom:
            def __repr__(self): raise RuntimeError("no repr")
        class Shop:
            def buy(self, item, n=1, *rest, express=False, **extra):
                return {"item": item, "n": n}
            def __repr__(self): return "<Shop>"
        def gen(a):
            yield a
            yield a + 1
        def big(xs, s):
            return Boom()
        def quiet(): return 1
        with rtrace.record(output="a.rtrace", log_args=True, exclude_stdlib=True):
            Shop().buy("tea", 2, 3, express=True, gift=None)
            list(gen(10))
            big(list(range(1000)), "x" * 500)
            quiet()
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "a.rtrace")
    check_nesting(events)
    logged = [(e.kind, e.name, e.args_repr if e.kind == "call" else e.return_repr)
              for e in events if e.kind in ("call", "return")]
    assert logged[:2] == [
        ("call", "Shop.buy", "self=<Shop>, item='tea', n=2, express=True, rest=(3,), "
                             "extra={'gift': None}"),
        ("return", "Shop.buy", "{'item': 'tea', 'n': 2}"),
    ]
    # A generator: its arguments once, at its start; each yield as a return.
    gen = [x for x in logged if x[1] == "gen"]
    assert gen == [("call", "gen", "a=10"), ("return", "gen", "10"),
                   ("call", "gen", None), ("return", "gen", "11"),
                   ("call", "gen", None), ("return", "gen", "None")]
    big_call, big_return = [x for x in logged if x[1] == "big"]
    assert big_call[2].startswith("xs=[0, 1, 2, 3, 4, 5, 6, 7, ...], s='xxx")
    assert len(big_call[2]) < 200
    assert big_return[2].startswith("<Boom instance at 0x")  # reprlib names a failing repr
    assert ("call", "quiet", None) in logged and ("return", "quiet", "1") in logged
    # Only calls and returns carry texts.
    assert all(e.args_repr is None and e.return_repr is None for e in events
               if e.kind not in ("call", "return"))


def test_log_args_patterns_choose_functions_and_texts_reach_the_timeline(run_py, tmp_path, hook_env):
    run_py(
        """
        import rtrace
        def request(i): return work(i) * 2
        def work(i): return i + 1
        with rtrace.record(output="p.rtrace", log_args=["request"], sample=4):
            for i in range(10):
                request(i)
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "p.rtrace")
    requests = [(e.args_repr, e.return_repr) for e in events if e.name == "request"]
    # sample=4 keeps requests 0, 4 and 8; only `request` logs its arguments.
    assert requests == [("i=0", None), (None, "2"), ("i=4", None), (None, "10"),
                        ("i=8", None), (None, "18")]
    assert all(e.args_repr is None and e.return_repr is None for e in events if e.name == "work")
    # The merged timeline (Perfetto and Chrome JSON) carries them too.
    import json
    import subprocess
    rtrace_cli = Path(sys.executable).parent / "rtrace"
    for out in ("p.pftrace", "p.json"):
        subprocess.run([str(rtrace_cli), "export", "p.rtrace", "-o", out], cwd=tmp_path,
                       check=True, capture_output=True)
    merged, reader = read_events(tmp_path / "p.pftrace")
    assert reader.merged
    assert [(e.args_repr, e.return_repr) for e in merged if e.name == "request"] == requests
    chrome = json.loads((tmp_path / "p.json").read_text())
    assert [e["args"].get("args") for e in chrome if e.get("name") == "request"] == \
        ["i=0", "i=4", "i=8"]
    assert sum(1 for e in chrome if e.get("args", {}).get("return") in ("2", "10", "18")) == 3


def test_log_args_survives_reprs_that_let_other_threads_run(run_py, tmp_path, hook_env):
    run_py(
        """
        import threading, time, rtrace
        class Slow:
            def __repr__(self):
                time.sleep(0.001)            # lets the other threads run
                return "Slow()"
        def handle(x): return x
        def worker():
            for _ in range(30): handle(Slow())
        with rtrace.record(output="t.rtrace", log_args=["handle"], include=["__main__.*"]):
            threads = list(map(lambda _: threading.Thread(target=worker), range(4)))
            for t in threads: t.start()
            for t in threads: t.join()
        """,
        env=hook_env,
    )
    events, _ = read_events(tmp_path / "t.rtrace")
    check_nesting(events)
    handles = [e for e in events if e.name == "handle"]
    assert len(handles) == 240
    assert all(e.args_repr == "x=Slow()" for e in handles if e.kind == "call")
    assert all(e.return_repr == "Slow()" for e in handles if e.kind == "return")


def test_rtrace_run_passes_filters_to_every_process(tmp_path):
    from test_cli import rtrace_cli

    write_myapp(tmp_path)
    (tmp_path / "app.py").write_text(textwrap.dedent("""
        import subprocess, sys, time, myapp
        def pause(): time.sleep(0.01)
        myapp.main(3)
        pause()
        subprocess.run([sys.executable, "-c", "import myapp; myapp.main(2)"], check=True)
        """))
    proc = rtrace_cli("run", "--include", "myapp.*", "--include", "*.pause", "--log-args",
                      "handle", "--max-depth", "2", "-o", "r.pftrace", "--", "app.py",
                      cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    events, reader = read_events(tmp_path / "r.pftrace")
    check_nesting(events)
    assert len(reader.processes()) == 2
    assert all(e.module.startswith("myapp") or e.name == "pause" for e in events)
    per_pid = Counter((e.pid, e.name) for e in events if e.kind == "call")
    parent, child = sorted({pid for pid, _ in per_pid}, key=lambda p: -per_pid[(p, "handle")])
    assert per_pid[(parent, "handle")] == 3 and per_pid[(child, "handle")] == 2
    assert per_pid[(parent, "pause")] == 1
    assert not any(name == "parse" for _, name in per_pid)  # depth 3: main > handle > parse
    assert sorted(e.args_repr for e in events if e.name == "handle" and e.kind == "call") == \
        ["i=0", "i=0", "i=1", "i=1", "i=2"]

    bad = rtrace_cli("run", "--min-duration", "-1", "--", "app.py", cwd=tmp_path)
    assert bad.returncode == 2 and "min_duration must be between 0 and 3600" in bad.stderr
