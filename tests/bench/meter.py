"""CPU time and memory of the bot's whole process tree (the bot and all its descendants), from /proc.

The bot hands work to child processes of its own (the PDF checker, the image worker), so measuring
the bot's pid alone would hide the CPU and memory that moved into them.

CPU rule: the figure is the sum, over every live process of the tree, of its own time
(utime + stime) and the time of its children it has waited for (cutime + cstime; the kernel adds
a child's own and waited-for time to its parent's when the parent waits for it). A process that
ends therefore keeps counting: its time moves into its parent's cutime as it is waited for, with
nothing added twice. Error bound: the time of a process that nobody in the tree waits for (one
orphaned to init, or reaped with SIGCHLD ignored) is lost once it is gone; the bot waits for all
its children (asyncio subprocesses). A reading taken while a child is being waited for may miss that
child's time once (it is read top-down: the parent before the child), so a single reading can be
low by at most the CPU of the processes ending at that instant, and the next reading is exact again.

Memory: a thread samples the tree every 10 ms (a thread, so stalls of the benchmark's event loop
do not make it miss peaks) and sums VmRSS: `peak_rss_mb` is the highest sum seen (it can miss a
peak shorter than 10 ms). `peak_rss_mb_upper` sums each process's own peak (VmHWM) over every process
seen: an upper bound, as the processes peak at different times. `bot_peak_rss_mb` is the bot's own
VmHWM.
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Any

SAMPLE_SECONDS = 0.01


def children(pid: int) -> list[int]:
    """Direct children of a process (of any of its threads); [] if it is gone."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            found.extend(int(child) for child in (task / "children").read_text().split())
    return found


def tree(root: int) -> list[int]:
    """The root and all its descendants, parents before their children."""
    order, index = [root], 0
    while index < len(order):
        order.extend(children(order[index]))
        index += 1
    return order


def stat_fields(pid: int) -> list[str] | None:
    """Fields of /proc/<pid>/stat after the command name (fields[0] is field 3, the state)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None


def status_kb(pid: int, names: tuple[str, ...]) -> dict[str, int]:
    """The named kB lines of /proc/<pid>/status (e.g. VmRSS:); {} if the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return {n: int(line.split()[1]) for line in lines for n in names if line.startswith(n)}


def process_name(pid: int) -> str:
    """The module a Python child runs (`python -m X`), else its command name."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError):
        return str(pid)
    if b"-m" in argv[:-1]:
        return argv[argv.index(b"-m") + 1].decode(errors="replace").rsplit(".", 1)[-1]
    return Path(argv[0].decode(errors="replace")).name or str(pid)


class ProcessMeter:
    """CPU time and memory of a process and all its descendants (see the module's doc)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._ticks = os.sysconf("SC_CLK_TCK")
        self._lock = threading.Lock()
        self._peak_kb = 0
        self._peak_parts_kb: dict[str, int] = {}  # each process's share of the peak, by name
        self._hwm_kb: dict[tuple[int, str], int] = {}  # (pid, start time) -> VmHWM
        self._stop = threading.Event()
        self._sample()
        self._thread = threading.Thread(target=self._run, name="process-meter", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stops the sampler (it also stops by itself once the bot is gone)."""
        self._stop.set()
        self._thread.join()

    def cpu_seconds(self) -> float:
        """Own and waited-for children's CPU of every live process of the tree."""
        ticks = 0
        for pid in tree(self.pid):
            fields = stat_fields(pid)
            if fields is not None:
                ticks += sum(int(f) for f in fields[11:15])  # utime stime cutime cstime
        return ticks / self._ticks

    def rss_mb(self) -> float:
        """Resident memory of the tree now."""
        return sum(status_kb(pid, ("VmRSS:",)).get("VmRSS:", 0) for pid in tree(self.pid)) / 1024

    def peak_rss_mb(self) -> float:
        """Highest tree RSS sampled since the meter started."""
        self._sample()
        with self._lock:
            return self._peak_kb / 1024

    def peak_rss_mb_upper(self) -> float:
        """Sum of each seen process's own peak: at least the tree's real peak."""
        self._sample()
        with self._lock:
            return sum(self._hwm_kb.values()) / 1024

    def bot_peak_rss_mb(self) -> float:
        """The bot process's own peak RSS (VmHWM)."""
        own = status_kb(self.pid, ("VmHWM:",)).get("VmHWM:")
        if own is not None:
            return own / 1024
        with self._lock:
            own_peaks = [kb for (pid, _), kb in self._hwm_kb.items() if pid == self.pid]
        return max(own_peaks, default=0) / 1024

    def _run(self) -> None:
        while not self._stop.wait(SAMPLE_SECONDS):
            if not self._sample():
                return

    def _sample(self) -> bool:
        """One reading of the tree's memory; False once the bot is gone."""
        total, seen, parts = 0, dict[tuple[int, str], int](), dict[str, int]()
        for pid in tree(self.pid):
            fields = stat_fields(pid)
            memory = status_kb(pid, ("VmRSS:", "VmHWM:"))
            if fields is None or not memory:
                continue
            total += memory.get("VmRSS:", 0)
            name = "bot" if pid == self.pid else process_name(pid)
            parts[name] = parts.get(name, 0) + memory.get("VmRSS:", 0)
            seen[(pid, fields[19])] = memory.get("VmHWM:", 0)  # field 22: start time
        with self._lock:
            if total > self._peak_kb:
                self._peak_kb, self._peak_parts_kb = total, parts
            for key, hwm in seen.items():
                self._hwm_kb[key] = max(self._hwm_kb.get(key, 0), hwm)
        return any(pid == self.pid for pid, _ in seen)

    def peak_parts_mb(self) -> dict[str, float]:
        """Each process's RSS at the moment of the tree's peak, by name."""
        with self._lock:
            return {name: round(kb / 1024, 1) for name, kb in self._peak_parts_kb.items()}

    def peaks(self) -> dict[str, Any]:
        """The peak figures, rounded, under the names the phase results use."""
        return {
            "peak_rss_mb": round(self.peak_rss_mb(), 1),
            "peak_rss_mb_parts": self.peak_parts_mb(),
            "peak_rss_mb_upper": round(self.peak_rss_mb_upper(), 1),
            "bot_peak_rss_mb": round(self.bot_peak_rss_mb(), 1),
        }
