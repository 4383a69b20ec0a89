"""Run summerwind's h2spec (http2 section) against a unix-socket server through a socat bridge."""

from __future__ import annotations

import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

from tests.fixtures._proc import free_port

REPO = Path(__file__).resolve().parents[2]
H2SPEC = REPO.parent / "shared" / "tools" / "h2spec"  # CI puts shared/ beside the clone
PATH = "/runtime.v1.RuntimeService/Version"


@dataclass
class Report:
    passed: set[str]
    failed: dict[str, str]  # spec id ("http2/6.1/1") -> h2spec's expected/actual text

    @property
    def summary(self) -> str:
        return f"{len(self.passed)} passed, {len(self.failed)} failed"


def run(socket: Path, out: Path, spec: str = "http2", timeout: int = 3) -> Report:
    """One h2spec run over a fresh loopback bridge; spec is a section or one test id."""
    port = free_port()
    bridge = subprocess.Popen(
        ["socat", f"TCP-LISTEN:{port},bind=127.0.0.1,fork,reuseaddr", f"UNIX-CONNECT:{socket}"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(port)
        subprocess.run([str(H2SPEC), spec, "-h", "127.0.0.1", "-p", str(port), "-P", PATH,
                        "-o", str(timeout), "-j", str(out)],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=900)
    finally:
        bridge.terminate()
        bridge.wait(10)
    return parse(out)


def _wait_listening(port: int) -> None:
    import socket as s

    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with s.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"socat bridge on port {port} never listened")


def parse(xml: Path) -> Report:
    """Spec ids are the section's package plus the test's position, as h2spec numbers them."""
    passed: set[str] = set()
    failed: dict[str, str] = {}
    for suite in ET.parse(xml).getroot():
        for n, case in enumerate(suite.findall("testcase"), 1):
            sid = f"{suite.get('package')}/{n}"
            bad = case.find("error") if case.find("error") is not None else case.find("failure")
            if bad is not None:
                said = " / ".join((bad.text or "").splitlines())
                failed[sid] = f"{case.get('classname')}: {said}"
            elif case.find("skipped") is None:
                passed.add(sid)
    return Report(passed, failed)
