"""Compare two `make demo` outputs, leaving out what changes from one run to the next.

A demo run prints loopback ports, random stack ids, a synthetic repo's commit (and the hashes that follow
from it), clock times and timings; everything else it prints is the story, and a refactoring must leave
that unchanged. This prints the lines that differ once those are masked, and exits 1 when any does.

    make demo > /tmp/demo-after.log
    git worktree add /tmp/before <rev> && (cd /tmp/before && make demo > /tmp/demo-before.log)
    python scripts/demo_compare.py /tmp/demo-before.log /tmp/demo-after.log
"""

from __future__ import annotations

import difflib
import re
import sys
from pathlib import Path

# (pattern, replacement), applied in order; each is a value that differs between two runs of the same tree.
RUN_SPECIFIC = (
    (re.compile(r"(/[\w.+-]+)+/\.demo/"), "<checkout>/.demo/"),  # the checkout's path
    (re.compile(r"127\.0\.0\.1:\d+"), "127.0.0.1:<port>"),
    (re.compile(r"\bmc-[0-9a-f]{8}\b"), "mc-<stack>"),
    (re.compile(r"\b[0-9a-f]{12,64}\b"), "<hex>"),  # commits, sha256s, version and upload ids
    (re.compile(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[,.]\d+)?"), "<time>"),
    (re.compile(r"\b\d+(?:\.\d+)?\s?(s|ms|MB/s|MiB/s|GB/s|GiB/s)\b"), r"<n>\1"),
    (re.compile(r'"(seconds|mb_per_s)": [\d.]+'), r'"\1": <n>'),
    (re.compile(r"ETA \S+"), "ETA <n>"),
)
# Lines that only show progress or the Hub client's own request log: their count depends on timing.
NOISE = (re.compile(r"INFO httpx2? HTTP Request"), re.compile(r"^\d+/\d+ files, "))


def story(text: str) -> list[str]:
    """The demo's output with every run-specific value masked and the timing-dependent lines left out."""
    lines = []
    for line in text.splitlines():
        if any(pattern.search(line) for pattern in NOISE):
            continue
        for pattern, replacement in RUN_SPECIFIC:
            line = pattern.sub(replacement, line)
        lines.append(line)
    return lines


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python scripts/demo_compare.py BEFORE.log AFTER.log", file=sys.stderr)
        return 2
    before, after = (story(Path(name).read_text()) for name in argv)
    changed = [
        line
        for line in difflib.unified_diff(before, after, argv[0], argv[1], n=0, lineterm="")
        if not line.startswith("@@")
    ]
    print("\n".join(changed) if changed else f"the same story: {len(after)} lines once run-specific values are masked")
    return 1 if changed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
