"""NAT rules tagged by container id, on nftables (preferred) or iptables, chosen at run time."""

from __future__ import annotations

import fcntl
import os

from cni_plugins import lean, nftnl

TABLE = "berth"
LOCK_PATH = "/run/berth-cni-firewall.lock"
# Base chains of table `ip berth`: name -> (hook, priority)
_BASE = {
    "prerouting": ("prerouting", "dstnat"),
    "output": ("output", "-100"),
    "postrouting": ("postrouting", "srcnat"),
}


class Rule:
    """One NAT rule: which base chain it lives in and its match/verdict, in nft syntax."""

    def __init__(self, chain: str, expr: str) -> None:
        self.chain = chain
        self.expr = expr


def backend() -> str:
    """nft = netlink with the nft CLI as fallback; nft-cli and iptables can be forced (tests)."""
    forced = os.environ.get("BERTH_CNI_FIREWALL")
    if forced in ("nft", "nft-cli", "iptables"):
        return forced
    return "nft" if lean.which("nft") else "iptables"


def _lock() -> int:
    fd = os.open(LOCK_PATH, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX)
    return fd


def tag(plugin: str, network: str, key: str) -> str:
    """Owner comment: scoped by network so GC of one network never touches another's rules."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in network[:40])
    return f"berth-{plugin}:{safe}:{key}"[:127]


class _Proc:
    def __init__(self, returncode: int, stdout: str, stderr: str) -> None:
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr


def _run(cmd: list[str], stdin: str = "") -> _Proc:
    rc, out, err = lean.run(cmd, stdin.encode())
    return _Proc(rc, out.decode(errors="replace"), err.decode(errors="replace"))


def _check(proc: _Proc, what: str) -> None:
    if proc.returncode != 0:
        raise OSError(f"{what} failed: {proc.stderr.strip()}")


def add(rules: list[Rule], owner: str) -> None:
    """Install rules atomically in one nft transaction (or sequential iptables calls)."""
    kind = backend()
    if kind != "iptables":
        body = [f'add rule ip {TABLE} {r.chain} {r.expr} comment "{owner}"' for r in rules]
        fd = _lock()  # serialised with prune(), which may drop the table when it empties
        try:
            if kind == "nft":
                try:
                    nftnl.add_rules(TABLE, _BASE, [(r.chain, r.expr) for r in rules], owner)
                    return
                except (OSError, ValueError):
                    pass  # the nft CLI below reports the real reason, if any
            # re-declaring hooked chains costs ~12 ms a transaction: only do it when missing
            if _run(["nft", "-f", "-"], "\n".join(body) + "\n").returncode == 0:
                return
            head = [f"add table ip {TABLE}"]
            for chain, (hook, prio) in _BASE.items():
                head.append(
                    f"add chain ip {TABLE} {chain} "
                    f"{{ type nat hook {hook} priority {prio}; policy accept; }}"
                )
            _check(_run(["nft", "-f", "-"], "\n".join(head + body) + "\n"), "nft add")
        finally:
            os.close(fd)
        return
    fd = _lock()
    try:
        for r in rules:
            chain = _ipt_chain(r.chain)
            _ipt_ensure_chain(chain, r.chain)
            cmd = ["iptables", "-w", "-t", "nat", "-A", chain, *_ipt_expr(r.expr)]
            _check(_run([*cmd, "-m", "comment", "--comment", owner]), "iptables -A")
    finally:
        os.close(fd)


def remove(owner: str) -> int:
    """Delete exactly the rules carrying this owner tag; returns how many went (0 is fine)."""
    fd = _lock()
    try:
        kind = backend()
        return _remove_ipt(owner) if kind == "iptables" else _remove_nft(owner, kind == "nft")
    finally:
        os.close(fd)


def _all_tagged() -> list[tuple[str, str]]:
    """(owner tag, rule text) for every tagged rule, across both backends."""
    found: list[tuple[str, str]] = []
    if lean.which("nft"):
        proc = _run(["nft", "-j", "list", "table", "ip", TABLE])
        if proc.returncode == 0:
            for item in lean.loads(proc.stdout).get("nftables", []):
                rule = item.get("rule")
                if rule and rule.get("comment"):
                    found.append((rule["comment"], lean.dumps(rule)))
    if lean.which("iptables-save"):
        for line in _run(["iptables-save", "-t", "nat"]).stdout.splitlines():
            words = line.split()
            if "--comment" in words:
                owner = words[words.index("--comment") + 1].strip('"')
                found.append((owner, line))
    return found


def list_owned(owner: str) -> list[str]:
    """Rules carrying this tag; tests use it to prove DEL left nothing behind."""
    return [text for tag_, text in _all_tagged() if tag_ == owner]


def owners(prefix: str) -> set[str]:
    return {tag_ for tag_, _text in _all_tagged() if tag_.startswith(prefix)}


def _remove_nft(owner: str, netlink: bool) -> int:
    if netlink:
        try:
            return nftnl.remove_owned(TABLE, owner)
        except (OSError, ValueError, KeyError):
            pass  # fall back to the nft CLI
    proc = _run(["nft", "-j", "list", "table", "ip", TABLE])
    if proc.returncode != 0:
        return 0  # no table: nothing of ours is left
    cmds = []
    for item in lean.loads(proc.stdout).get("nftables", []):
        rule = item.get("rule")
        if rule and rule.get("comment") == owner:
            cmds.append(f"delete rule ip {TABLE} {rule['chain']} handle {rule['handle']}")
    if cmds:
        _check(_run(["nft", "-f", "-"], "\n".join(cmds) + "\n"), "nft delete")
    return len(cmds)


def prune() -> None:
    """Drop berth's table/chains once no tagged rule is left (tests and daemon shutdown)."""
    fd = _lock()
    try:
        if lean.which("nft"):
            proc = _run(["nft", "-j", "list", "table", "ip", TABLE])
            if proc.returncode == 0:
                items = lean.loads(proc.stdout).get("nftables", [])
                if not any("rule" in item for item in items):
                    _run(["nft", "delete", "table", "ip", TABLE])
        if lean.which("iptables"):
            for base in _BASE:
                chain = _ipt_chain(base)
                listing = _run(["iptables", "-w", "-t", "nat", "-S", chain])
                if listing.returncode != 0 or len(listing.stdout.splitlines()) > 1:
                    continue
                jump = ["-j", chain]
                if base in ("prerouting", "output"):
                    jump = ["-m", "addrtype", "--dst-type", "LOCAL", *jump]
                _run(["iptables", "-w", "-t", "nat", "-D", base.upper(), *jump])
                _run(["iptables", "-w", "-t", "nat", "-X", chain])
    finally:
        os.close(fd)


# iptables backend: one BERTH-<CHAIN> chain per base chain, jumped to from the built-in chain.


def _ipt_chain(base: str) -> str:
    return f"BERTH-{base.upper()}"


def _ipt_ensure_chain(chain: str, base: str) -> None:
    if _run(["iptables", "-w", "-t", "nat", "-N", chain]).returncode == 0:
        jump = ["-j", chain]
        if base in ("prerouting", "output"):
            jump = ["-m", "addrtype", "--dst-type", "LOCAL", *jump]
        _check(_run(["iptables", "-w", "-t", "nat", "-A", base.upper(), *jump]), "iptables jump")


def _ipt_expr(expr: str) -> list[str]:
    """Translate the small nft vocabulary we emit into iptables arguments."""
    words = expr.split()
    out: list[str] = []
    i = 0
    while i < len(words):
        w = words[i]
        if w == "fib" and words[i + 1 : i + 4] == ["daddr", "type", "local"]:
            out += ["-m", "addrtype", "--dst-type", "LOCAL"]
            i += 4
        elif w == "ip" and words[i + 1] in ("saddr", "daddr"):
            flag = "-s" if words[i + 1] == "saddr" else "-d"
            if words[i + 2] == "!=":
                out += ["!", flag, words[i + 3]]
                i += 4
            else:
                out += [flag, words[i + 2]]
                i += 3
        elif w in ("tcp", "udp") and words[i + 1] == "dport":
            out += ["-p", w, "--dport", words[i + 2]]
            i += 3
        elif w == "dnat":
            out += ["-j", "DNAT", "--to-destination", words[i + 2]]
            i += 3
        elif w == "masquerade":
            out += ["-j", "MASQUERADE"]
            i += 1
        else:
            raise ValueError(f"cannot translate {w!r} in {expr!r}")
    return out


def _remove_ipt(owner: str) -> int:
    proc = _run(["iptables-save", "-t", "nat"])
    n = 0
    for line in proc.stdout.splitlines():
        if line.startswith("-A ") and owner in line:
            spec = line.split()[1:]
            cmd = ["iptables", "-w", "-t", "nat", "-D", *_unquote(spec)]
            if _run(cmd).returncode == 0:
                n += 1
    return n


def _unquote(words: list[str]) -> list[str]:
    return [w.strip('"') for w in words]
