"""modelgen's fixture repos as the Hub double serves them: the tiny model is a real Hub model that
transformers downloads and runs, and each fixture repo looks on the wire as docs/contributing/devtools.md says."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from model_cache_devtools import modelgen

pytestmark = pytest.mark.integration

MIB = 1024 * 1024


def test_transformers_downloads_the_tiny_model_from_the_hub_double_and_generates(
    hf_endpoint: str, hf_cache: Path, hub_root: Path
) -> None:
    """GIVEN the Hub double serving the fixture hub
    WHEN transformers' from_pretrained fetches TINY_MODEL by repo id (2 shards + index) and generates
    THEN it produces tokens, and the cached snapshot holds exactly the files modelgen wrote."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(modelgen.TINY_MODEL, cache_dir=hf_cache)
    tokenizer = AutoTokenizer.from_pretrained(modelgen.TINY_MODEL, cache_dir=hf_cache)
    encoded = tokenizer("Ray Serve pods", return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=8, min_new_tokens=8, do_sample=False)
    assert output.shape[1] == encoded["input_ids"].shape[1] + 8

    (snapshot,) = (hf_cache / "models--tiny-org--tiny-llm" / "snapshots").iterdir()
    source = modelgen.repo_dir(hub_root, modelgen.TINY_MODEL)
    for name in ("model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors", "tokenizer.json"):
        assert (snapshot / name).read_bytes() == (source / name).read_bytes()


def test_fixture_repos_on_the_wire(hf_endpoint: str, hf_cache: Path, hub_root: Path) -> None:
    """GIVEN the Hub double WHEN listing each fixture repo with sizes and LFS info
    THEN the documented shapes hold: LFS by extension and by size, synthetic sizes, gating, no-org ids."""
    from huggingface_hub import HfApi, hf_hub_download
    from huggingface_hub.errors import GatedRepoError

    api = HfApi(endpoint=hf_endpoint)

    def files(repo_id: str, token: str | None = None) -> dict[str, Any]:
        info = api.model_info(repo_id, files_metadata=True, token=token)
        return {sibling.rfilename: sibling for sibling in info.siblings or []}

    nested = files(modelgen.NESTED)
    assert not any(name.startswith(".hub-") for name in nested), "control files are never served"
    assert {"sub/dir/file.txt", ".gitattributes", modelgen.NESTED_UNICODE_PATH} <= set(nested)
    assert nested["sub/dir/file.txt"].lfs is None
    assert nested[modelgen.NESTED_LFS_WEIGHT_PATH].lfs is not None
    large = nested[modelgen.NESTED_LARGE_FILE_PATH]
    assert large.size == modelgen.NESTED_LARGE_FILE_SIZE
    assert large.lfs is not None, "over 10 MiB: LFS by size alone"

    big = files(modelgen.BIG)["model.safetensors"]
    assert (big.size, big.lfs is not None) == (48 * MIB, True)

    with pytest.raises(GatedRepoError):
        hf_hub_download(modelgen.GATED, "config.json", token=False, cache_dir=hf_cache)
    gated_config = hf_hub_download(modelgen.GATED, "config.json", token=modelgen.GATED_TOKEN, cache_dir=hf_cache)
    assert Path(gated_config).read_bytes() == (modelgen.repo_dir(hub_root, modelgen.GATED) / "config.json").read_bytes()

    assert api.model_info(modelgen.NO_ORG).id == modelgen.NO_ORG
    assert {"pytorch_model.bin", "model.onnx", "tf_model.h5", "flax_model.msgpack", "model.safetensors"} <= set(
        files(modelgen.MULTI_FORMAT)
    )
