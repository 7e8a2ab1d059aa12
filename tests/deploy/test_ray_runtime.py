"""containers/ray-serve: the Ray runtime image holds exactly what the tests run.

No Docker daemon here, so the image is linted (hadolint and checkov in `make validate`) and held to
the tested versions here: its pins, the app's requirements and the RGD's stock-image pip list are one
set, equal to requirements/constraints.txt and to what .venv has installed.
"""

from __future__ import annotations

import re
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "containers" / "ray-serve" / "Dockerfile"
DOCKERIGNORE = ROOT / "containers" / "ray-serve" / "Dockerfile.dockerignore"
REQUIREMENTS = ROOT / "deploy" / "ray" / "requirements.txt"
CONSTRAINTS = ROOT / "requirements" / "constraints.txt"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def pins(path: Path) -> dict[str, str]:
    found: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        name, separator, version = line.partition("==")
        assert separator, f"{path.name}: {line!r} is not an exact pin"
        found[canonical(name)] = version.strip()
    return found


def dockerfile_args() -> dict[str, str]:
    return dict(re.findall(r"^ARG (\w+)=(\S+)$", DOCKERFILE.read_text(), re.MULTILINE))


def test_the_app_requirements_are_exact_pins_of_the_tested_versions() -> None:
    # GIVEN deploy/ray/requirements.txt  THEN every line pins the version constraints.txt locks
    # and .venv runs (the suite's app and loader tests run on exactly these)
    required = pins(REQUIREMENTS)
    locked = pins(CONSTRAINTS)
    assert {"torch", "transformers", "accelerate", "boto3", "huggingface-hub", "filelock"} <= set(required)
    for name, version in required.items():
        assert locked.get(name) == version, f"{name}: requirements.txt {version}, constraints.txt {locked.get(name)}"
        installed = metadata.version(name)
        assert installed.split("+", 1)[0] == version, f"{name}: .venv has {installed}"


def test_the_image_is_the_tested_ray_with_the_tested_torch_and_loader() -> None:
    # GIVEN the Dockerfile's build arguments
    import ray

    args = dockerfile_args()
    # THEN the base is the official Ray image at the Ray version the tests run, Python 3.11
    assert re.search(r"^FROM rayproject/ray:\$\{RAY_TAG\}$", DOCKERFILE.read_text(), re.MULTILINE)
    assert args["RAY_TAG"] == f"{ray.__version__}-py311"
    # AND torch and the loader are the tested versions, torch from the CPU index by default
    assert args["TORCH_VERSION"] == pins(REQUIREMENTS)["torch"]
    assert args["TORCH_INDEX_URL"] == "https://download.pytorch.org/whl/cpu"
    loader = tomllib.loads((ROOT / "loader" / "pyproject.toml").read_text())["project"]["version"]
    assert args["LOADER_VERSION"] == loader


def test_the_image_installs_under_the_constraints_and_without_dependencies_for_the_loader() -> None:
    # GIVEN the RUN line  THEN everything but torch resolves under constraints.txt, the loader comes
    # from its wheel with --no-deps (requirements.txt pins its dependencies), and the imports are checked
    text = DOCKERFILE.read_text()
    assert "-c /tmp/build/constraints.txt -r /tmp/build/requirements.txt" in text
    assert '--no-deps "/tmp/build/model_cache_loader-${LOADER_VERSION}-py3-none-any.whl"' in text
    assert 'python -c "import accelerate, model_cache_loader, torch, transformers"' in text
    # AND it runs as the image's non-root user
    assert re.search(r"^USER 1000$", text, re.MULTILINE)


def test_the_build_context_admits_exactly_what_the_dockerfile_copies() -> None:
    copied = {line.split()[1] for line in DOCKERFILE.read_text().splitlines() if line.startswith("COPY ")}
    admitted = {line[1:] for line in DOCKERIGNORE.read_text().splitlines() if line.startswith("!")}
    loader = dockerfile_args()["LOADER_VERSION"]
    assert {path.replace("${LOADER_VERSION}", loader) for path in copied} == {
        path.replace("*", loader) for path in admitted
    }
    assert DOCKERIGNORE.read_text().splitlines()[1] == "*"


def test_the_rgd_stock_pip_list_is_the_app_requirements() -> None:
    # GIVEN the RGD's stock-image runtime_env pip line  THEN it lists exactly requirements.txt
    text = (ROOT / "deploy" / "kro" / "ray-service.yaml").read_text()
    lists = re.findall(r"pip: \{packages: \[([^\]]*)\]", text)
    assert len(lists) == 4  # one per RayService variant
    expected = pins(REQUIREMENTS)
    for found in lists:
        listed = dict(item.strip().split("==") for item in found.split(","))
        assert {canonical(name): version for name, version in listed.items()} == expected
    assert yaml.safe_load(text)  # still one YAML document
