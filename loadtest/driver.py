"""The parent process: spawns the workers, walks them through the run, aggregates the results."""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from typing import Any

from hdrh.histogram import HdrHistogram

from loadtest import stats
from loadtest.config import RunConfig
from loadtest.sampler import ProcessSampler
from loadtest.worker import worker_main

READY_TIMEOUT = 300.0
START_DELAY_NS = 200_000_000  # workers get "start" before t0, so all begin on one instant


class RunFailed(RuntimeError):
    """A worker died or stopped answering."""


@dataclass
class Progress:
    """What the parent knows while the run goes on."""

    ticks: dict[int, dict[str, Any]] = field(default_factory=dict)  # second → merged tick
    server_cpu: list[float] = field(default_factory=list)
    server_rss: list[int] = field(default_factory=list)
    generator_cpu: list[float] = field(default_factory=list)
    worker_cpu: list[list[float]] = field(default_factory=list)


@dataclass
class RunResult:
    config: RunConfig
    finals: list[dict[str, Any]]
    progress: Progress
    server_rss_before: int | None
    server_rss_connected: int | None
    connect_failures: int
    connect_seconds: float
    started_at: float
    server_cpu_seconds: float | None = None
    """CPU time the server used from the start of the load until every worker settled."""


class Driver:
    """Runs one load test. ``server_pid``: sample its CPU and RSS (with its children)."""

    def __init__(self, config: RunConfig, *, server_pid: int | None, quiet: bool = False) -> None:
        self.config = config
        self.server = ProcessSampler(server_pid, children=True) if server_pid else None
        self.quiet = quiet
        self.pipes: list[Connection] = []
        self.processes: list[multiprocessing.process.BaseProcess] = []
        self.progress = Progress()

    def run(self) -> RunResult:
        started_at = time.time()
        self._spawn()
        try:
            return self._run_phases(started_at)
        finally:
            self._stop()

    def _run_phases(self, started_at: float) -> RunResult:
        rss_before = self.server.rss_now() if self.server else None
        connect_started = time.monotonic()
        self._broadcast("connect", None)
        self._say(f"connecting {self.config.total_clients} clients …")
        readies = self._collect("ready", READY_TIMEOUT)
        connect_seconds = time.monotonic() - connect_started
        failures = sum(r["failed"] for r in readies)
        self._say(f"connected in {connect_seconds:.2f} s ({failures} failed)")
        rss_connected = self.server.rss_now() if self.server else None
        workers = [ProcessSampler(p.pid or 0, children=False) for p in self.processes]
        self.progress.worker_cpu = [[] for _ in workers]
        t0 = time.monotonic_ns() + START_DELAY_NS
        cpu_before = self.server.cpu_seconds() if self.server else None
        self._broadcast("start", t0)
        sent: dict[int, int] = {}
        for part in self._collect("sent", self.config.duration + 60.0, samplers=workers):
            sent.update(part)
        self._broadcast("expect", sent)
        self._say("settling: waiting for the last deliveries and acks …")
        finals = self._collect("final", self.config.settle_timeout + 120.0)
        cpu = None
        if self.server is not None and cpu_before is not None:
            cpu = self.server.cpu_seconds() - cpu_before
        self._broadcast("close", None)
        return RunResult(
            self.config,
            finals,
            self.progress,
            rss_before,
            rss_connected,
            failures,
            connect_seconds,
            started_at,
            cpu,
        )

    # -- workers -----------------------------------------------------------------------------------

    def _spawn(self) -> None:
        context = multiprocessing.get_context("spawn")
        for index in range(self.config.workers):
            parent_end, child_end = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(index, self.config, child_end),
                daemon=True,
                name=f"loadtest-worker-{index}",
            )
            process.start()
            child_end.close()
            self.pipes.append(parent_end)
            self.processes.append(process)

    def _stop(self) -> None:
        deadline = time.monotonic() + 15.0
        for process in self.processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                process.kill()
                process.join()

    def _broadcast(self, command: str, payload: Any) -> None:
        for pipe in self.pipes:
            pipe.send((command, payload))

    def _collect(
        self, name: str, timeout: float, samplers: list[ProcessSampler] | None = None
    ) -> list[Any]:
        """Wait for message ``name`` from every worker, merging the ticks that arrive meanwhile.

        With ``samplers`` (the workers'), sample CPU and RSS once a second while waiting.
        """
        results: dict[int, Any] = {}
        deadline = time.monotonic() + timeout
        next_sample = time.monotonic() + 1.0
        me = ProcessSampler(os.getpid(), children=False)
        while len(results) < len(self.pipes):
            waiting = [p for i, p in enumerate(self.pipes) if i not in results]
            now = time.monotonic()
            if now >= deadline:
                raise RunFailed(f"{len(waiting)} workers did not send {name!r} in {timeout:.0f} s")
            if samplers is not None and now >= next_sample:
                next_sample += 1.0
                self._sample(samplers, me)
            wake = min(deadline, next_sample if samplers is not None else deadline, now + 1.0)
            for pipe in wait(waiting, timeout=max(0.0, wake - now)):
                index = self.pipes.index(pipe)  # type: ignore[arg-type]
                kind, payload = self._receive(index)
                if kind == name:
                    results[index] = payload
                elif kind == "tick":
                    self._merge_tick(payload)
                else:
                    raise RunFailed(f"worker {index} sent {kind!r} while {name!r} was awaited")
        return [results[i] for i in range(len(self.pipes))]

    def _receive(self, index: int) -> tuple[str, Any]:
        try:
            message: tuple[str, Any] = self.pipes[index].recv()
        except EOFError:
            code = self.processes[index].exitcode
            raise RunFailed(f"worker {index} died (exit code {code})") from None
        return message

    # -- while edits run ---------------------------------------------------------------------------

    def _merge_tick(self, payload: dict[str, Any]) -> None:
        second = payload["second"]
        tick = self.progress.ticks.get(second)
        if tick is None:
            tick = self.progress.ticks[second] = {
                "workers": 0,
                "sent": 0,
                "delivered": 0,
                "errors": 0,
                "histogram": stats.new_histogram(),
            }
        tick["workers"] += 1
        for key in ("sent", "delivered", "errors"):
            tick[key] += payload[key]
        stats.merge_into(tick["histogram"], payload["interval"])
        if tick["workers"] == len(self.pipes):
            self._print_tick(second, tick)

    def _sample(self, workers: list[ProcessSampler], me: ProcessSampler) -> None:
        total = me.sample()[0]
        for index, sampler in enumerate(workers):
            cpu = sampler.sample()[0]
            self.progress.worker_cpu[index].append(cpu)
            total += cpu
        self.progress.generator_cpu.append(total)
        if self.server is not None:
            cpu, rss = self.server.sample()
            self.progress.server_cpu.append(cpu)
            self.progress.server_rss.append(rss)

    def _print_tick(self, second: int, tick: dict[str, Any]) -> None:
        histogram: HdrHistogram = tick["histogram"]
        p50 = histogram.get_value_at_percentile(50) / 1000
        p99 = histogram.get_value_at_percentile(99) / 1000
        worst = histogram.get_max_value() / 1000
        line = (
            f"[{second:4d}s] sent {tick['sent']:>9,} delivered {tick['delivered']:>10,} "
            f"| last second p50 {p50:7.2f} ms p99 {p99:7.2f} ms max {worst:8.2f} ms "
            f"| errors {tick['errors']}"
        )
        gen = self.progress.generator_cpu
        if gen:
            line += f" | gen CPU {gen[-1]:5.1f}%"
        if self.progress.server_cpu:
            line += f" | server CPU {self.progress.server_cpu[-1]:5.1f}%"
        self._say(line)

    def _say(self, text: str) -> None:
        if not self.quiet:
            print(text, file=sys.stderr, flush=True)
