"""deploy/ray/app.py request handling and configuration, without Ray or a model.

The real path (Ray Serve, the loader, transformers) is proved in test_deploy_ray_app.py; here a
replica is built around a stand-in model so each error answer can be checked quickly, including
a generation failure, which a healthy tiny model cannot be made to produce.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from starlette.requests import Request

pytestmark = pytest.mark.unit

APP_PATH = Path(__file__).resolve().parents[2] / "deploy" / "ray" / "app.py"


@pytest.fixture(scope="module")
def app_module() -> Iterator[ModuleType]:
    name = "deploy_ray_app_under_test"
    spec = importlib.util.spec_from_file_location(name, APP_PATH)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is created
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(name, None)


class FailingTokenizer:
    pad_token_id = 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("CUDA out of memory")


def replica(app_module: ModuleType, tokenizer: Any) -> Any:
    """A TextGenerator replica whose model was 'loaded' already (no loader, no transformers)."""
    cls = app_module.TextGenerator.func_or_class
    instance = cls.__new__(cls)
    instance.model_id = "tiny-org/tiny-llm"
    instance.max_length = 24
    instance.loaded = app_module.LoadedModel(
        tokenizer=tokenizer,
        model=None,
        model_id="tiny-org/tiny-llm",
        commit="0" * 40,
        source="s3-cache",
        gpu_available=False,
        device_used="cpu",
        pull_seconds=0.1,
        load_seconds=0.2,
    )
    return instance


def call(instance: Any, body: bytes, method: str = "POST") -> tuple[int, dict[str, Any]]:
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {"type": "http.disconnect"}
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    scope = {"type": "http", "method": method, "path": "/", "headers": [], "query_string": b""}
    response = asyncio.run(instance(Request(scope, receive)))
    return response.status_code, json.loads(response.body)


@pytest.mark.parametrize(
    ("body", "method", "status", "mentions"),
    [
        (b"{not json", "POST", 400, "not valid JSON"),
        (b"\xff\xfe", "POST", 400, "not valid JSON"),
        (b'["a list"]', "POST", 400, "JSON object"),
        (b'{"text": "no prompt"}', "POST", 400, "prompt"),
        (b'{"prompt": "   "}', "POST", 400, "prompt"),
        (b'{"prompt": 42}', "POST", 400, "prompt"),
        (b"", "GET", 405, "POST"),
    ],
)
def test_bad_requests_get_a_json_error_and_a_4xx(
    app_module: ModuleType, body: bytes, method: str, status: int, mentions: str
) -> None:
    # GIVEN a ready replica  WHEN it gets a malformed request
    answer_status, answer = call(replica(app_module, FailingTokenizer()), body, method)
    # THEN the answer is a JSON error naming the problem, with the right status
    assert answer_status == status
    assert set(answer) == {"error"}
    assert mentions in answer["error"]


def test_a_failed_generation_is_a_json_500_naming_the_cause(app_module: ModuleType) -> None:
    # GIVEN a replica whose model fails while generating
    instance = replica(app_module, FailingTokenizer())
    # WHEN a valid prompt comes in
    status, answer = call(instance, json.dumps({"prompt": "hello"}).encode())
    # THEN the client gets a 500 with the cause, not a dropped connection
    assert status == 500
    assert answer == {"error": "generation failed: RuntimeError: CUDA out of memory"}


@pytest.mark.parametrize(
    ("raw", "expected"),
    [(None, 100), ("256", 256), (" 64 ", 64)],
)
def test_max_length_comes_from_the_environment(
    app_module: ModuleType, monkeypatch: pytest.MonkeyPatch, raw: str | None, expected: int
) -> None:
    # GIVEN MAX_LENGTH unset or set  THEN the replica uses it, "100" by default as in the seed
    if raw is None:
        monkeypatch.delenv("MAX_LENGTH", raising=False)
    else:
        monkeypatch.setenv("MAX_LENGTH", raw)
    assert app_module.max_length_from_env() == expected


@pytest.mark.parametrize("raw", ["abc", "1", "-5", "1.5", ""])
def test_a_bad_max_length_fails_the_replica_start_with_a_clear_error(
    app_module: ModuleType, monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    # GIVEN an unusable MAX_LENGTH  THEN starting fails, naming the variable and the value
    monkeypatch.setenv("MAX_LENGTH", raw)
    with pytest.raises(app_module.ConfigurationError, match="MAX_LENGTH"):
        app_module.max_length_from_env()


def test_model_sources_are_reported_in_the_api_vocabulary(app_module: ModuleType) -> None:
    # GIVEN the loader's source names  THEN the API reports s3-cache | local | hub
    assert app_module.MODEL_SOURCES == {"s3": "s3-cache", "local": "local", "hub": "hub"}


def test_with_the_cache_off_the_app_needs_no_loader(app_module: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    """GIVEN USE_MODEL_CACHE=false and no model_cache_loader importable WHEN the snapshot is fetched
    THEN it comes from the Hub through huggingface_hub, at the pinned revision."""
    import huggingface_hub

    calls: list[tuple[str, str | None]] = []

    def snapshot_download(repo_id: str, revision: str | None = None) -> str:
        calls.append((repo_id, revision))
        return f"/cache/models--org--name/snapshots/{'a' * 40}"

    monkeypatch.setenv("USE_MODEL_CACHE", "false")
    monkeypatch.setitem(sys.modules, "model_cache_loader", None)  # importing it now raises ImportError
    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    snapshot = app_module.fetch_snapshot("org/name@v1")
    assert calls == [("org/name", "v1")]
    assert snapshot.source == "hub"
    assert snapshot.commit == "a" * 40


def test_with_the_cache_on_the_app_goes_through_the_loader(
    app_module: ModuleType, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GIVEN USE_MODEL_CACHE=true WHEN the snapshot is fetched THEN the loader is what is asked."""
    monkeypatch.setenv("USE_MODEL_CACHE", "true")
    monkeypatch.setitem(sys.modules, "model_cache_loader", None)
    with pytest.raises(ImportError):
        app_module.fetch_snapshot("org/name")
