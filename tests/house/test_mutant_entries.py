"""`make mutants` entries still point at code that exists.

Each entry names a file, a guarded text and the tests that must fail when that text is broken. When
the code moves on and the text no longer occurs, the entry can only report an error, and only when
someone runs `make mutants` (six entries went stale that way across issues 23 and 24). This check
runs in `make test` instead, in a second, and names the entries to update.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]


def mutants_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("mutants_script", ROOT / "scripts" / "mutants.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolve the module by name
    spec.loader.exec_module(module)
    return module


def test_every_guarded_text_occurs_exactly_once_and_every_named_test_file_exists() -> None:
    # GIVEN every entry of `make mutants`
    mutants = mutants_module()
    entries = [*mutants.MUTANTS, *mutants.WORLD_MUTANTS, *mutants.grant_mutants()]
    assert entries
    # WHEN each is checked against the tree as it is
    stale = []
    for entry in entries:
        if entry.old:
            count = (ROOT / entry.path).read_text().count(entry.old)
            if count != 1:
                stale.append(f"{entry.name}: the guarded text occurs {count} times in {entry.path}")
        elif not entry.env:
            stale.append(f"{entry.name}: neither a text to break nor an environment")
        stale.extend(
            f"{entry.name}: no test file {test.split('::')[0]}"
            for test in entry.tests
            if not (ROOT / test.split("::")[0]).exists()
        )
    # THEN each would break exactly one place, and run tests that exist
    assert stale == [], "\n".join(stale)


def test_entry_names_are_unique() -> None:
    # GIVEN every entry  THEN `--only NAME` can pick any one of them
    names = [entry.name for entry in (*mutants_module().MUTANTS, *mutants_module().WORLD_MUTANTS)]
    assert len(names) == len(set(names)), sorted(name for name in names if names.count(name) > 1)
