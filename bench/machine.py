"""Facts about the machine and software a run was measured on."""

from __future__ import annotations

import os
import platform
import sqlite3
import sys
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

PACKAGES = ("tether", "langgraph", "langgraph-checkpoint", "langgraph-checkpoint-sqlite",
            "langgraph-checkpoint-postgres", "psycopg", "orjson")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _filesystem(path: Path) -> str:
    """Device and type of the filesystem holding ``path`` (from /proc/mounts)."""
    try:
        mounts = [line.split() for line in Path("/proc/mounts").read_text().splitlines()]
    except OSError:
        return "unknown"
    best = ("", "unknown", "unknown")
    target = str(path.resolve())
    for dev, mnt, fstype, *_ in mounts:
        if (target == mnt or target.startswith(mnt.rstrip("/") + "/")) and len(mnt) > len(best[0]):
            best = (mnt, dev, fstype)
    return f"{best[2]} on {best[1]} (mounted at {best[0]})"


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def facts(workdir: Path) -> dict[str, str]:
    """What the report's header lists, in order."""
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") if hasattr(os, "sysconf") else 0
    out = {
        "date (UTC)": datetime.now(UTC).strftime("%Y-%m-%d %H:%M"),
        "cores (nproc)": str(os.cpu_count()),
        "CPU": _cpu_model(),
        "memory": f"{mem / 2**30:.0f} GiB",
        "OS": f"{platform.system()} {platform.release()}",
        "Python": sys.version.split()[0],
        "SQLite": sqlite3.sqlite_version,
        "database files on": _filesystem(workdir),
    }
    for p in PACKAGES:
        out[p] = _version(p)
    out["load average at start (1, 5, 15 min)"] = load_average()
    return out


def load_average() -> str:
    """The machine's load averages: other work running beside the benchmark skews it."""
    try:
        return ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "unknown"
