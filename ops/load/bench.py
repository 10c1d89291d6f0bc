"""`make bench`: run every benchmark in turn; each rewrites its own section of BENCHMARKS.md, and the run's own
section records when it ran, what it ran and the machine's load before and after."""
from __future__ import annotations

import importlib
import os
import sys
import time
from pathlib import Path

from ops.load import sections

BENCHMARKS = ("ops.load.bench_ingress", "ops.load.bench_pipeline", "ops.load.bench_hot_wallet", "ops.load.capacity")
"""In this order: the capacity section reads the figures the others just wrote."""
FILE = Path(__file__).resolve().parents[2] / "BENCHMARKS.md"
BEGIN, END = "<!-- bench-run:begin -->", "<!-- bench-run:end -->"


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def write_run(names: list[str], started: str, load_before: str, seconds: float, path: Path = FILE) -> str:
    """Rewrite the run's section (after the title, before the first benchmark's section)."""
    markdown = (f"Last `make bench` run: {started}, {seconds / 60:.0f} min, sections {', '.join(names)}; machine "
                f"load average (1 / 5 / 15 min) {load_before} before, {_load()} after, on {os.cpu_count()} cores "
                "shared with whatever else ran.")
    sections.write_section(path, BEGIN, END, markdown, new_at_top=True)
    return markdown


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (default: all) and print each table as it is written."""
    names = argv if argv else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    started, load_before, clock = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), _load(), time.monotonic()
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(name).main()
    print(write_run(names, started, load_before, time.monotonic() - clock))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
