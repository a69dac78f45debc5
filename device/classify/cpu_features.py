"""Does this CPU have int8 dot-product instructions? (what makes the two-net model affordable)

XNNPACK's int8 convolutions run on VNNI/AMX (x86) or SDOT/UDOT (Arm `asimddp`). Without them
the shipped two-net file cost 5.7x the `fer` peer per face on an AVX2-only EPYC (2.75 vs
0.50 ms; docs/experiments.md), against 1.8x on an AVX-512 VNNI machine, so `[classifier]
model = "auto"` runs the one-net file there.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
# x86: AVX-512 VNNI, AVX-VNNI (Alder Lake and later), AMX int8 tiles
X86_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# aarch64: the kernel calls SDOT/UDOT "asimddp"; some tools print "dotprod"
ARM_DOT_FLAGS = ("asimddp", "dotprod")


@dataclass(frozen=True)
class DotProductSupport:
    present: bool | None  # None: could not tell (no /proc/cpuinfo, unknown architecture)
    flags: tuple[str, ...]  # the flags that said so
    machine: str

    def describe(self) -> str:
        if self.present is None:
            return f"int8 dot-product instructions unknown on {self.machine or 'this CPU'}"
        if self.present:
            return f"int8 dot-product instructions present ({', '.join(self.flags)})"
        return f"no int8 dot-product instructions on this {self.machine} CPU"


def _cpu_flags(cpuinfo: str) -> set[str]:
    """Every word of the `flags` (x86) and `Features` (Arm) lines."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().lower() in ("flags", "features"):
            flags.update(value.split())
    return flags


def int8_dot_product(cpuinfo: str | None = None, machine: str | None = None) -> DotProductSupport:
    """Read /proc/cpuinfo (or the given text) for int8 dot-product instructions."""
    machine = (machine or platform.machine()).lower()
    if cpuinfo is None:
        try:
            cpuinfo = CPUINFO.read_text(errors="replace")
        except OSError:
            return DotProductSupport(None, (), machine)
    flags = _cpu_flags(cpuinfo)
    if machine in ("x86_64", "amd64", "i686", "i386"):
        wanted = X86_DOT_FLAGS
    elif machine in ("aarch64", "arm64") or machine.startswith("armv8"):
        wanted = ARM_DOT_FLAGS
    else:
        return DotProductSupport(None, (), machine)
    if not flags:
        return DotProductSupport(None, (), machine)
    found = tuple(f for f in wanted if f in flags)
    return DotProductSupport(bool(found), found, machine)
