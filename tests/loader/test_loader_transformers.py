"""The point of it all: after a pull, transformers loads and runs the model offline, with zero HTTP calls."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from loader_seed import repo_files, seed_snapshot

from model_cache_devtools.modelgen import TINY_MODEL, repo_dir
from model_cache_loader import pull

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

LOAD_AND_GENERATE = textwrap.dedent(
    """
    import sys
    from huggingface_hub import hf_hub_download
    from transformers import AutoModelForCausalLM, AutoTokenizer

    repo_id = sys.argv[1]
    tokenizer = AutoTokenizer.from_pretrained(repo_id)
    model = AutoModelForCausalLM.from_pretrained(repo_id)
    inputs = tokenizer("the cache", return_tensors="pt")
    output = model.generate(**inputs, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    print("generated", output.shape[-1] - inputs["input_ids"].shape[-1], "tokens")
    print("config at", hf_hub_download(repo_id, "config.json", local_files_only=True))
    """
)


def test_transformers_loads_the_pulled_tiny_model_offline(
    s3: Any, bucket: str, hub: Any, hub_root: Path, hf_cache: Path
) -> None:
    """GIVEN the tiny real model cached in S3 WHEN pulled and loaded with HF_HUB_OFFLINE=1
    THEN transformers generates text, and the Hub double saw no request at all."""
    seeded = seed_snapshot(s3, bucket, TINY_MODEL, repo_files(repo_dir(hub_root, TINY_MODEL)))
    result = pull(TINY_MODEL, bucket=bucket, cache_dir=hf_cache, fallback="error")
    assert result.source == "s3"
    hub.requests.clear()

    done = subprocess.run(
        [sys.executable, "-c", LOAD_AND_GENERATE, TINY_MODEL],
        # HF_ENDPOINT still points at the Hub double: were anything to go online, its log would show it.
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(hf_cache), "TRANSFORMERS_OFFLINE": "1"},
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "generated 5 tokens" in done.stdout
    assert f"snapshots/{seeded.commit}/config.json" in done.stdout
    assert list(hub.requests) == []
