"""Native programs on the Python timeline: the C example (compiled here with
gcc against include/rtrace.h and the built librtrace) and the Rust example
(tracing macros through RtraceLayer) call a Python service with flow tokens,
all recorded by one collector (`rtrace run`) into one merged timeline.

Needs `scripts/build-native` (run by scripts/dev-setup) to have built
target/release/librtrace.so and target/release/rust-client."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import pytest

import rtrace

ROOT = Path(__file__).resolve().parents[2]
RELEASE = Path(os.environ.get("CARGO_TARGET_DIR") or ROOT / "target") / "release"
REQUESTS = 4


def built(name: str) -> Path:
    path = RELEASE / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run scripts/build-native (scripts/dev-setup runs it)")
    return path


def link_flags() -> list[str]:
    """Compiler flags from the generated rtrace.pc: through pkg-config when
    it is installed, else read from the file the same way."""
    pc_dir = built("pkgconfig")
    if shutil.which("pkg-config"):
        env = dict(os.environ, PKG_CONFIG_PATH=str(pc_dir))
        out = subprocess.run(["pkg-config", "--cflags", "--libs", "rtrace"], env=env,
                             capture_output=True, text=True, check=True).stdout
        return shlex.split(out)
    variables: dict[str, str] = {}
    flags: list[str] = []
    for line in (pc_dir / "rtrace.pc").read_text().splitlines():
        if "=" in line and ":" not in line.split("=")[0]:
            key, value = line.split("=", 1)
            variables[key.strip()] = value.strip()
        elif line.startswith(("Cflags:", "Libs:")):
            value = line.split(":", 1)[1]
            for key, var in variables.items():
                value = value.replace("${%s}" % key, var)
            flags += shlex.split(value)
    return flags


@pytest.fixture(scope="module")
def c_client(tmp_path_factory) -> Path:
    built("librtrace.so")
    exe = tmp_path_factory.mktemp("c") / "c-client"
    subprocess.run(
        ["gcc", "-Wall", "-Werror", str(ROOT / "examples/native/c/client.c"), "-o", str(exe),
         *link_flags()],
        check=True,
    )
    return exe


def record_example(tmp_path: Path, *clients: str) -> Path:
    """`rtrace run -- service.py SOCKET CLIENT...` into one Perfetto file."""
    out = tmp_path / "native.pftrace"
    rtrace_bin = Path(sys.executable).parent / "rtrace"
    proc = subprocess.run(
        [str(rtrace_bin), "run", "-o", str(out), "--", str(ROOT / "examples/native/service.py"),
         str(tmp_path / "svc.sock"), *(f"{c} {REQUESTS}" for c in clients)],
        cwd=tmp_path, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    for client in ("c-client", "rust-client"):
        assert f"{client}: {REQUESTS} requests" in proc.stdout, proc.stdout
    return out


def test_c_and_rust_clients_and_a_python_service_share_one_timeline(tmp_path, c_client):
    rust_client = built("rust-client")
    timeline = record_example(tmp_path, str(c_client), str(rust_client))

    reader = rtrace.read(timeline)
    events = list(reader)
    pid_of = {p["session"]: p["pid"] for p in reader.processes()}
    assert {"c-client", "rust-client", "py-service"} <= set(pid_of), pid_of
    by_pid: dict[int, list] = defaultdict(list)
    for ev in events:
        by_pid[ev.pid].append(ev)

    c = Counter((e.kind, e.name) for e in by_pid[pid_of["c-client"]])
    assert c[("span_begin", "request")] == c[("span_end", "request")] == REQUESTS
    assert c[("span_begin", "session")] == 1
    assert c[("counter", "c_in_flight")] == 2 * REQUESTS
    assert c[("flow_out", "send")] == c[("flow_in", "receive")] == REQUESTS
    values = [e.value for e in by_pid[pid_of["c-client"]] if e.kind == "counter"]
    assert values == [1.0, 0.0] * REQUESTS
    rust = Counter((e.kind, e.name) for e in by_pid[pid_of["rust-client"]])
    assert rust[("span_begin", "request")] == rust[("span_end", "request")] == REQUESTS
    assert rust[("instant", "reply")] == REQUESTS
    assert rust[("counter", "rust_requests_sent")] == REQUESTS
    py = Counter((e.kind, e.name) for e in by_pid[pid_of["py-service"]])
    assert py[("flow_in", "receive")] == py[("flow_out", "send")] == 2 * REQUESTS
    assert py[("call", "work")] == 2 * REQUESTS

    # Every arrow joins a native process and the service, send before receive.
    by_id: dict = defaultdict(dict)
    for e in events:
        if e.kind in ("flow_out", "flow_in"):
            assert e.kind not in by_id[e.flow_id], e
            by_id[e.flow_id][e.kind] = e
    assert len(by_id) == 4 * REQUESTS
    pairs: Counter = Counter()
    for flow_id, pair in by_id.items():
        assert set(pair) == {"flow_out", "flow_in"}, (flow_id, pair)
        assert pair["flow_out"].ts_ns <= pair["flow_in"].ts_ns, pair
        pairs[(pair["flow_out"].pid, pair["flow_in"].pid)] += 1
    for client in ("c-client", "rust-client"):
        assert pairs[(pid_of[client], pid_of["py-service"])] == REQUESTS
        assert pairs[(pid_of["py-service"], pid_of[client])] == REQUESTS
