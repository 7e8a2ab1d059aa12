"""Helpers for the security checks: the pipeline harness, and a search for a secret in text."""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

from conftest import shared_test_module


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
