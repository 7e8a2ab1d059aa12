"""Which repo files a sync copies: include/exclude globs and the duplicate-weight-format default
(docs/architecture.md 3.3).

Globs are matched with `fnmatch` against the whole repo path, as `snapshot_download(allow_patterns=...)`
does: `*` also crosses `/`, so `*.json` selects `sub/config.json` too.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from fnmatch import fnmatchcase
from typing import TypeVar

from model_cache.contract.errors import InvalidRequest

# When a repo has *.safetensors, these formats hold the same weights again; skip them unless asked.
DUPLICATE_WEIGHT_SUFFIXES = (".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt", ".onnx", ".gguf")
MAX_GLOBS = 100
MAX_GLOB_LENGTH = 256

PathT = TypeVar("PathT")


def validate_globs(globs: object, field: str) -> tuple[str, ...]:
    """Return `globs` (a list of glob patterns; None for none) as a tuple, or raise InvalidRequest naming the
    bad entry. The one validator of include/exclude, for the request message, the plan event and the CLI.

    A bare string is refused, not taken for a list of one: `"include": "*.json"` in a JSON request is far
    more often a slip than a choice, and the fix is one pair of brackets."""
    if globs is None:
        return ()
    if isinstance(globs, str):
        raise InvalidRequest(f"{field} must be a list of glob patterns, not a single string ({globs!r})")
    if not isinstance(globs, list | tuple):
        raise InvalidRequest(f"{field} must be a list of glob patterns, got {type(globs).__name__}")
    if len(globs) > MAX_GLOBS:
        raise InvalidRequest(f"{field} has {len(globs)} patterns; at most {MAX_GLOBS} are allowed")
    for glob in globs:
        if not isinstance(glob, str) or not glob.strip():
            raise InvalidRequest(f"{field} patterns must be non-empty strings, got {glob!r}")
        if len(glob) > MAX_GLOB_LENGTH or not glob.isprintable():
            raise InvalidRequest(
                f"{field} pattern {glob[:60]!r} must be printable and at most {MAX_GLOB_LENGTH} characters"
            )
    return tuple(globs)


def is_duplicate_weight_format(path: str) -> bool:
    return path.lower().endswith(DUPLICATE_WEIGHT_SUFFIXES)


def _matches(path: str, globs: Sequence[str]) -> bool:
    return any(fnmatchcase(path, glob) for glob in globs)


def select_paths(paths: Iterable[str], include: Sequence[str] = (), exclude: Sequence[str] = ()) -> list[str]:
    """The paths a sync copies, in the given order.

    - `include` empty means every file; otherwise a file must match one include glob.
    - A file matching an `exclude` glob is dropped, whatever `include` says.
    - When the repo has any `*.safetensors`, duplicate weight formats (`*.bin`, `*.pt`, ...) are dropped
      unless an explicit include glob selects them (`--include '*.bin'`).
    """
    all_paths = list(paths)
    has_safetensors = any(path.lower().endswith(".safetensors") for path in all_paths)
    selected: list[str] = []
    for path in all_paths:
        included = _matches(path, include) if include else True
        if not included or _matches(path, exclude):
            continue
        if has_safetensors and is_duplicate_weight_format(path) and not include:
            continue
        selected.append(path)
    return selected
