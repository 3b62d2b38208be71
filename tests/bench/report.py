"""Result rows, the printed table and the JSON file."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

DEFAULT_OUT = Path("test-artifacts/bench/latest.json")


@dataclass(frozen=True)
class Row:
    """One figure: `ratio` is against the section's baseline (the reference loop), higher =
    faster."""

    section: str
    name: str
    value: float | None
    unit: str
    ratio: float | None = None
    note: str = ""


def machine() -> dict[str, object]:
    """What the figures were measured on."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, object] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def _fmt(v: float | None, digits: int = 3) -> str:
    if v is None:
        return "-"
    return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"


def format_table(rows: Sequence[Row]) -> str:
    """Rows grouped by section as an aligned text table."""
    out, section = [], None
    width = max((len(r.name) for r in rows), default=10)
    for r in rows:
        if r.section != section:
            section = r.section
            out.append(f"\n== {section}")
        ratio = f"{r.ratio:.2f}x" if r.ratio is not None else ""
        out.append(f"  {r.name:<{width}}  {_fmt(r.value):>9} {r.unit:<10} {ratio:>7}  {r.note}")
    return "\n".join(out)


def write_json(rows: Sequence[Row], path: Path, *, settings: dict[str, object]) -> Path:
    """{"command", "machine", "settings", "finished", "rows": [...]} at `path` (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    doc = {
        "command": " ".join([Path(sys.executable).name, "-m", "tests.bench", *sys.argv[1:]]),
        "machine": machine(),
        "settings": settings,
        "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "rows": [asdict(r) for r in rows],
    }
    path.write_text(json.dumps(doc, indent=2) + "\n")
    return path
