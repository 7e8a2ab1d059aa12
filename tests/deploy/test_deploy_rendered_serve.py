"""End to end through the rendered RayService: the path a real cluster takes, on a local Ray.

The RGD is rendered for the CPU case on the stock Ray image, and its serveConfigV2 is deployed as it
is, through Ray Serve's own deploy path (ServeDeploySchema -> deploy_apps, what KubeRay's PUT to the
dashboard does): the working_dir zip and, with the cache on, the loader's py_modules zip both come from
moto's S3 as s3:// URIs, fetched by Ray's runtime-env agent; the pinned pip list is Ray's to install.
The worker pod's init container script runs as rendered, against a temp dir standing in for the model
volume. The process environment plays the pod's: the rendered container variables, with the
endpoints pointed at the local servers.

Recorded (printed, and as junit properties): the replica's time to ready from S3 and from the Hub
double capped at 25 MB/s per connection.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT, local_ray_serve, running_hub, seed_snapshot, shared_test_module
from deploy_kro import load_rgd, render_instance

from model_cache.operations.loader_release import publish_loader
from model_cache_devtools import modelgen

pytestmark = [pytest.mark.e2e, pytest.mark.slow, pytest.mark.timeout(1200)]

APP_NAME = "text_generation"
HUB_CAP_BYTES_PER_SECOND = 25_000_000
# A real Llama-shaped model of about 180 MB in two shards: big enough that where the bytes come from
# shows in the time to ready, small enough for the suite (transformers loads it in seconds on CPU).
MODEL_ID = "bench-org/medium-llm"
MODEL_SHAPE = {"hidden_size": 640, "num_layers": 12, "shards": 2}
READY_TIMEOUT_SECONDS = 600


def instance(bucket: str, app_zip_uri: str, cache: bool, loader_sha256: str = "") -> dict[str, Any]:
    spec: dict[str, Any] = {
        "name": "text-ml",
        "ingressHostname": "ray.example.com",
        "rayServeFile": app_zip_uri,
        "modelId": MODEL_ID,
        "maxLength": "24",
        "awsRegion": "us-east-1",
    }
    if cache:
        spec |= {
            "useModelCache": True,
            "modelCacheBucket": bucket,
            "modelCacheLoaderSha256": loader_sha256,
            "clusterName": "local",
            "awsAccountId": "123456789012",
        }
    return spec


def rendered_service(spec: dict[str, Any]) -> dict[str, Any]:
    rendered = render_instance(load_rgd(), spec)
    (service,) = (obj for obj in rendered.included.values() if obj["kind"] == "RayService")
    return service


def worker_pod(service: dict[str, Any]) -> dict[str, Any]:
    pod: dict[str, Any] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    return pod


def container_env(container: dict[str, Any], volume: Path) -> dict[str, str]:
    """The container's literal variables, the model volume's mount path mapped to `volume`."""
    (mount,) = container["volumeMounts"]
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = str(item["value"]).replace(mount["mountPath"], str(volume), 1)
    return env


def local_endpoints(aws_url: str, hub_url: str) -> dict[str, str]:
    """What a pod gets from Pod Identity and the network, here: moto's S3 and the Hub double."""
    return {
        "AWS_ENDPOINT_URL": aws_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "HF_ENDPOINT": hub_url,
        "HF_HUB_DISABLE_TELEMETRY": "1",
    }


def run_init_container(
    service: dict[str, Any], volume: Path, endpoints: dict[str, str], tmp: Path, *, succeeds: bool = True
) -> str:
    """The worker's init container, its script and variables as rendered; returns its stderr."""
    (init,) = worker_pod(service)["initContainers"]
    assert init["command"] == ["/bin/bash", "-c"]
    env = {
        "PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin",
        "HOME": str(tmp),
        "TMPDIR": str(tmp),
        **container_env(init, volume),
        **endpoints,
    }
    done = subprocess.run(["/bin/bash", "-c", init["args"][0]], env=env, capture_output=True, text=True, timeout=300)
    assert (done.returncode == 0) is succeeds, done.stderr
    return done.stderr


def resolve_event(stderr: str) -> dict[str, Any]:
    """The loader's one structured log line of a pull: where the bytes came from, and how many."""
    (line,) = (line for line in stderr.splitlines() if '"model_cache_loader.resolve"' in line)
    event: dict[str, Any] = json.loads(line[line.index("{") :])
    return event


def app_zip(target: Path) -> Path:
    """deploy/ray as the Serve working_dir archive the RGD's rayServeFile names (one top-level folder)."""
    with zipfile.ZipFile(target, "w") as archive:
        archive.write(REPO_ROOT / "deploy" / "ray" / "app.py", "text-generation/app.py")
    return target


@pytest.fixture(scope="module")
def medium_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Hub double of its own serving the medium model (the session's serves only tiny ones)."""
    root = tmp_path_factory.mktemp("medium-hub")
    modelgen.write_tiny_model(modelgen.repo_dir(root, MODEL_ID), seed=3, **MODEL_SHAPE)
    with running_hub(root) as server:
        yield server


def deploy_serve_config(serve_config_v2: str) -> float:
    """serveConfigV2 as KubeRay hands it to Serve; returns the seconds until the app is RUNNING."""
    from ray import serve
    from ray.serve._private.api import serve_start
    from ray.serve.schema import ServeDeploySchema

    config = ServeDeploySchema.parse_obj(yaml.safe_load(serve_config_v2))
    started = time.monotonic()
    serve_start().deploy_apps(config)
    while True:
        status = serve.status().applications.get(APP_NAME)
        if status is not None and status.status == "RUNNING":
            return time.monotonic() - started
        assert status is None or status.status not in ("DEPLOY_FAILED", "UNHEALTHY"), status
        assert time.monotonic() - started < READY_TIMEOUT_SECONDS, f"not ready: {status}"
        time.sleep(0.5)


def post_prompt(url: str, prompt: str) -> dict[str, Any]:
    request = urllib.request.Request(url, data=json.dumps({"prompt": prompt}).encode(), method="POST")  # noqa: S310
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=120) as response:  # noqa: S310 - loopback URL we built
            assert response.status == 200
            answer: dict[str, Any] = json.loads(response.read())
            return answer
    except urllib.error.HTTPError as error:
        raise AssertionError(f"{error.code}: {error.read()!r}") from None


def record(capsys: pytest.CaptureFixture[str], record_property: Callable[[str, Any], None], **figures: Any) -> None:
    for name, value in figures.items():
        record_property(name, value)
    with capsys.disabled():
        print("\n[time to ready] " + ", ".join(f"{name}={value}" for name, value in figures.items()))


def test_the_rendered_rayservice_serves_from_the_cache_and_from_the_hub(
    aws: Any,
    s3: Any,
    bucket: str,
    medium_hub: Any,
    loader_wheel: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    record_property: Callable[[str, Any], None],
) -> None:
    import ray
    from ray import serve

    hub = medium_hub
    # GIVEN the model cached at a pinned commit, the loader released into the bucket
    # (`model-cache publish-loader`), and the app archive at the s3:// URI the instance names
    commit = hashlib.sha1(b"rendered-serve-commit", usedforsecurity=False).hexdigest()
    files = shared_test_module("loader_seed", "tests/loader/loader_seed.py").repo_files(
        modelgen.repo_dir(hub.root, MODEL_ID)
    )
    seed_snapshot(s3, bucket, MODEL_ID, files, commit=commit)
    model_bytes = sum(len(data) for data in files.values())
    release = publish_loader(s3, bucket, loader_wheel)
    s3.upload_file(str(app_zip(tmp_path / "text-generation.zip")), bucket, "apps/text-generation.zip")
    app_uri = f"s3://{bucket}/apps/text-generation.zip"

    # AND the RGD rendered for a CPU instance with the cache on, on the stock Ray image
    cached = rendered_service(instance(bucket, app_uri, cache=True, loader_sha256=release.zip_sha256))
    volume = tmp_path / "model-volume"
    volume.mkdir()
    endpoints = local_endpoints(aws.url, hub.url)

    # WHEN an instance pinned another release digest (the bucket's release was replaced, or never pinned)
    # THEN its init container runs nothing of the bucket's code and stops the pod, naming both digests
    for pinned in ("0" * 64, ""):
        refused = run_init_container(
            rendered_service(instance(bucket, app_uri, cache=True, loader_sha256=pinned)),
            volume,
            endpoints,
            tmp_path,
            succeeds=False,
        )
        assert release.zip_sha256 in refused
        assert list(volume.iterdir()) == []
    worker = worker_pod(cached)["containers"][0]

    # WHEN the worker's init container runs, as rendered, on the empty volume
    started = time.monotonic()
    first = run_init_container(cached, volume, endpoints, tmp_path)
    init_seconds = time.monotonic() - started
    # THEN it pulled the model from S3, with the loader from the bucket
    pulled = resolve_event(first)
    assert (pulled["source"], pulled["files"], pulled["bytes"], pulled["commit"]) == (
        "s3",
        len(files),
        model_bytes,
        commit,
    )
    assert (volume / "hub" / f"models--{MODEL_ID.replace('/', '--')}" / "snapshots" / commit).is_dir()

    # WHEN the rendered serveConfigV2 is deployed as it is, on a Ray whose environment is the worker's
    for name, value in {**container_env(worker, volume), **endpoints}.items():
        monkeypatch.setenv(name, value)
    with local_ray_serve() as url:
        route = yaml.safe_load(cached["spec"]["serveConfigV2"])["applications"][0]["route_prefix"]
        hub.requests.clear()
        ready_local = deploy_serve_config(cached["spec"]["serveConfigV2"])
        answer = post_prompt(url + route, "Once upon a time")

        # THEN the replica answers in the seed's shape, from what the init container put on the volume
        assert isinstance(answer["response"], str)
        assert answer["response"] == answer["generated_text"]
        assert answer["model_source"] == "local"
        assert answer["model_commit"] == commit
        assert [request.path for request in hub.requests] == []
        # AND the loader it ran is the release Ray fetched from the bucket into its py_modules
        node = ray._private.worker._global_node
        assert node is not None
        session = Path(node.get_session_dir_path())
        assert list((session / "runtime_resources" / "py_modules_files").glob("*/model_cache_loader/__init__.py"))

        # WHEN a second pod on the same node (node-local volume) starts  THEN its init container copies nothing
        second = run_init_container(cached, volume, endpoints, tmp_path)
        reused = resolve_event(second)
        assert (reused["source"], reused["files"], reused["bytes"], reused["commit"]) == (
            "local",
            len(files),
            0,
            commit,
        )

        # WHEN the replica restarts on an empty volume (no init container ran)  THEN it pulls from S3 itself
        serve.delete(APP_NAME)
        shutil.rmtree(volume / "hub")
        ready_s3 = deploy_serve_config(cached["spec"]["serveConfigV2"])
        from_s3 = post_prompt(url + route, "Hello")
        assert from_s3["model_source"] == "s3-cache"
        assert from_s3["model_commit"] == commit
        assert [request.path for request in hub.requests] == []
        serve.delete(APP_NAME)

        # WHEN the cache is switched off: the same RGD's cache-off config, a Hub capped at 25 MB/s per
        # connection as the only source, and an empty volume
        plain = rendered_service(instance(bucket, app_uri, cache=False))
        assert "py_modules" not in plain["spec"]["serveConfigV2"]
        shutil.rmtree(volume / "hub", ignore_errors=True)
        hub.faults.add(MODEL_ID, kind="bandwidth", bytes_per_second=HUB_CAP_BYTES_PER_SECOND)
        ready_hub = deploy_serve_config(plain["spec"]["serveConfigV2"])
        from_hub = post_prompt(url + route, "Once upon a time")

        # THEN the replica still answers in the seed's shape, with the model from the Hub
        assert isinstance(from_hub["response"], str)
        assert from_hub["model_source"] == "hub"
        assert any(MODEL_ID in request.path for request in hub.requests)

    record(
        capsys,
        record_property,
        model_bytes=model_bytes,
        init_pull_s3_seconds=round(init_seconds, 2),
        # the first deploy also builds the runtime env (working_dir and py_modules from S3, the pip venv)
        first_ready_after_init_seconds=round(ready_local, 2),
        ready_s3_seconds=round(ready_s3, 2),
        ready_hub_seconds=round(ready_hub, 2),
        # pull + transformers load inside the replica (the app's load_seconds)
        replica_load_local_seconds=answer["load_seconds"],
        replica_load_s3_seconds=from_s3["load_seconds"],
        replica_load_hub_seconds=from_hub["load_seconds"],
    )
