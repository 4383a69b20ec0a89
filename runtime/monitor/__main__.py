"""Entry point: `python -m runtime.monitor --state-dir D --run-dir R [--spawner MODULE]`.

The launched process forks once (it is fresh and single-threaded), the child becomes the
monitor and the parent exits as soon as the child serves, so berthd only ever waits for a
short-lived process and the monitor is never berthd's child. Exit status 0 also covers
"another monitor already serves this state dir".
"""

from __future__ import annotations

import argparse
import ctypes
import fcntl
import importlib
import logging
import os
import sys

PR_SET_CHILD_SUBREAPER = 36


def _set_subreaper() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER)")


def _without_tls() -> None:
    """The monitor never speaks TLS, yet asyncio's optional `import ssl` alone maps OpenSSL
    (~4 MiB RSS) into a process that lives as long as the node: make that import fail."""
    sys.modules.setdefault("ssl", None)  # type: ignore[arg-type]


def _run(args: argparse.Namespace, ready_fd: int) -> None:
    _without_tls()
    import asyncio

    from runtime.monitor.server import Server

    os.setsid()
    os.chdir("/")
    lock = os.open(os.path.join(args.state_dir, "monitor.lock"),
                   os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.write(ready_fd, b"busy")
        return
    os.ftruncate(lock, 0)
    os.write(lock, f"{os.getpid()}\n".encode())
    _set_subreaper()
    spawner = importlib.import_module(args.spawner)

    def ready() -> None:
        os.write(ready_fd, b"ok")
        os.close(ready_fd)

    asyncio.run(Server(args.state_dir, args.run_dir, spawner).serve(ready))


def main() -> None:
    """Parse arguments, daemonize, report readiness (or the error) through a pipe."""
    p = argparse.ArgumentParser(prog="berth-monitor")
    p.add_argument("--state-dir", required=True)
    p.add_argument("--run-dir", required=True)
    p.add_argument("--spawner", default="runtime.init")
    p.add_argument("--foreground", action="store_true", help="do not fork (debugging)")
    args = p.parse_args()
    os.makedirs(args.run_dir, mode=0o700, exist_ok=True)
    os.makedirs(os.path.join(args.state_dir, "containers"), mode=0o700, exist_ok=True)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s monitor[%(process)d] %(levelname)s %(message)s")
    r, w = os.pipe()
    if args.foreground or os.fork() == 0:
        os.close(r)
        null = os.open(os.devnull, os.O_RDWR)
        os.dup2(null, 0)
        os.dup2(null, 1)  # the launcher's stdout is a pipe its caller reads to EOF
        os.close(null)
        try:
            _run(args, w)
        except Exception as e:
            logging.exception("monitor failed")
            os.write(w, f"error: {e}".encode())
            raise SystemExit(1) from e
        return
    os.close(w)
    chunks = []
    while chunk := os.read(r, 4096):
        chunks.append(chunk)
    msg = b"".join(chunks).decode(errors="replace")
    if msg in ("ok", "busy"):
        print(msg)
        return
    print(msg or "monitor died before it was ready", file=sys.stderr)
    raise SystemExit(1)


if __name__ == "__main__":
    main()
