"""Progress reporting for a sync: per file and total bytes, rate and ETA.

The engine calls a `Progress` from many threads; implementations lock. `ConsoleProgress` redraws one
line on a TTY and prints plain periodic lines otherwise (CI logs, `make demo` piped to a file).
"""

from __future__ import annotations

import sys
import threading
import time
from typing import Protocol, TextIO


class Progress(Protocol):
    def begin(self, total_files: int, total_bytes: int) -> None: ...
    def file_started(self, path: str, size: int) -> None: ...
    def advance(self, path: str, count: int) -> None: ...
    def file_done(self, path: str) -> None: ...
    def end(self) -> None: ...
    def abort(self) -> None: ...


class NullProgress:
    def begin(self, total_files: int, total_bytes: int) -> None:
        pass

    def file_started(self, path: str, size: int) -> None:
        pass

    def advance(self, path: str, count: int) -> None:
        pass

    def file_done(self, path: str) -> None:
        pass

    def end(self) -> None:
        pass

    def abort(self) -> None:
        pass


def human_bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def human_seconds(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


class ConsoleProgress:
    """Total and the busiest file: bytes, MB/s, ETA. Redrawn in place on a TTY, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, *, interval: float | None = None) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval if interval is not None else (0.2 if self.tty else 5.0)
        self._lock = threading.Lock()
        self._sizes: dict[str, int] = {}
        self._done: dict[str, int] = {}
        self._finished: set[str] = set()
        self._total_bytes = 0
        self._total_files = 0
        self._copied = 0
        self._started = time.monotonic()
        self._last_draw = 0.0
        self._current = ""

    def begin(self, total_files: int, total_bytes: int) -> None:
        with self._lock:
            self._total_files = total_files
            self._total_bytes = total_bytes
            self._started = time.monotonic()

    def file_started(self, path: str, size: int) -> None:
        with self._lock:
            self._sizes[path] = self._sizes.get(path, 0) + size
            self._done.setdefault(path, 0)

    def advance(self, path: str, count: int) -> None:
        with self._lock:
            self._done[path] = self._done.get(path, 0) + count
            self._copied += count
            self._current = path
            now = time.monotonic()
            if now - self._last_draw >= self.interval:
                self._last_draw = now
                self._draw(now)

    def file_done(self, path: str) -> None:
        with self._lock:
            self._finished.add(path)
            if not self.tty:
                size = self._sizes.get(path, 0)
                self.stream.write(f"  done {path} ({human_bytes(size)})\n")
                self.stream.flush()

    def end(self) -> None:
        with self._lock:
            self._draw(time.monotonic())
            if self.tty:
                self.stream.write("\n")
            self.stream.flush()

    def abort(self) -> None:
        """After a failure: end a redrawn line so the error starts on its own; print nothing else."""
        with self._lock:
            if self.tty and self._last_draw:
                self.stream.write("\n")
                self.stream.flush()

    def _draw(self, now: float) -> None:
        elapsed = max(now - self._started, 1e-6)
        rate = self._copied / elapsed
        remaining = max(self._total_bytes - self._copied, 0)
        eta = human_seconds(remaining / rate) if rate > 0 else "?"
        total = max(self._total_bytes, 1)
        current = self._current
        file_part = ""
        if current:
            size = max(self._sizes.get(current, 0), 1)
            file_part = f" | {current} {100 * self._done.get(current, 0) / size:.0f}%"
        line = (
            f"{len(self._finished)}/{self._total_files} files, {human_bytes(self._copied)}/"
            f"{human_bytes(self._total_bytes)} ({100 * self._copied / total:.0f}%), "
            f"{rate / 1e6:.1f} MB/s, ETA {eta}{file_part}"
        )
        if self.tty:
            self.stream.write("\r\x1b[2K" + line[:200])
        else:
            self.stream.write(line + "\n")
        self.stream.flush()
