"""`make playground` (`python -m model_cache_devtools.demo --playground`) and `demo --help` (issue 24, item 5):
the offline world stays up for a person to try the CLIs by hand, and help is help, not a demo run."""

from __future__ import annotations

import os
import queue
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from model_cache_devtools import demo, modelgen

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_demo_help_prints_help_and_runs_nothing(tmp_path: Path) -> None:
    """GIVEN `demo --help`  WHEN run  THEN it prints usage naming the stages and the modes, exits 0, and no
    stage ran (nothing written to the demo folder)."""
    env = {**os.environ, demo.DEMO_DIR_ENV: str(tmp_path / "demo")}
    done = subprocess.run(
        [sys.executable, "-m", "model_cache_devtools.demo", "--help"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "--playground" in done.stdout
    assert "transformers generates" in done.stdout
    assert "=== 1." not in done.stdout
    assert not (tmp_path / "demo").exists()


def test_the_playground_stays_up_for_the_clis_until_ctrl_c(tmp_path: Path) -> None:
    """GIVEN `demo --playground`  WHEN it prints its exports  THEN, with only those in the environment,
    `model-cache sync` caches the tiny model and `model-cache-loader pull` gets it from S3; and Ctrl-C stops
    the playground cleanly (exit 0)."""
    env = {
        **os.environ,
        demo.DEMO_DIR_ENV: str(tmp_path / "demo"),
        demo.SYNTHETIC_MB_ENV: "4",
        "PYTHONUNBUFFERED": "1",
    }
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # the child must take Ctrl-C
    try:
        playground = subprocess.Popen(
            [sys.executable, "-m", "model_cache_devtools.demo", "--playground"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    lines: queue.Queue[str] = queue.Queue()
    assert playground.stdout is not None
    reader = threading.Thread(target=lambda: [lines.put(line) for line in playground.stdout], daemon=True)  # type: ignore[union-attr]
    reader.start()
    exports: dict[str, str] = {}
    seen: list[str] = []
    deadline = time.monotonic() + 240  # a hung start, not a timing assertion
    try:
        while "MODEL_CACHE_REQUEST_QUEUE_URL" not in exports:
            assert time.monotonic() < deadline, "".join(seen)[-3000:]
            assert playground.poll() is None, "".join(seen)[-3000:]
            try:
                line = lines.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(line)
            if line.startswith("export "):
                name, _, value = line.removeprefix("export ").strip().partition("=")
                exports[name] = shlex.split(value)[0] if value else ""
        shell = {key: value for key, value in os.environ.items() if not key.startswith(("AWS_", "HF_", "MODEL_CACHE_"))}
        shell.update(exports)
        synced = subprocess.run(
            [sys.executable, "-m", "model_cache.cli.main", "sync", modelgen.TINY_MODEL, "-q"],
            env=shell,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert synced.returncode == 0, synced.stderr
        pulled = subprocess.run(
            [sys.executable, "-m", "model_cache_loader", "pull", modelgen.TINY_MODEL, "--fallback", "error"],
            env=shell,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert pulled.returncode == 0, pulled.stderr
        assert "model-cache-loader: s3:" in pulled.stderr
        assert Path(pulled.stdout.strip()).is_dir()
        playground.send_signal(signal.SIGINT)
        assert playground.wait(timeout=120) == 0
    finally:
        playground.kill()
