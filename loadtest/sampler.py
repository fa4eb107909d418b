"""CPU and RSS of the server (a pid and its children) and of the generator's workers."""

from __future__ import annotations

import contextlib

import psutil


class ProcessSampler:
    """CPU % (100 = one core) and RSS of a process tree; call ``sample()`` about once a second."""

    def __init__(self, pid: int, *, children: bool) -> None:
        try:
            self.root = psutil.Process(pid)
        except psutil.NoSuchProcess:
            raise LookupError(f"no process has pid {pid}") from None
        self.with_children = children
        self._known: dict[int, psutil.Process] = {}
        self.cpu: list[float] = []
        self.rss: list[int] = []
        self.sample()  # primes cpu_percent (its first call always returns 0.0)
        self.cpu.clear()

    def processes(self) -> list[psutil.Process]:
        found = [self.root]
        if self.with_children:
            with contextlib.suppress(psutil.Error):
                found += self.root.children(recursive=True)
        out = []
        for proc in found:
            out.append(self._known.setdefault(proc.pid, proc))
        return out

    def sample(self) -> tuple[float, int]:
        """Return (CPU % since the previous sample, RSS bytes) and keep them."""
        cpu = 0.0
        rss = 0
        for proc in self.processes():
            try:
                cpu += proc.cpu_percent(interval=None)
                rss += proc.memory_info().rss
            except psutil.Error:
                continue
        self.cpu.append(cpu)
        self.rss.append(rss)
        return cpu, rss

    def cpu_seconds(self) -> float:
        """User + system CPU time the process tree has used so far, in seconds."""
        total = 0.0
        for proc in self.processes():
            try:
                times = proc.cpu_times()
            except psutil.Error:
                continue
            total += times.user + times.system
        return total

    def rss_now(self) -> int:
        total = 0
        for proc in self.processes():
            try:
                total += proc.memory_info().rss
            except psutil.Error:
                continue
        return total


def mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 1) if values else None
