"""Adopting a cached model in Ray Serve LLM, vLLM and KServe by changing only its URI (issue 24, item 2):
`python -m model_cache_devtools.adopt`, whole, in its own process (it owns a Hub double and a moto server).
docs/how-to/adopt.md holds a run of it; this test holds the run to what the doc says."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_each_consumer_reads_the_snapshot_by_its_uri_alone(tmp_path: Path) -> None:
    """GIVEN the tiny model cached by `model-cache sync`  WHEN the snapshot URI from `show --uri` is given to
    Ray Serve LLM's downloader, the Run:ai streamer vLLM runs and KServe's storage initializer
    THEN each reads every file (or tensor) byte-identical to the Hub's, and the printed URI is the one each takes."""
    env = {**os.environ, "MODEL_CACHE_ADOPT_DIR": str(tmp_path / "adopt"), "PYTHONUNBUFFERED": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "model_cache_devtools.adopt"], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    uri = re.search(r"^(s3://model-cache-adopt/models/tiny-org--tiny-llm/snapshots/[0-9a-f]{40}/)$", done.stdout, re.M)
    assert uri is not None, done.stdout
    assert f"+ model_loading_config: {{model_id: tiny, model_source: {{bucket_uri: {uri.group(1)}}}}}" in done.stdout
    assert f"+ vllm serve {uri.group(1)} --load-format runai_streamer" in done.stdout
    assert f"+ storageUri: {uri.group(1)}" in done.stdout
    ray = re.search(r"download_model -> refs/main = \w+, (\d+) files, (\d+) byte-identical", done.stdout)
    runai = re.search(r"(\d+) tensors, (\d+) equal to safetensors' own load", done.stdout)
    kserve = re.search(r"Storage.download -> /mnt/models: (\d+) files, (\d+) byte-identical", done.stdout)
    for found in (ray, runai, kserve):
        assert found is not None, done.stdout
        assert int(found.group(1)) > 0
        assert found.group(1) == found.group(2)
