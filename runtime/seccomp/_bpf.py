"""A tiny classic-BPF assembler with labels, so the compiler never counts jump offsets by hand."""

from __future__ import annotations

import itertools
import struct
from dataclasses import dataclass, field

LD_W_ABS = 0x20
ALU_AND_K = 0x54
JMP_JA = 0x05
JMP_JEQ_K = 0x15
JMP_JGT_K = 0x25
JMP_JGE_K = 0x35
RET_K = 0x06

# struct seccomp_data: int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6].
OFF_NR = 0
OFF_ARCH = 4
OFF_ARGS = 16

_ids = itertools.count(1)


@dataclass(frozen=True)
class Label:
    """A jump target resolved at assembly time."""

    ident: int


@dataclass
class _Insn:
    code: int
    k: int = 0
    jt: int | Label = 0
    jf: int | Label = 0


@dataclass
class Program:
    """Instructions plus label positions; `bytes()` yields struct sock_filter[]."""

    insns: list[_Insn] = field(default_factory=list)
    labels: dict[int, int] = field(default_factory=dict)

    @staticmethod
    def label() -> Label:
        return Label(next(_ids))

    def place(self, lbl: Label) -> None:
        self.labels[lbl.ident] = len(self.insns)

    def load(self, offset: int) -> None:
        self.insns.append(_Insn(LD_W_ABS, offset))

    def and_(self, mask: int) -> None:
        self.insns.append(_Insn(ALU_AND_K, mask))

    def jump(self, code: int, k: int, jt: int | Label, jf: int | Label) -> None:
        self.insns.append(_Insn(code, k, jt, jf))

    def goto(self, lbl: Label) -> None:
        self.insns.append(_Insn(JMP_JA, 0, lbl, 0))

    def ret(self, value: int) -> None:
        self.insns.append(_Insn(RET_K, value))

    def __len__(self) -> int:
        return len(self.insns)

    def extend(self, other: Program) -> None:
        """Appends a separately built block (labels are globally unique, so they carry over)."""
        base = len(self.insns)
        self.insns.extend(other.insns)
        for ident, pos in other.labels.items():
            self.labels[ident] = base + pos

    def assemble(self) -> bytes:
        out = bytearray()
        for pc, ins in enumerate(self.insns):
            k, jt, jf = ins.k, ins.jt, ins.jf
            if ins.code == JMP_JA:
                k, jt = self._offset(pc, jt, 0xFFFFFFFF), 0
            else:
                jt, jf = self._offset(pc, jt, 255), self._offset(pc, jf, 255)
            out += struct.pack("=HBBI", ins.code, jt, jf, k & 0xFFFFFFFF)
        return bytes(out)

    def _offset(self, pc: int, target: int | Label, limit: int) -> int:
        if isinstance(target, int):
            return target
        off = self.labels[target.ident] - pc - 1
        if not 0 <= off <= limit:
            raise ValueError(f"BPF jump offset {off} out of range at {pc}")
        return off
