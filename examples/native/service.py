"""A Python service that native clients (examples/native/c/client.c, the
Rust client in examples/native/rust) call over a Unix socket, each request
and reply carrying an rtrace flow token — one timeline, arrows included.

Protocol, one line each way: ``<token> <client> <n>`` → ``<token> <result>``.

    python examples/native/service.py SOCKET [CLIENT_COMMAND ...]

Listens on SOCKET, then runs each CLIENT_COMMAND (``program [args]``, run
as ``program SOCKET [args]``) and serves until they have all exited. Records itself as
session ``py-service`` (to $RTRACE_COLLECTOR, as under ``rtrace run``).
"""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import threading

import rtrace


def work(n: int) -> int:
    return sum(i * i for i in range(n))


def serve_client(conn: socket.socket) -> None:
    with conn, conn.makefile("rwb") as stream:
        for line in stream:
            token, client, n = line.decode().split()
            rtrace.flow_in(token)
            result = work(int(n))
            reply = rtrace.flow_out()
            stream.write(f"{reply} {result}\n".encode())
            stream.flush()


def main(path: str, clients: list[str]) -> int:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()
    threads = []

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return  # closed: every client is done
            t = threading.Thread(target=serve_client, args=(conn,), name=f"conn-{len(threads)}")
            t.start()
            threads.append(t)

    acceptor = threading.Thread(target=accept, name="acceptor")
    acceptor.start()
    procs = []
    for command in clients:
        program, *args = shlex.split(command)
        procs.append(subprocess.Popen([program, path, *args]))
    status = max((p.wait() for p in procs), default=0)
    server.shutdown(socket.SHUT_RDWR)  # wakes accept() (Linux)
    acceptor.join()
    server.close()
    for t in threads:
        t.join()
    return status


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    with rtrace.record(session="py-service"):
        code = main(sys.argv[1], sys.argv[2:])
    sys.exit(code)
