"""modelgen: the tiny real model loads and generates offline, every byte is deterministic, and the
fixture hub has the layout docs/contributing/devtools.md promises."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import unicodedata
from pathlib import Path

import pytest

from model_cache.contract.ids import validate_repo_path
from model_cache_devtools import modelgen

pytestmark = pytest.mark.unit


def tree_digest(root: Path) -> dict[str, str]:
    """relative path -> sha256 of every regular file under root."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return modelgen.write_tiny_model(tmp_path_factory.mktemp("tiny") / "model", seed=0, shards=1)


# ---------------------------------------------------------------------------------------------
# The tiny model
# ---------------------------------------------------------------------------------------------


def test_tiny_model_loads_and_generates_offline(tiny_model: Path) -> None:
    """GIVEN a generated tiny model folder and no network at all (unit: sockets disabled)
    WHEN transformers loads it with the Auto classes and generates greedily
    THEN it produces new tokens that the tokenizer decodes, with the special tokens configured."""
    # Not HF_HUB_OFFLINE: huggingface_hub reads it once at import, and it would stay on for every
    # later test in the session. No sockets is the stronger proof anyway.
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model, loading_info = AutoModelForCausalLM.from_pretrained(
        tiny_model, output_loading_info=True, local_files_only=True
    )
    tokenizer = AutoTokenizer.from_pretrained(tiny_model, local_files_only=True)

    assert type(model).__name__ == "LlamaForCausalLM"
    # Every weight in the files is one the model expects, with the right shape, and none is missing.
    assert {key: list(value) for key, value in loading_info.items() if value} == {}
    assert (tokenizer.bos_token, tokenizer.eos_token, tokenizer.pad_token) == ("<s>", "</s>", "<pad>")
    assert tokenizer.eos_token_id == model.config.eos_token_id
    assert tokenizer.pad_token_id == model.config.pad_token_id
    assert len(tokenizer) == model.config.vocab_size

    prompt = "The model cache mirrors"
    encoded = tokenizer(prompt, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**encoded, max_new_tokens=12, do_sample=False, min_new_tokens=12)
    new_tokens = output[0, encoded["input_ids"].shape[1] :]
    assert new_tokens.shape[0] == 12
    text = tokenizer.decode(output[0], skip_special_tokens=False)
    assert text.startswith(prompt)
    assert len(text) > len(prompt)


def test_tiny_model_repo_files(tiny_model: Path) -> None:
    """GIVEN a one-shard tiny model WHEN listing it THEN it has the files of a real Hub model repo."""
    names = {path.name for path in tiny_model.iterdir()}
    assert names == {
        ".gitattributes",
        "README.md",
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "special_tokens_map.json",
        "tokenizer.json",
        "tokenizer_config.json",
    }
    readme = (tiny_model / "README.md").read_text()
    assert readme.startswith("---\nlicense: apache-2.0\n")
    assert "\n---\n" in readme
    assert "*.safetensors filter=lfs diff=lfs merge=lfs -text" in (tiny_model / ".gitattributes").read_text()
    weights_kib = (tiny_model / "model.safetensors").stat().st_size / 1024
    assert 100 < weights_kib < 2048, "a few hundred KB of weights"


def test_sharded_tiny_model_has_consistent_index(tmp_path: Path) -> None:
    """GIVEN shards=3 WHEN the model is written THEN the index maps every tensor to exactly the shard
    that holds it, total_size is the sum of the tensors' bytes, and no single-file weight exists."""
    from safetensors import safe_open

    dest = modelgen.write_tiny_model(tmp_path / "m", seed=5, shards=3)
    index = json.loads((dest / "model.safetensors.index.json").read_text())
    shard_files = [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    assert sorted(set(index["weight_map"].values())) == shard_files
    assert not (dest / "model.safetensors").exists()

    total = 0
    seen: dict[str, str] = {}
    for shard in shard_files:
        with safe_open(str(dest / shard), framework="pt") as handle:
            assert handle.metadata() == {"format": "pt"}
            for name in handle.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensor = handle.get_tensor(name)
                total += tensor.numel() * tensor.element_size()
                seen[name] = shard
    assert seen == index["weight_map"]
    assert index["metadata"]["total_size"] == total


def test_same_seed_gives_identical_bytes_and_other_seed_other_weights(tmp_path: Path, tiny_model: Path) -> None:
    """GIVEN the module's seed-0 model WHEN it is written again with seed 0, and once with seed 1
    THEN seed 0 is byte-identical file by file; seed 1 changes the weights but not the tokenizer."""
    again = modelgen.write_tiny_model(tmp_path / "again", seed=0, shards=1)
    other = modelgen.write_tiny_model(tmp_path / "other", seed=1, shards=1)

    assert tree_digest(again) == tree_digest(tiny_model)
    original, changed = tree_digest(tiny_model), tree_digest(other)
    assert changed["model.safetensors"] != original["model.safetensors"]
    assert changed["tokenizer.json"] == original["tokenizer.json"]


def test_bytes_are_identical_across_processes(tmp_path: Path, tiny_model: Path) -> None:
    """GIVEN a fresh interpreter (new hash seeds in Python and in the tokenizers' Rust code)
    WHEN it writes the same tiny model THEN every file matches this process's bytes."""
    dest = tmp_path / "from-subprocess"
    subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys, pathlib; from model_cache_devtools import modelgen; "
            "modelgen.write_tiny_model(pathlib.Path(sys.argv[1]), seed=0, shards=1)",
            str(dest),
        ],
        check=True,
        timeout=120,
    )
    assert tree_digest(dest) == tree_digest(tiny_model)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shards": 0}, "shards must be >= 1"),
        ({"hidden_size": 30}, "hidden_size must be a multiple of 8"),
        ({"num_layers": 0}, "num_layers must be >= 1"),
        ({"vocab_size": 100}, "vocab_size must cover"),
        ({"shards": 1000}, "shards=1000 but the model has only"),
    ],
)
def test_tiny_model_rejects_bad_arguments(tmp_path: Path, kwargs: dict[str, int], message: str) -> None:
    """GIVEN an impossible argument WHEN writing a tiny model THEN a ValueError names it."""
    with pytest.raises(ValueError, match=message):
        modelgen.write_tiny_model(tmp_path / "bad", **kwargs)


# ---------------------------------------------------------------------------------------------
# Synthetic repos
# ---------------------------------------------------------------------------------------------


def test_synthetic_repo_declares_virtual_files_and_writes_small_ones(tmp_path: Path) -> None:
    """GIVEN four 512 MiB virtual shards and a real config WHEN writing the synthetic repo
    THEN .hub-synthetic.json declares each (size, seed), only the small file is on disk."""
    shards = {f"model-0000{i}-of-00004.safetensors": (512 * modelgen.MIB, 100 + i) for i in range(1, 5)}
    dest = modelgen.write_synthetic_repo(tmp_path / "big", shards, small_files={"config.json": b"{}\n"})

    declared = json.loads((dest / modelgen.SYNTHETIC_CONTROL_FILE).read_text())
    assert declared == {"files": {path: {"size": size, "seed": seed} for path, (size, seed) in shards.items()}}
    assert sorted(p.name for p in dest.iterdir()) == [".hub-synthetic.json", "config.json"]
    assert sum(p.stat().st_size for p in dest.iterdir()) < 4096


@pytest.mark.parametrize(
    ("files", "small_files", "message"),
    [
        ({"a.bin": (-1, 0)}, None, "size must be an int >= 0"),
        ({"a.bin": (1, "x")}, None, "seed must be an int"),
        ({"../escape.bin": (1, 0)}, None, "'..' segment"),
        ({"/abs.bin": (1, 0)}, None, "absolute"),
        ({".hub-gated.json": (1, 0)}, None, "reserved control-file name"),
        ({"config.json": (1, 0)}, {"config.json": b"{}"}, "both synthetic and real"),
        ({}, {"dir//x": b""}, "empty segment"),
    ],
)
def test_synthetic_repo_rejects_bad_declarations(
    tmp_path: Path, files: dict[str, tuple[int, int]], small_files: dict[str, bytes] | None, message: str
) -> None:
    """GIVEN a bad path, size, seed or a clash WHEN writing THEN a clear error names it and nothing is written."""
    dest = tmp_path / "repo"
    with pytest.raises(ValueError, match=message):
        modelgen.write_synthetic_repo(dest, files, small_files=small_files)
    assert not dest.exists()


# ---------------------------------------------------------------------------------------------
# The fixture hub
# ---------------------------------------------------------------------------------------------


def repo_files(root: Path, repo_id: str) -> dict[str, int]:
    """What the Hub double would serve for repo_id: real files (minus control files) + synthetic ones."""
    folder = modelgen.repo_dir(root, repo_id)
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in folder.rglob("*")
        if path.is_file() and not (path.parent == folder and path.name.startswith(".hub-"))
    }
    control = folder / modelgen.SYNTHETIC_CONTROL_FILE
    if control.exists():
        for path, spec in json.loads(control.read_text())["files"].items():
            files[path] = spec["size"]
    return files


def test_fixture_hub_has_every_documented_repo(hub_root: Path) -> None:
    """GIVEN the session's fixture hub WHEN listing it THEN each constant's folder exists, every served
    path is a valid NFC repo path, and no folder is both a repo and an org."""
    for repo_id in modelgen.FIXTURE_REPOS:
        files = repo_files(hub_root, repo_id)
        assert files, repo_id
        for path in files:
            assert validate_repo_path(path) == path
            assert unicodedata.is_normalized("NFC", path)
    assert (hub_root / modelgen.NO_ORG / "config.json").is_file()
    assert "/" not in modelgen.NO_ORG


def test_fixture_tiny_model_is_two_shards(hub_root: Path) -> None:
    files = repo_files(hub_root, modelgen.TINY_MODEL)
    assert {"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} <= set(files)
    assert "model.safetensors.index.json" in files
    assert "tokenizer.json" in files


def test_fixture_nested_repo(hub_root: Path) -> None:
    """GIVEN NESTED THEN it has deep paths, dotfiles, a unicode name, a ~3 MiB real weight and a
    synthetic regular file over 10 MiB (LFS by size only)."""
    files = repo_files(hub_root, modelgen.NESTED)
    assert {"sub/dir/file.txt", "sub/.hidden", ".gitattributes", modelgen.NESTED_UNICODE_PATH} <= set(files)
    assert not modelgen.NESTED_UNICODE_PATH.isascii()
    assert files[modelgen.NESTED_LFS_WEIGHT_PATH] == 3 * modelgen.MIB
    assert (modelgen.repo_dir(hub_root, modelgen.NESTED) / modelgen.NESTED_LFS_WEIGHT_PATH).is_file()
    large = modelgen.NESTED_LARGE_FILE_PATH
    assert files[large] > 10 * modelgen.MIB
    assert not (modelgen.repo_dir(hub_root, modelgen.NESTED) / large).exists(), "declared synthetic, not on disk"
    assert not large.endswith((".safetensors", ".bin")), "a regular file: LFS only by its size"


def test_fixture_gated_repo_declares_the_token(hub_root: Path) -> None:
    folder = modelgen.repo_dir(hub_root, modelgen.GATED)
    gated = json.loads((folder / modelgen.GATED_CONTROL_FILE).read_text())
    assert gated == {"tokens": [modelgen.GATED_TOKEN]}
    assert modelgen.GATED_TOKEN.startswith("hf_")


def test_fixture_weight_format_repos(hub_root: Path) -> None:
    """GIVEN MULTI_FORMAT and BIN_ONLY THEN one has safetensors plus every duplicate format, the other only .bin."""
    multi = set(repo_files(hub_root, modelgen.MULTI_FORMAT))
    assert {
        "model.safetensors",
        "pytorch_model.bin",
        "model.onnx",
        "flax_model.msgpack",
        "tf_model.h5",
        "config.json",
    } <= multi
    bin_only = set(repo_files(hub_root, modelgen.BIN_ONLY))
    assert "pytorch_model.bin" in bin_only
    assert not any(path.endswith(".safetensors") for path in bin_only)


def test_fixture_big_repo_is_synthetic(hub_root: Path) -> None:
    """GIVEN BIG THEN its 48 MiB weight is virtual (seed 1) and spans several 16 MiB copy units."""
    folder = modelgen.repo_dir(hub_root, modelgen.BIG)
    declared = json.loads((folder / modelgen.SYNTHETIC_CONTROL_FILE).read_text())["files"]
    assert declared == {"model.safetensors": {"size": 48 * modelgen.MIB, "seed": 1}}
    assert declared["model.safetensors"]["size"] // (16 * modelgen.MIB) >= 3
    assert sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) < 64 * 1024


def test_fixture_hub_is_deterministic(hub_root: Path, tmp_path: Path) -> None:
    """GIVEN the session's fixture hub WHEN building another one THEN every file is byte-identical
    (so the double's content-derived commit ids are stable across runs). Other tests add their own
    repos to the session hub, so only the fixture repos are compared."""
    modelgen.build_fixture_hub(tmp_path / "again")
    fixture_dirs = tuple(f"{repo_id}/" for repo_id in modelgen.FIXTURE_REPOS)
    session_fixture_files = {
        path: digest for path, digest in tree_digest(hub_root).items() if path.startswith(fixture_dirs)
    }
    assert tree_digest(tmp_path / "again") == session_fixture_files


def test_deterministic_bytes() -> None:
    assert modelgen.deterministic_bytes(1000, 3) == modelgen.deterministic_bytes(1000, 3)
    assert modelgen.deterministic_bytes(1000, 3) != modelgen.deterministic_bytes(1000, 4)
    assert len(modelgen.deterministic_bytes(0, 3)) == 0
    with pytest.raises(ValueError, match="size must be >= 0"):
        modelgen.deterministic_bytes(-1, 0)
