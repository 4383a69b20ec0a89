"""A Dockerfile as stages of instructions, parsed by Docker's own parser (PyPI `dockerfile`).

The `dockerfile` package wraps moby/buildkit's Go parser, so line continuations, the `escape`
directive, JSON and shell forms, flags and heredocs are read exactly as dockerd reads them. What
the parser leaves to the builder (which instructions exist where, stage names, `--target`, flag
syntax) is checked here, with messages that name the line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import dockerfile as _parser

KNOWN = frozenset({"FROM", "ARG", "ENV", "LABEL", "WORKDIR", "USER", "COPY", "ADD", "RUN", "CMD",
                   "ENTRYPOINT", "EXPOSE", "VOLUME", "HEALTHCHECK", "STOPSIGNAL", "SHELL",
                   "ONBUILD", "MAINTAINER"})
FLAGS = {"FROM": {"platform"}, "COPY": {"from", "chown", "chmod"}, "ADD": {"chown", "chmod"},
         "HEALTHCHECK": {"interval", "timeout", "start-period", "retries"},
         "RUN": set()}
_ESCAPE = re.compile(r"^#\s*escape\s*=\s*(\S)\s*$", re.I)
_NAME = re.compile(r"^[a-z][a-z0-9_.-]*$")


class DockerfileError(ValueError):
    """The Dockerfile cannot be built as written; the message names the line."""


@dataclass(frozen=True)
class Instruction:
    """One instruction with its raw (unexpanded) words."""

    cmd: str
    original: str
    line: int
    values: tuple[str, ...]
    flags: dict[str, str] = field(default_factory=dict)
    json: bool = False
    sub: Instruction | None = None  # ONBUILD's trigger

    def where(self) -> str:
        return f"line {self.line}: {self.original[:200]}"


@dataclass
class Stage:
    """One FROM and what follows it."""

    index: int
    name: str
    base: str
    platform: str
    line: int
    instructions: list[Instruction] = field(default_factory=list)


@dataclass
class Dockerfile:
    """Meta ARGs (before the first FROM), the stages, and the escape character."""

    meta_args: list[Instruction]
    stages: list[Stage]
    escape: str = "\\"

    def target(self, name: str) -> int:
        """Index of the last stage to build for --target (the last stage without one)."""
        if not name:
            return len(self.stages) - 1
        for st in self.stages:
            if st.name == name.lower():
                return st.index
        raise DockerfileError(f"target stage {name!r} could not be found")

    def stage_ref(self, word: str) -> int | None:
        """The stage a FROM or COPY --from word names (by name or index), if any."""
        for st in self.stages:
            if st.name and st.name == word.lower():
                return st.index
        if word.isdigit() and int(word) < len(self.stages):
            return int(word)
        return None


def escape_char(text: str) -> str:
    """The `# escape=` parser directive, which must come before anything else."""
    for line in text.splitlines():
        m = _ESCAPE.match(line.strip())
        if m:
            if m.group(1) not in "\\`":
                raise DockerfileError(f"invalid escape token {m.group(1)!r}: "
                                      "must be ` or \\")
            return m.group(1)
        if not line.strip().startswith("#") or "=" not in line:
            break
    return "\\"


def _flags(c: _parser.Command, line: int) -> dict[str, str]:
    allowed = FLAGS.get(c.cmd.upper(), set())
    out: dict[str, str] = {}
    for raw in c.flags:
        name, eq, value = raw.removeprefix("--").partition("=")
        if name not in allowed:
            raise DockerfileError(f"line {line}: unknown flag --{name} for {c.cmd.upper()}")
        if not eq:
            raise DockerfileError(f"line {line}: flag --{name} needs a value")
        out[name] = value
    return out


def _instruction(c: _parser.Command) -> Instruction:
    cmd = c.cmd.upper()
    if cmd not in KNOWN:
        raise DockerfileError(f"line {c.start_line}: unknown instruction: {cmd}")
    if c.heredocs:
        raise DockerfileError(f"line {c.start_line}: heredocs need BuildKit; the classic "
                              "builder does not support them")
    sub = None
    if cmd == "ONBUILD":
        trigger = c.original.split(None, 1)[1] if " " in c.original.strip() else ""
        if not trigger:
            raise DockerfileError(f"line {c.start_line}: ONBUILD needs an instruction")
        inner = parse_one(trigger)
        if inner.cmd in ("ONBUILD", "FROM", "MAINTAINER"):
            raise DockerfileError(f"line {c.start_line}: {inner.cmd} isn't allowed as an "
                                  "ONBUILD trigger")
        sub = inner
    return Instruction(cmd=cmd, original=c.original, line=c.start_line,
                       values=tuple(c.value), flags=_flags(c, c.start_line), json=c.json,
                       sub=sub)


def parse_one(text: str) -> Instruction:
    """A single instruction (an ONBUILD trigger stored in an image config)."""
    try:
        cmds = _parser.parse_string(text + "\n")
    except _parser.GoParseError as e:
        raise DockerfileError(f"invalid instruction {text!r}: {e}") from None
    if len(cmds) != 1:
        raise DockerfileError(f"expected one instruction, got {text!r}")
    return _instruction(cmds[0])


def parse(text: str) -> Dockerfile:
    """Stages and meta ARGs; refuses what dockerd's classic builder refuses."""
    try:
        cmds = _parser.parse_string(text)
    except _parser.GoParseError as e:
        raise DockerfileError(f"Dockerfile parse error: {e}") from None
    df = Dockerfile(meta_args=[], stages=[], escape=escape_char(text))
    for c in cmds:
        ins = _instruction(c)
        if ins.cmd == "FROM":
            words = list(ins.values)
            name = ""
            if len(words) == 3 and words[1].upper() == "AS":
                name = words[2].lower()
                if not _NAME.match(name):
                    raise DockerfileError(f"{ins.where()}: invalid name for build stage: "
                                          f"{words[2]!r}")
                if any(s.name == name for s in df.stages):
                    raise DockerfileError(f"{ins.where()}: duplicate stage name {name!r}")
            elif len(words) != 1:
                raise DockerfileError(f"{ins.where()}: FROM takes an image and an optional "
                                      "'AS name'")
            df.stages.append(Stage(len(df.stages), name, words[0],
                                   ins.flags.get("platform", ""), ins.line))
        elif not df.stages:
            if ins.cmd != "ARG":
                raise DockerfileError(f"{ins.where()}: no build stage in current context "
                                      "(only ARG may come before the first FROM)")
            df.meta_args.append(ins)
        else:
            df.stages[-1].instructions.append(ins)
    if not df.stages:
        raise DockerfileError("the Dockerfile has no FROM instruction")
    return df
