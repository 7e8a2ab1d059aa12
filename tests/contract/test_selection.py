"""Selection: include/exclude globs and the duplicate-weight-format default (docs/architecture.md 3.3)."""

from __future__ import annotations

import pytest

from model_cache.contract.errors import InvalidRequest
from model_cache.contract.selection import select_paths, validate_globs

pytestmark = pytest.mark.unit

REPO = [
    "config.json",
    "model.safetensors",
    "pytorch_model.bin",
    "tf_model.h5",
    "flax_model.msgpack",
    "onnx/model.onnx",
    "sub/tokenizer.json",
    "README.md",
]


def test_default_drops_duplicate_formats_when_safetensors_exist() -> None:
    """GIVEN a repo with safetensors and other formats WHEN nothing is asked THEN only the other formats go."""
    assert select_paths(REPO) == ["config.json", "model.safetensors", "sub/tokenizer.json", "README.md"]


def test_default_keeps_bin_when_it_is_the_only_format() -> None:
    """GIVEN only a .bin WHEN nothing is asked THEN it is kept."""
    assert select_paths(["config.json", "pytorch_model.bin"]) == ["config.json", "pytorch_model.bin"]


def test_explicit_include_asks_for_a_duplicate_format() -> None:
    """GIVEN --include '*.bin' WHEN selecting THEN the .bin is selected even though safetensors exist."""
    assert select_paths(REPO, include=["*.bin", "*.json"]) == ["config.json", "pytorch_model.bin", "sub/tokenizer.json"]


def test_exclude_wins_and_star_crosses_directories() -> None:
    """GIVEN *.json globs WHEN excluding sub/* THEN nested json is matched by '*' and then excluded."""
    assert select_paths(REPO, include=["*.json"]) == ["config.json", "sub/tokenizer.json"]
    assert select_paths(REPO, include=["*.json"], exclude=["sub/*"]) == ["config.json"]


@pytest.mark.parametrize("bad", [[""], ["  "], [3], "x" * 300, {"a": 1}])
def test_bad_globs_are_refused(bad: object) -> None:
    """GIVEN an empty, non-string or oversized glob WHEN validated THEN InvalidRequest names the field."""
    with pytest.raises(InvalidRequest, match="include"):
        validate_globs(bad if not isinstance(bad, str) else [bad], "include")
