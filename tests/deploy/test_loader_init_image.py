"""containers/loader-init: the loader as an init container (issue 24, item 3).

No Docker daemon here, so the image is linted (hadolint and checkov in `make validate`), held to the
tested versions, and its entrypoint is run as the image would run it: the ENTRYPOINT and CMD of the
Dockerfile, with the environment of the docs' Deployment snippet, against local S3. The snippets are
validated against upstream schemas: KubeRay's CRD and Kubernetes' own (kubernetes-validate).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT, seed_snapshot, shared_test_module

pytestmark = pytest.mark.integration

IMAGE = REPO_ROOT / "containers" / "loader-init"
DOCKERFILE = IMAGE / "Dockerfile"
ADOPT = REPO_ROOT / "docs" / "how-to" / "adopt.md"
REPO = "init-org/model"
FILES = {"config.json": b'{"model_type": "llama"}\n', "model.safetensors": bytes(range(256)) * 256}


def pins(path: Path) -> dict[str, str]:
    """Exact pins by canonical name, as the Ray image's test reads them."""
    ray_runtime = shared_test_module("ray_runtime", "tests/deploy/test_ray_runtime.py")
    found: dict[str, str] = ray_runtime.pins(path)
    return found


def instruction(name: str) -> Any:
    """The JSON (exec form) argument of a Dockerfile instruction."""
    match = re.search(rf"^{name} (\[.*\])$", DOCKERFILE.read_text(), re.MULTILINE)
    assert match, f"no exec-form {name} in {DOCKERFILE}"
    return json.loads(match.group(1))


def image_env() -> dict[str, str]:
    block = re.search(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE.read_text(), re.MULTILINE)
    assert block
    return dict(re.findall(r"(\w+)=(\S+)", block.group(1)))


def snippet(marker: str) -> dict[str, Any]:
    text = ADOPT.read_text()
    block = text.split(f"<!-- adopt:{marker}-begin -->", 1)[1].split(f"<!-- adopt:{marker}-end -->", 1)[0]
    loaded: dict[str, Any] = yaml.safe_load(block.strip().removeprefix("```yaml").removesuffix("```"))
    return loaded


def test_the_image_installs_the_tested_versions_of_the_loader_and_its_extras() -> None:
    # GIVEN the image's requirements and build argument
    required = pins(IMAGE / "requirements.txt")
    locked = pins(REPO_ROOT / "requirements" / "constraints.txt")
    # THEN they pin what the suite runs: boto3 at the core, the Hub fallback and crc64nvme extras
    assert {"boto3", "botocore", "huggingface-hub", "filelock", "awscrt"} <= set(required)
    for name, version in required.items():
        assert locked.get(name) == version, f"{name}: image {version}, constraints.txt {locked.get(name)}"
    loader = tomllib.loads((REPO_ROOT / "loader" / "pyproject.toml").read_text())["project"]
    assert f"ARG LOADER_VERSION={loader['version']}" in DOCKERFILE.read_text()
    # AND the build context holds only what the Dockerfile copies
    allowed = [line for line in (IMAGE / "Dockerfile.dockerignore").read_text().splitlines() if line.startswith("!")]
    assert allowed == [
        "!requirements/constraints.txt",
        "!containers/loader-init/requirements.txt",
        "!dist/model_cache_loader-*-py3-none-any.whl",
    ]


def test_the_image_runs_the_loader_as_a_non_root_user_with_its_exit_codes() -> None:
    # GIVEN the Dockerfile THEN the entrypoint is the loader's pull in exec form (its exit code is the container's)
    assert instruction("ENTRYPOINT") == ["python", "-m", "model_cache_loader", "pull"]
    assert instruction("CMD") == ["--quiet"]
    assert re.search(r"^USER 10001$", DOCKERFILE.read_text(), re.MULTILINE)
    # AND the model lands in the mounted cache the app reads
    assert image_env()["HF_HUB_CACHE"] == "/models/hub"


def test_the_snippets_are_valid_for_kuberay_and_for_kubernetes() -> None:
    import kubernetes_validate

    upstream = shared_test_module("upstream_schemas", "tests/deploy/test_deploy_upstream_schemas.py")
    # GIVEN the RayService and the Deployment docs/how-to/adopt.md gives for the image
    service = snippet("rayservice-image")
    deployment = snippet("deployment")
    # THEN KubeRay's CRD schema accepts the RayService, Kubernetes' own schema the Deployment (strict)
    assert sorted(error.message for error in upstream.validator("RayService").iter_errors(service)) == []
    kubernetes_validate.validate(deployment, kubernetes_validate.latest_version(), strict=True)
    # AND in both the init container mounts the volume the app's container reads as its HF cache
    for pod in (
        service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"],
        deployment["spec"]["template"]["spec"],
    ):
        [init] = pod["initContainers"]
        assert "model-cache-loader-init" in init["image"]
        [app] = pod["containers"]
        assert init["volumeMounts"] == app["volumeMounts"]
        app_cache = {item["name"]: item["value"] for item in app["env"]}["HF_HUB_CACHE"]
        assert app_cache == image_env()["HF_HUB_CACHE"]


def run_image(env: dict[str, str], args: list[str] | None, cache: Path) -> subprocess.CompletedProcess[str]:
    """The container's process: ENTRYPOINT + (the pod's args, else CMD), the image's ENV, the pod's env."""
    command = [sys.executable if part == "python" else part for part in instruction("ENTRYPOINT")]
    command += instruction("CMD") if args is None else args
    merged = {**os.environ, **image_env(), **env, "HF_HUB_CACHE": str(cache)}
    merged.pop("HF_HOME", None)
    return subprocess.run(command, env=merged, capture_output=True, text=True, timeout=180, check=False)


def test_the_entrypoint_pulls_a_cached_model_and_exits_3_for_one_not_cached(
    s3: Any, bucket: str, tmp_path: Path
) -> None:
    # GIVEN a published model, and the Deployment snippet's init container env pointed at it
    seed_snapshot(s3, bucket, REPO, FILES)
    [init] = snippet("deployment")["spec"]["template"]["spec"]["initContainers"]
    env = {item["name"]: item["value"] for item in init["env"]}
    env.update(MODEL_ID=REPO, MODEL_CACHE_BUCKET=bucket)
    # WHEN the image's process runs with the Deployment's (default) arguments
    done = run_image(env, init.get("args"), tmp_path / "hub")
    # THEN it exits 0 and the model is in the mounted cache, byte for byte
    assert done.returncode == 0, done.stderr[-2000:]
    [snapshot] = (tmp_path / "hub" / "models--init-org--model" / "snapshots").iterdir()
    assert {name: (snapshot / name).read_bytes() for name in FILES} == FILES
    # AND with the RayService snippet's arguments a model the cache lacks is exit 3, one line, no traceback
    [ray_init] = snippet("rayservice-image")["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"][
        "initContainers"
    ]
    missing = run_image({**env, "MODEL_ID": "init-org/absent"}, ray_init["args"], tmp_path / "hub2")
    assert missing.returncode == 3, missing.stderr[-2000:]
    assert "Traceback" not in missing.stderr
    assert not (tmp_path / "hub2" / "models--init-org--absent").exists()
