"""Runs the two services together: starts svc-b, runs svc-a against it, and
stops svc-b. Record the whole system into one timeline with

    rtrace run -o services.pftrace -- examples/services/main.py

Each service gets its own session name (svc-a, svc-b) through
RTRACE_SESSION; svc-a's pool workers record under svc-a too.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    env_b = dict(os.environ, RTRACE_SESSION="svc-b")
    svc_b = subprocess.Popen([sys.executable, str(HERE / "svc_b.py")], env=env_b,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = svc_b.stdout.readline()
        if not line.startswith("listening on "):
            print(f"svc-b did not start: {line!r}", file=sys.stderr)
            return 1
        port = int(line.split()[-1])
        env_a = dict(os.environ, RTRACE_SESSION="svc-a")
        return subprocess.run([sys.executable, str(HERE / "svc_a.py"), f"http://127.0.0.1:{port}"],
                              env=env_a).returncode
    finally:
        svc_b.stdin.close()
        svc_b.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
