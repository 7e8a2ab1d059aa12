"""`make bench`: run every benchmark suite in turn; each writes bench/results/<name>.json and its
section of docs/explanation/performance.md. `python -m bench copy` or `python -m bench loader` runs one."""

from __future__ import annotations

import importlib
import sys

SUITES = ["copy", "loader", "write_size", "peers", "memory_bound", "hub_double", "refresh", "scale"]


def main(argv: list[str]) -> int:
    chosen = argv or SUITES
    unknown = [name for name in chosen if name not in SUITES]
    if unknown:
        print(f"unknown benchmark suite(s): {', '.join(unknown)}; choose from {', '.join(SUITES)}", file=sys.stderr)
        return 2
    for name in chosen:
        print(f"== bench {name}", flush=True)
        module = importlib.import_module(f"bench.{name}")
        module.main()
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
