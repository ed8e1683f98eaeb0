"""Cap a process (and the children it starts afterwards) at a share of one core, for benches.

    cap = CpuCap.place(pid, cores=0.3)   # None where the machine has no writable cpu cgroup
    ...
    cap.remove()                          # after the process has exited

Why: on a machine with two cores, the bot's replicas share them with everything the bench runs
beside them (the fake Bot API and model server, the fake InsForge, PostgreSQL, Redis, the
driver). Uncapped, one replica and two are both bounded by the machine, and their ratio says
nothing about whether anything serializes the replicas. With each replica held to the same
fraction of a core, well under what the machine has free, a replica is its own bottleneck: n
replicas that share nothing beyond per-chat order give n times the throughput of one, and
anything that serializes them shows as a ratio below that.

Linux only, as root: a cgroup v2 `cpu.max` under /sys/fs/cgroup when the cpu controller is
enabled there, else cgroup v1's `cpu.cfs_quota_us` under /sys/fs/cgroup/cpu.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

PERIOD_US = 100_000
V2_ROOT = Path("/sys/fs/cgroup")
V1_ROOT = Path("/sys/fs/cgroup/cpu")


@dataclass
class CpuCap:
    path: Path
    cores: float

    @classmethod
    def place(cls, pid: int, cores: float) -> CpuCap | None:
        if cores <= 0:
            raise ValueError("a CPU cap must be above 0 cores")
        quota = max(1000, round(cores * PERIOD_US))
        name = f"bench-cap-{os.getpid()}-{pid}"
        controllers = V2_ROOT / "cgroup.controllers"
        try:
            if controllers.exists() and "cpu" in controllers.read_text().split():
                path = V2_ROOT / name
                path.mkdir(exist_ok=True)
                (path / "cpu.max").write_text(f"{quota} {PERIOD_US}")
            elif (V1_ROOT / "cpu.cfs_quota_us").exists():
                path = V1_ROOT / name
                path.mkdir(exist_ok=True)
                (path / "cpu.cfs_period_us").write_text(str(PERIOD_US))
                (path / "cpu.cfs_quota_us").write_text(str(quota))
            else:
                return None
            (path / "cgroup.procs").write_text(str(pid))
        except OSError:
            return None
        return cls(path, cores)

    def throttled_seconds(self) -> float:
        """How long the cap held the group back so far (v1 ns, v2 us in `cpu.stat`)."""
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "throttled_time":
                    return int(value) / 1e9
                if key == "throttled_usec":
                    return int(value) / 1e6
        return 0.0

    def remove(self) -> None:
        """Remove the group once its processes have exited (a live one keeps it)."""
        with contextlib.suppress(OSError):
            self.path.rmdir()
