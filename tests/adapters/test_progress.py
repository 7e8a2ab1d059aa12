"""ConsoleProgress: plain periodic lines when not a TTY, a redrawn line on a TTY; the copier's bad input."""

from __future__ import annotations

import io
import json

import pytest

from model_cache.adapters.progress import ConsoleProgress, human_bytes, human_seconds
from model_cache.pipeline import copier

pytestmark = pytest.mark.unit


class FakeTty(io.StringIO):
    def isatty(self) -> bool:
        return True


def drive(progress: ConsoleProgress) -> None:
    progress.begin(total_files=2, total_bytes=3 * 1024 * 1024)
    progress.file_started("a.safetensors", 2 * 1024 * 1024)
    progress.file_started("b.json", 1024 * 1024)
    progress.advance("a.safetensors", 2 * 1024 * 1024)
    progress.file_done("a.safetensors")
    progress.advance("b.json", 1024 * 1024)
    progress.file_done("b.json")
    progress.end()


def test_non_tty_gets_plain_lines_with_totals_rate_and_eta() -> None:
    """GIVEN a non-TTY stream WHEN a copy progresses THEN plain lines: per-file done lines and a total line."""
    stream = io.StringIO()
    drive(ConsoleProgress(stream, interval=0))
    text = stream.getvalue()
    assert "\r" not in text
    assert "done a.safetensors (2.0 MiB)" in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("2/2 files, 3.0 MiB/3.0 MiB (100%)")
    assert "MB/s" in last
    assert "ETA" in last


def test_tty_redraws_one_line() -> None:
    """GIVEN a TTY WHEN a copy progresses THEN the line is redrawn in place and ends with one newline."""
    stream = FakeTty()
    drive(ConsoleProgress(stream, interval=0))
    text = stream.getvalue()
    assert text.count("\r\x1b[2K") >= 2
    assert text.endswith("\n")
    assert text.count("\n") == 1
    assert "done " not in text


@pytest.mark.parametrize(("count", "text"), [(0, "0 B"), (1536, "1.5 KiB"), (3 * 1024**3, "3.0 GiB")])
def test_human_bytes(count: int, text: str) -> None:
    """GIVEN a byte count WHEN shown THEN binary units."""
    assert human_bytes(count) == text


def test_human_seconds() -> None:
    """GIVEN durations WHEN shown THEN s, m+s, h+m."""
    assert [human_seconds(5), human_seconds(125), human_seconds(3725)] == ["5s", "2m05s", "1h02m"]


@pytest.mark.parametrize(("argv", "needle"), [([], "no copy unit"), (["--event", "{not json"], "not valid JSON")])
def test_copier_refuses_bad_input_with_exit_2(
    argv: list[str], needle: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN no event or a malformed one WHEN the Fargate copier starts THEN exit 2 and a JSON error on stderr."""
    monkeypatch.delenv(copier.EVENT_ENV, raising=False)
    monkeypatch.delenv(copier.TASK_TOKEN_ENV, raising=False)
    assert copier.main(argv) == 2
    error = json.loads(capsys.readouterr().err)
    assert error["error"] == "InvalidRequest"
    assert needle in error["cause"]
