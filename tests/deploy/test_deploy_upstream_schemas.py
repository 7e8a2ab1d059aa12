"""Every object the RGD renders, and the RGD itself, against the upstream CRDs' own schemas.

tests/deploy/schemas/*.json are cut from the upstream CRDs at the release each one names
(`x-upstream`: KubeRay ray.io/v1 RayService, ACK iam.services.k8s.aws/v1alpha1 Role, ACK
eks.services.k8s.aws/v1alpha1 PodIdentityAssociation, kro's ResourceGraphDefinition) by
scripts/crd_subset.py: the upstream types, enums, patterns and required lists of the fields we use,
with every other field refused. A field misspelt, moved or dropped upstream fails here, not on a cluster.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from deploy_kro import load_rgd, render_instance
from jsonschema import Draft202012Validator, ValidationError

pytestmark = pytest.mark.unit

SCHEMAS = Path(__file__).resolve().parent / "schemas"
KINDS = ("RayService", "Role", "PodIdentityAssociation", "ResourceGraphDefinition")
REQUIRED = {
    "name": "text-ml",
    "ingressHostname": "ray.example.com",
    "rayServeFile": "https://gitlab.example.com/ml/text-ml/-/raw/main/serve.zip",
}
CACHED = {
    "useModelCache": True,
    "modelCacheBucket": "ray-model-cache-123456789012",
    "clusterName": "platform-eks",
    "awsAccountId": "123456789012",
}
IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/ray-serve-model-cache:0.1.0"


def instances() -> list[dict[str, Any]]:
    """GPU or not x cache or not x node-local or not x runtime image or stock."""
    specs = []
    for gpu in ("0", "1"):
        for cache in ({}, CACHED):
            for node_local in (False, True):
                for image in ("", IMAGE):
                    specs.append(
                        {
                            **REQUIRED,
                            **cache,
                            "resources": {"worker": {"gpu": gpu}},
                            "nodeLocalModelCache": node_local,
                            "runtimeImage": image,
                        }
                    )
    return specs


def rendered_objects() -> list[dict[str, Any]]:
    rgd = load_rgd()
    objects: list[dict[str, Any]] = [rgd]
    for spec in instances():
        objects.extend(render_instance(rgd, spec).included.values())
    return objects


def validator(kind: str) -> Draft202012Validator:
    schema = json.loads((SCHEMAS / f"{kind}.json").read_text())
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


@pytest.fixture(scope="module")
def objects() -> list[dict[str, Any]]:
    return rendered_objects()


def of_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    found = [obj for obj in objects if obj["kind"] == kind]
    assert found, f"nothing rendered is a {kind}"
    return found


@pytest.mark.parametrize("kind", KINDS)
def test_each_schema_names_the_upstream_release_it_was_cut_from(kind: str) -> None:
    source = json.loads((SCHEMAS / f"{kind}.json").read_text())["x-upstream"]
    assert source["tag"].startswith("v")
    assert len(source["commit"]) == 40
    assert source["path"].endswith(".yaml")
    assert source["repository"] in {
        "ray-project/kuberay",
        "aws-controllers-k8s/iam-controller",
        "aws-controllers-k8s/eks-controller",
        "kubernetes-sigs/kro",
    }


@pytest.mark.parametrize("kind", KINDS)
def test_every_rendered_object_is_valid_for_the_upstream_crd(objects: list[dict[str, Any]], kind: str) -> None:
    # GIVEN every instance shape the RGD renders  THEN each object of this kind passes upstream's schema
    check = validator(kind)
    for obj in of_kind(objects, kind):
        errors = [f"{'.'.join(map(str, error.absolute_path))}: {error.message}" for error in check.iter_errors(obj)]
        assert not errors, f"{obj['metadata']['name']}: {errors}"


# (kind, path to a mapping, a field that is not upstream's, or not one we cut from it)
UNKNOWN_FIELDS = [
    ("RayService", ["spec"], "serviceUnhealthySecondThreshold"),
    ("RayService", ["spec", "rayClusterConfig"], "enableInTreeAutoscalling"),
    ("RayService", ["spec", "rayClusterConfig", "headGroupSpec"], "rayStartParam"),
    ("RayService", ["spec", "rayClusterConfig", "workerGroupSpecs", 0, "template", "spec"], "initContainer"),
    ("Role", ["spec"], "permissionBoundary"),
    ("Role", ["spec"], "assumeRolePolicy"),
    ("PodIdentityAssociation", ["spec"], "roleArn"),
    ("ResourceGraphDefinition", ["spec"], "resource"),
]


@pytest.mark.parametrize(("kind", "path", "field"), UNKNOWN_FIELDS)
def test_an_unknown_field_is_refused(objects: list[dict[str, Any]], kind: str, path: list[Any], field: str) -> None:
    # GIVEN a valid rendered object with a field upstream does not define (or a misspelling)
    obj = copy.deepcopy(of_kind(objects, kind)[-1])
    node: Any = obj
    for step in path:
        node = node[step]
    node[field] = "x"
    # WHEN validated  THEN it is refused, naming the field
    with pytest.raises(ValidationError, match=field):
        validator(kind).validate(obj)


# (kind, path to the field, a value of the wrong type or outside upstream's enum)
WRONG_VALUES = [
    ("RayService", ["spec", "rayClusterConfig", "workerGroupSpecs", 0, "replicas"], "2"),
    ("RayService", ["spec", "rayClusterConfig", "autoscalerOptions", "upscalingMode"], "Fast"),
    ("RayService", ["spec", "rayClusterConfig", "enableInTreeAutoscaling"], "true"),
    ("RayService", ["spec", "serveConfigV2"], {"applications": []}),
    ("Role", ["spec", "inlinePolicies", "model-cache-read"], {"Version": "2012-10-17"}),
    ("PodIdentityAssociation", ["spec", "serviceAccount"], 7),
]


@pytest.mark.parametrize(("kind", "path", "value"), WRONG_VALUES)
def test_a_value_upstream_would_refuse_is_refused(
    objects: list[dict[str, Any]], kind: str, path: list[Any], value: Any
) -> None:
    obj = copy.deepcopy(of_kind(objects, kind)[-1])
    node: Any = obj
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    with pytest.raises(ValidationError):
        validator(kind).validate(obj)


def test_the_schemas_are_what_the_script_cuts_from_the_objects_we_render(objects: list[dict[str, Any]]) -> None:
    # GIVEN the committed schemas  THEN each keeps exactly the fields the rendered objects use: a field
    # the RGD stopped using is gone from the schema too (run scripts/crd_subset.py to refresh them)
    def used(node: Any, schema: dict[str, Any], path: str, out: set[str]) -> None:
        if isinstance(node, dict) and "properties" in schema:
            for key, value in node.items():
                out.add(f"{path}.{key}")
                used(value, schema["properties"][key], f"{path}.{key}", out)
        elif isinstance(node, dict) and isinstance(schema.get("additionalProperties"), dict):
            for value in node.values():
                used(value, schema["additionalProperties"], f"{path}.*", out)
        elif isinstance(node, list) and "items" in schema:
            for element in node:
                used(element, schema["items"], f"{path}[]", out)

    def declared(schema: dict[str, Any], path: str, out: set[str]) -> None:
        for key, child in schema.get("properties", {}).items():
            out.add(f"{path}.{key}")
            declared(child, f"{path}.{key}", out)
        if isinstance(schema.get("additionalProperties"), dict):
            declared(schema["additionalProperties"], f"{path}.*", out)
        if "items" in schema:
            declared(schema["items"], f"{path}[]", out)

    for kind in KINDS:
        schema = json.loads((SCHEMAS / f"{kind}.json").read_text())
        in_use: set[str] = set()
        for obj in of_kind(objects, kind):
            used(obj, schema, kind, in_use)
        in_schema: set[str] = set()
        declared(schema, kind, in_schema)
        assert in_schema == in_use, f"{kind}: only in the schema {sorted(in_schema - in_use)}"


def test_the_existing_rayservice_snippet_in_docs_is_valid_for_the_upstream_crd() -> None:
    """GIVEN the init-container snippet docs/how-to/adopt.md gives for an existing RayService
    THEN it is a RayService KubeRay's CRD schema accepts, and its init container runs the loader into the
    volume the Ray container reads as its Hugging Face cache."""
    import yaml

    text = (Path(__file__).resolve().parents[2] / "docs" / "how-to" / "adopt.md").read_text()
    block = text.split("<!-- adopt:rayservice-begin -->", 1)[1].split("<!-- adopt:rayservice-end -->", 1)[0]
    service = yaml.safe_load(block.strip().removeprefix("```yaml").removesuffix("```"))
    errors = sorted(error.message for error in validator("RayService").iter_errors(service))
    assert errors == []
    pod = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    [init] = pod["initContainers"]
    assert "python -m model_cache_loader pull" in init["args"][0]
    mounts = {mount["name"]: mount["mountPath"] for mount in init["volumeMounts"]}
    [ray] = pod["containers"]
    assert {mount["name"]: mount["mountPath"] for mount in ray["volumeMounts"]} == mounts
    cache = {item["name"]: item["value"] for item in ray["env"]}["HF_HUB_CACHE"]
    assert cache == {item["name"]: item["value"] for item in init["env"]}["HF_HUB_CACHE"]
    assert cache.startswith(mounts["model-cache"])
