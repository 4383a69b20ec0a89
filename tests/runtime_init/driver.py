"""Single-threaded driver: runs runtime.init in its own process so pytest never forks.

Usage: python tests/runtime_init/driver.py REQUEST.json RESULT.json
Container stdio is this process's stdio (stdin should be /dev/null).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from runtime import init, libc  # noqa: E402
from runtime.rootfs import Overlay  # noqa: E402

STDIO = (0, 1, 2)
NS_NAMES = {"pid": "pid", "network": "net", "ipc": "ipc", "uts": "uts"}


def _wait(pid: int) -> int:
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _kill(sp: init.Spawned) -> None:
    sp.kill(signal.SIGKILL)
    _wait(sp.pid)
    sp.close_pidfd()


def run(req: dict[str, Any]) -> dict[str, Any]:
    """One request: create (+start), optional execs, wait or kill."""
    ov = Overlay(**req["overlay"]) if req.get("overlay") else None
    res: dict[str, Any] = {}
    if req.get("leak_fd"):  # an inheritable host directory fd, as a careless caller might hold
        os.set_inheritable(os.open("/", os.O_RDONLY | os.O_DIRECTORY), True)
    stdio = STDIO
    master = -1
    if req.get("tty"):
        master, slave = os.openpty()
        stdio = (slave, slave, slave)
    try:
        sp = init.spawn(req["spec"], req["rootfs"], stdio=stdio,
                        cgroup_path=req.get("cgroup_path"), overlay=ov)
    except Exception as e:  # noqa: BLE001
        return {"error": str(e), "stage": "create"}
    res["pid"] = sp.pid
    if master >= 0:
        os.close(slave)
    if req.get("kill_before_start"):
        sp.kill(signal.SIGKILL)
        res["exit"] = _wait(sp.pid)
    try:
        if req.get("start", True):
            sp.start()
    except init.InitError as e:
        if not req.get("kill_before_start"):
            _wait(sp.pid)
        return {"error": str(e), "stage": "start"}
    exits: list[int | str] = []
    for proc in req.get("exec", []):
        try:
            pid = init.spawn_exec(sp.pid, proc, stdio=STDIO, cgroup_path=req.get("cgroup_path"))
            exits.append(_wait(pid))
        except Exception as e:  # noqa: BLE001
            exits.append(str(e))
    res["exec"] = exits
    if req.get("joiner"):  # a second container sharing namespaces of the first, by path
        spec = req["joiner"]
        for ns in spec["linux"]["namespaces"]:
            if ns.get("path") == "FIRST":
                ns["path"] = f"/proc/{sp.pid}/ns/{NS_NAMES[ns['type']]}"
        res["joiner_exit"] = init.run(spec, req["rootfs"], stdio=STDIO)
    if req.get("kill"):
        _kill(sp)
    else:
        res["exit"] = _wait(sp.pid)
        sp.close_pidfd()
    init.forget(sp.pid)
    if master >= 0:
        res["tty"] = _drain(master)
    return res


def _drain(master: int) -> str:
    """Everything the container wrote to its terminal (EIO once the last slave closed)."""
    out = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    os.close(master)
    return out.decode(errors="replace")


def bench(req: dict[str, Any]) -> dict[str, Any]:
    """spawn+start+wait of the spec's process, n times, in this warm process."""
    times = []
    for _ in range(int(req.get("n", 50))):
        t0 = time.perf_counter()
        sp = init.spawn(req["spec"], req["rootfs"], stdio=STDIO,
                        cgroup_path=req.get("cgroup_path"))
        sp.start()
        code = _wait(sp.pid)
        times.append(time.perf_counter() - t0)
        sp.close_pidfd()
        init.forget(sp.pid)
        if code != 0:
            return {"error": f"exit {code}"}
    return {"times": times}


def main() -> None:
    with open(sys.argv[1]) as f:
        req = json.load(f)
    libc.set_child_subreaper()
    res = bench(req) if req.get("mode") == "bench" else run(req)
    with open(sys.argv[2], "w") as f:
        json.dump(res, f)


if __name__ == "__main__":
    main()
