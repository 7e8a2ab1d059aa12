"""scripts/demo_compare.py: two `make demo` outputs are the same story when only run-specific values differ."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import shared_test_module

pytestmark = pytest.mark.unit

demo_compare = shared_test_module("demo_compare", "scripts/demo_compare.py")

RUN_ONE = """\
hub root /work/main/.demo/hub
Hub double  http://127.0.0.1:39393   (HF_ENDPOINT)
state machine  arn:aws:states:us-east-1:123456789012:stateMachine:mc-4abb31bb-model-cache
--- deploy the stack into moto: 2.2 s
  states: Refresh? -> Plan -> Publish -> Published
published 586577 bytes, 10 files at commit 3a876df6469a:
2026-12-07 23:55:48,858 INFO httpx2 HTTP Request: GET http://127.0.0.1:39393/api/models/x "HTTP/1.1 200 OK"
0/2 files, 63.4 KiB/1.0 GiB (0%), 2.5 MB/s, ETA 7m01s | model.safetensors 0%
INFO model_cache_loader {"bytes": 586577, "mb_per_s": 5.3, "seconds": 0.111, "source": "s3"}
"""

# The same run again: other ports, stack id, commit, checkout, clock and timings, and another request log.
RUN_TWO = """\
hub root /tmp/other/.demo/hub
Hub double  http://127.0.0.1:40387   (HF_ENDPOINT)
state machine  arn:aws:states:us-east-1:123456789012:stateMachine:mc-ac052734-model-cache
--- deploy the stack into moto: 2.1 s
  states: Refresh? -> Plan -> Publish -> Published
published 586577 bytes, 10 files at commit 15953e75cb9e:
INFO model_cache_loader {"bytes": 586577, "mb_per_s": 2.6, "seconds": 0.228, "source": "s3"}
"""


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def test_two_runs_of_one_tree_tell_the_same_story(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN two demo outputs that differ only in run-specific values WHEN compared THEN they are the same
    assert demo_compare.main([write(tmp_path, "one.log", RUN_ONE), write(tmp_path, "two.log", RUN_TWO)]) == 0
    assert "the same story: 7 lines" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("changed", "shown"),
    [
        ("Refresh? -> Plan -> Publish", "Refresh? -> Defaults -> Plan -> Publish"),
        ("586577 bytes, 10 files", "586577 bytes, 9 files"),
        ('"source": "s3"', '"source": "hub"'),
    ],
)
def test_a_changed_line_of_the_story_is_shown(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], changed: str, shown: str
) -> None:
    # GIVEN a second run whose story differs in one line WHEN compared THEN that line is printed and it exits 1
    after = RUN_TWO.replace(changed, shown)
    assert after != RUN_TWO
    assert demo_compare.main([write(tmp_path, "one.log", RUN_ONE), write(tmp_path, "two.log", after)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert [line for line in out if line.startswith("+") and not line.startswith("+++")] == [
        "+" + demo_compare.story(after)[next(i for i, line in enumerate(demo_compare.story(after)) if shown in line)]
    ]
