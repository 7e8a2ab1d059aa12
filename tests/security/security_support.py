"""Helpers for the security checks: other areas' test helpers, and a search for a secret in text."""

from __future__ import annotations

import importlib.util
import json
import sys
from types import ModuleType
from typing import Any

from conftest import REPO_ROOT


def shared_test_module(name: str, relative_path: str) -> ModuleType:
    """A helper module of another test area (e.g. tests/pipeline/sfn_harness.py), imported once under
    its own name so that area's tests and ours share one copy."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative_path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def sfn_harness() -> ModuleType:
    return shared_test_module("sfn_harness", "tests/pipeline/sfn_harness.py")


def leaks(secret: str, **places: Any) -> dict[str, str]:
    """Where `secret` appears: each place is text, or anything JSON-serialisable (searched as JSON).

    Returns {place: a short excerpt around the first hit}, so a failing assertion shows where it leaked.
    """
    found: dict[str, str] = {}
    for place, value in places.items():
        text = value if isinstance(value, str) else json.dumps(value, default=str)
        index = text.find(secret)
        if index >= 0:
            found[place] = text[max(0, index - 80) : index + len(secret) + 20]
    return found
