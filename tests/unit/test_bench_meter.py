"""The benchmark's ProcessMeter counts the CPU and memory of a process's children, not just its own."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator

import pytest

from tests.bench.meter import ProcessMeter

CHILD = """
import time
held = bytearray(120 * 1024 * 1024)
started = time.process_time()
while time.process_time() - started < 0.4:
    pass
print("child busy done", flush=True)
time.sleep(1)
"""

PARENT = f"""
import subprocess, sys, time
subprocess.run([sys.executable, "-c", {CHILD!r}], check=True)
print("child done", flush=True)
time.sleep(30)
"""


@pytest.fixture
def parent() -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", PARENT], stdout=subprocess.PIPE, text=True)
    yield process
    process.kill()
    process.wait()


def test_meter_counts_a_childs_cpu_and_memory_while_it_runs_and_after(
    parent: subprocess.Popen[str],
) -> None:
    meter = ProcessMeter(parent.pid)
    assert parent.stdout is not None
    assert parent.stdout.readline() == "child busy done\n"
    cpu_child_alive = meter.cpu_seconds()
    assert parent.stdout.readline() == "child done\n"
    cpu, peaks = meter.cpu_seconds(), meter.peaks()
    meter.close()
    assert cpu_child_alive >= 0.4  # the child's busy loop, read from the live child
    assert cpu >= 0.4  # the same, now in the parent's time of children it waited for
    assert peaks["peak_rss_mb"] >= 120  # the child's buffer, seen by the sampler
    assert peaks["bot_peak_rss_mb"] < 120  # the parent alone never held it
    assert peaks["peak_rss_mb_upper"] >= peaks["peak_rss_mb"]
