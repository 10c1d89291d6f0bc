"""`make bench`: run every benchmark in turn; each rewrites its own section of BENCHMARKS.md."""
from __future__ import annotations

import importlib
import sys

BENCHMARKS = ("ops.load.bench_ingress", "ops.load.bench_pipeline")


def main(argv: list[str] | None = None) -> int:
    """Run the named benchmarks (default: all) and print each table as it is written."""
    names = argv if argv else list(BENCHMARKS)
    unknown = sorted(set(names) - set(BENCHMARKS))
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}", file=sys.stderr)
        return 2
    for name in names:
        print(f"== {name}", flush=True)
        importlib.import_module(name).main()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
