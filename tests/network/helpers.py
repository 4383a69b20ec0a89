"""Drive CNI plugins as a runtime would, and inspect the kernel state they leave."""

from __future__ import annotations

import json
import os
import random
import subprocess
from dataclasses import dataclass

from cni_plugins import firewall

REFERENCE_BIN = "/usr/lib/cni"


@dataclass
class CNIRun:
    rc: int
    out: dict
    stderr: str


def cni(
    bin_dir: str,
    kind: str,
    command: str,
    conf: dict,
    cid: str = "",
    netns: str = "",
    ifname: str = "eth0",
    extra_env: dict[str, str] | None = None,
    path: str | None = None,
) -> CNIRun:
    env = {
        "PATH": os.environ["PATH"],
        "CNI_COMMAND": command,
        "CNI_CONTAINERID": cid,
        "CNI_NETNS": netns,
        "CNI_IFNAME": ifname,
        "CNI_PATH": path or bin_dir,
        **(extra_env or {}),
    }
    proc = subprocess.run(
        [os.path.join(bin_dir, kind)],
        input=json.dumps(conf).encode(),
        env=env,
        capture_output=True,
        timeout=60,
    )
    out = json.loads(proc.stdout) if proc.stdout.strip() else {}
    return CNIRun(proc.returncode, out, proc.stderr.decode())


_CONF = "/proc/sys/net/ipv4/conf"


def _forwarding() -> dict[str, str]:
    out = {}
    for name in os.listdir(_CONF):
        try:
            with open(f"{_CONF}/{name}/forwarding") as f:
                out[name] = f.read().strip()
        except FileNotFoundError:
            continue  # an interface of someone else's pod went away meanwhile
    return out


def snapshot_forwarding() -> dict[str, str]:
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        return {**_forwarding(), "<ip_forward>": f.read().strip()}


def restore_forwarding(snap: dict[str, str]) -> None:
    """Undo the reference bridge's global ip_forward=1. The kernel copies a changed global value
    onto every interface, so interfaces that appeared meanwhile (other live pod networks) get
    their own value back, and the ones we saw before get their old one."""
    now = _forwarding()
    with open("/proc/sys/net/ipv4/ip_forward", "r+") as f:
        if f.read().strip() == snap["<ip_forward>"]:
            return
        f.seek(0)
        f.write(snap["<ip_forward>"])
    for name, value in now.items():
        if name in ("all", "default"):
            continue
        try:
            with open(f"{_CONF}/{name}/forwarding", "w") as f:
                f.write(snap.get(name, value))
        except FileNotFoundError:
            continue


def ok(run: CNIRun) -> dict:
    assert run.rc == 0, (run.out, run.stderr)
    return run.out


def free_subnet() -> str:
    """A /24 inside 10.88.0.0/16 that no route on this host uses yet (parallel helpers)."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True).stdout
    for _ in range(200):
        third = random.randint(100, 254)
        if f"10.88.{third}." not in routes:
            return f"10.88.{third}.0/24"
    raise RuntimeError("no free /24 in 10.88.0.0/16")


def rand_name(prefix: str) -> str:
    return prefix + os.urandom(3).hex()


def ip_json(*args: str, netns: str | None = None) -> list[dict]:
    cmd = ["ip", "-j", *args]
    if netns:
        cmd = ["nsenter", f"--net={netns}", *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    return json.loads(out) if out.strip() else []


def links_on(bridge: str) -> list[str]:
    return [link["ifname"] for link in ip_json("link", "show", "master", bridge)]


def in_netns(netns: str, *cmd: str, timeout: float = 10, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["nsenter", f"--net={netns}", *cmd], capture_output=True, text=True, timeout=timeout, **kw
    )


def tagged_rules(network: str, container_id: str) -> list[str]:
    tags = [firewall.tag("portmap", network, container_id)]
    tags += [firewall.tag("bridge", network, f"{container_id}/{i}") for i in ("eth0", "net1")]
    return [r for t in tags for r in firewall.list_owned(t)]


def bridge_conf(
    name: str, bridge: str, subnet: str, data_dir: str, version: str = "1.0.0", **extra
) -> dict:
    return {
        "cniVersion": version,
        "name": name,
        "type": "bridge",
        "bridge": bridge,
        "isGateway": True,
        "ipMasq": True,
        "hairpinMode": True,
        "ipam": {
            "type": "host-local",
            "ranges": [[{"subnet": subnet}]],
            "routes": [{"dst": "0.0.0.0/0"}],
            "dataDir": data_dir,
        },
        **extra,
    }


class PodServer:
    """A tiny python server inside a pod netns: TCP says `word`, UDP echoes `word-<data>`."""

    def __init__(self, netns: str, port: int, word: str, udp: bool = False) -> None:
        if udp:
            body = (
                "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n"
                f"s.bind(('0.0.0.0',{port}))\n"
                "while True:\n"
                f"    d,a=s.recvfrom(100); s.sendto({word!r}.encode()+b'-'+d,a)\n"
            )
        else:
            body = (
                f"s=socket.create_server(('0.0.0.0',{port}))\n"
                "while True:\n"
                f"    c,a=s.accept(); c.sendall({word!r}.encode()+b'\\n'); c.close()\n"
            )
        self.proc = subprocess.Popen(
            ["nsenter", f"--net={netns}", "python3", "-c", "import socket\n" + body],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def tcp_fetch(addr: str, port: int, netns: str | None = None, tries: int = 30) -> str:
    """Connect (from the host or a pod) and return what the server said."""
    script = (
        "import socket,sys,time\n"
        f"for i in range({tries}):\n"
        "    try:\n"
        f"        s=socket.create_connection(({addr!r},{port}),timeout=2)\n"
        "        d=s.recv(100); s.close()\n"
        "        if d: print(d.decode().strip()); sys.exit(0)\n"
        "    except OSError: pass\n"
        "    time.sleep(0.1)\n"
        "sys.exit(1)\n"
    )
    cmd = ["python3", "-c", script]
    if netns:
        cmd = ["nsenter", f"--net={netns}", *cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
    return proc.stdout.strip()
