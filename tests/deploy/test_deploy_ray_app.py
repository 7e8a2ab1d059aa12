"""deploy/ray/app.py under real Ray Serve: the model from the S3 cache, and from the Hub on a miss.

One local Ray session for the module (Ray starts slowly on two shared cores). Each test deploys
the app the way the RayService does: app.py shipped as the runtime_env working_dir, the pod
variables as runtime_env env_vars, and an HTTP POST through Serve's proxy on a free loopback
port. The replica's loader talks to moto's S3 server and the Hub double over HTTP.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from conftest import local_ray_serve, seed_snapshot, shared_test_module

from model_cache_devtools.modelgen import TINY_MODEL, repo_dir

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(900)]

APP_DIR = Path(__file__).resolve().parents[2] / "deploy" / "ray"
PREFIX = "models"
MAX_LENGTH = "24"


@pytest.fixture(scope="module")
def app_module() -> Iterator[ModuleType]:
    """deploy/ray/app.py imported as `app`, the name the replicas import it by from working_dir."""
    previous = sys.modules.get("app")
    spec = importlib.util.spec_from_file_location("app", APP_DIR / "app.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["app"] = module
    spec.loader.exec_module(module)
    try:
        yield module
    finally:
        if previous is None:
            sys.modules.pop("app", None)
        else:
            sys.modules["app"] = previous


@pytest.fixture(scope="module")
def serve_url(app_module: ModuleType) -> Iterator[str]:
    """A local Ray with Serve on a loopback port. app.py goes to the replicas as the job's
    working_dir, as the RayService ships it (Ray takes a local directory only at the job level)."""
    with local_ray_serve(runtime_env={"working_dir": str(APP_DIR)}) as url:
        yield url


def pod_env(aws_url: str, hub_url: str, bucket: str, cache_dir: Path) -> dict[str, str]:
    """The variables the RayService gives the replica, pointed at the local servers."""
    return {
        "MODEL_ID": TINY_MODEL,
        "MAX_LENGTH": MAX_LENGTH,
        "USE_MODEL_CACHE": "true",
        "MODEL_CACHE_BUCKET": bucket,
        "MODEL_CACHE_PREFIX": PREFIX,
        "AWS_ENDPOINT_URL": aws_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HF_ENDPOINT": hub_url,
        "HF_HOME": str(cache_dir.parent / "hf-home"),
        "HF_HUB_CACHE": str(cache_dir),
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def deploy(app_module: ModuleType, name: str, env: dict[str, str]) -> str:
    """serve.run the app as the RayService does; returns its route."""
    from ray import serve

    runtime_env = {"env_vars": env}
    application = app_module.TextGenerator.options(ray_actor_options={"num_cpus": 1, "runtime_env": runtime_env}).bind()
    route = f"/{name}"
    serve.run(application, name=name, route_prefix=route)
    return route


def post(url: str, body: bytes, method: str = "POST") -> tuple[int, dict[str, Any]]:
    request = urllib.request.Request(url, data=body if method == "POST" else None, method=method)  # noqa: S310
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback URL we built
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def assert_generated(answer: dict[str, Any], prompt: str) -> None:
    assert answer["prompt"] == prompt
    assert isinstance(answer["generated_text"], str)
    assert answer["response"] == answer["generated_text"]  # the seed's field, kept for its clients
    assert answer["generated_tokens"] >= 1
    assert answer["inference_time_seconds"] > 0
    assert answer["load_seconds"] > 0
    assert answer["device_used"] == "cpu"
    assert answer["gpu_available"] is False
    assert answer["model_device"] == "cpu"
    assert answer["model_id"] == TINY_MODEL


def test_serves_the_model_from_the_s3_cache(
    app_module: ModuleType, serve_url: str, aws: Any, s3: Any, bucket: str, hub: Any, hub_root: Path, tmp_path: Path
) -> None:
    from ray import serve

    # GIVEN the tiny model published in S3 at a pinned commit, and a pod with an empty HF cache
    commit = hashlib.sha1(b"s3-cache-commit", usedforsecurity=False).hexdigest()
    tiny_model = shared_test_module("loader_seed", "tests/loader/loader_seed.py").repo_files(
        repo_dir(hub_root, TINY_MODEL)
    )
    seed_snapshot(s3, bucket, TINY_MODEL, tiny_model, commit=commit)
    cache_dir = tmp_path / "hf-cache"
    hub.requests.clear()

    # WHEN the app is deployed with USE_MODEL_CACHE=true and asked for text
    route = deploy(app_module, "s3cache", pod_env(aws.url, hub.url, bucket, cache_dir))
    try:
        prompt = "Once upon a time"
        status, answer = post(serve_url + route, json.dumps({"prompt": prompt}).encode())

        # THEN it answers with generated text from the S3 copy, pinned commit included
        assert status == 200, answer
        assert_generated(answer, prompt)
        assert answer["model_source"] == "s3-cache"
        assert answer["model_commit"] == commit
        # AND the bytes came from S3 into the standard HF cache layout, with no Hub call at all
        snapshot = cache_dir / f"models--{TINY_MODEL.replace('/', '--')}" / "snapshots" / commit
        assert (snapshot / "config.json").is_file()
        assert [record.path for record in hub.requests] == []

        # AND bad requests get a JSON error with a 4xx status, not a crash
        for body, method, expected in [
            (b"{not json", "POST", 400),
            (json.dumps({"text": "no prompt"}).encode(), "POST", 400),
            (json.dumps(["a", "list"]).encode(), "POST", 400),
            (json.dumps({"prompt": "word " * 200}).encode(), "POST", 413),
            (b"", "GET", 405),
        ]:
            status, answer = post(serve_url + route, body, method)
            assert status == expected, (body[:40], answer)
            assert isinstance(answer["error"], str)
            assert answer["error"]
    finally:
        serve.delete("s3cache")

    # WHEN a new replica starts on the same node (same HF cache), as after a pod restart
    route = deploy(app_module, "s3warm", pod_env(aws.url, hub.url, bucket, cache_dir))
    try:
        status, answer = post(serve_url + route, json.dumps({"prompt": prompt}).encode())
        # THEN it reuses the verified snapshot on disk and says so
        assert status == 200, answer
        assert answer["model_source"] == "local"
        assert answer["model_commit"] == commit
        assert [record.path for record in hub.requests] == []
    finally:
        serve.delete("s3warm")


def test_falls_back_to_the_hub_when_the_bucket_is_empty(
    app_module: ModuleType, serve_url: str, aws: Any, s3: Any, bucket: str, hub: Any, tmp_path: Path
) -> None:
    from huggingface_hub import HfApi
    from ray import serve

    # GIVEN the cache enabled but an empty bucket (the model was never cached)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount", 0) == 0
    hub_commit = HfApi(endpoint=hub.url).model_info(TINY_MODEL).sha
    hub.requests.clear()

    # WHEN the app is deployed and asked for text
    route = deploy(app_module, "hubfallback", pod_env(aws.url, hub.url, bucket, tmp_path / "hf-cache"))
    try:
        status, answer = post(serve_url + route, json.dumps({"prompt": "Hello"}).encode())

        # THEN it still answers, with the model downloaded from the Hub at the Hub's commit
        assert status == 200, answer
        assert_generated(answer, "Hello")
        assert answer["model_source"] == "hub"
        assert answer["model_commit"] == hub_commit
        assert any(TINY_MODEL in record.path for record in hub.requests)
    finally:
        serve.delete("hubfallback")
