"""deploy/backstage: the scaffolder template and the RayService manifest its skeleton writes.

Backstage cannot run here. These tests check the template's forms as the JSON Schema that
react-jsonschema-form renders and validates, substitute the form's values into the skeleton the
way fetch:template does, and hand the resulting instance to the kro model of the RGD
(deploy_kro.py): what a user picks in the form must become the right pods.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from deploy_kro import field_types, load_rgd, render_instance, schema_fields, value_matches_type

pytestmark = pytest.mark.unit

BACKSTAGE = Path(__file__).resolve().parents[2] / "deploy" / "backstage"
TEMPLATE_PATH = BACKSTAGE / "template-ray-serve.yaml"
MANIFEST_PATH = BACKSTAGE / "skeleton" / "manifests" / "kro-ray-service.yaml"
SEED_MODELS = [
    "microsoft/DialoGPT-medium",
    "microsoft/phi-2",
    "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
    "mistralai/Mistral-7B-Instruct-v0.2",
    "meta-llama/Llama-2-7b-chat-hf",
]
_VALUE_RE = re.compile(r"\$\{\{\s*values\.(\w+)\s*\}\}")
_PARAMETER_RE = re.compile(r"^\$\{\{\s*parameters\.(\w+)\s*\}\}$")
# What the non-form values resolve to in a real run (catalog system entity, signed-in user).
CONTEXT_VALUES = {"gitlabHostname": "gitlab.example.com", "gitlabUsername": "ml-team", "createdBy": "jdoe"}


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load(TEMPLATE_PATH.read_text())
    return document


@pytest.fixture(scope="module")
def rgd() -> dict[str, Any]:
    return load_rgd()


def pages(template: dict[str, Any]) -> list[dict[str, Any]]:
    return list(template["spec"]["parameters"])


def page(template: dict[str, Any], title: str) -> dict[str, Any]:
    matches = [candidate for candidate in pages(template) if candidate["title"] == title]
    assert len(matches) == 1, f"expected one page titled {title!r}"
    return matches[0]


def all_parameters(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every form field, including those only shown through `dependencies` branches."""
    found: dict[str, dict[str, Any]] = {}
    for form in pages(template):
        found.update(form.get("properties", {}))
        for dependency in form.get("dependencies", {}).values():
            for branch in dependency.get("oneOf", []):
                for name, definition in branch.get("properties", {}).items():
                    if "type" in definition:
                        found[name] = definition
    return found


def fetch_template_values(template: dict[str, Any]) -> dict[str, str]:
    [step] = [step for step in template["spec"]["steps"] if step["action"] == "fetch:template"]
    assert step["input"]["url"] == "./skeleton"
    return dict(step["input"]["values"])


def manifest_value_paths(node: Any, path: str = "") -> dict[str, str]:
    """RGD path (under spec) -> the skeleton value name that fills it."""
    mapping: dict[str, str] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            mapping.update(manifest_value_paths(value, f"{path}.{key}" if path else key))
    elif isinstance(node, str):
        names = _VALUE_RE.findall(node)
        assert len(names) <= 1, f"{path}: one value per field"
        assert not names or _VALUE_RE.fullmatch(node), f"{path}: {node!r} mixes a value with other text"
        if names:
            mapping[path] = names[0]
    return mapping


def form_data(template: dict[str, Any], **answers: Any) -> dict[str, Any]:
    """What the form submits: every shown field's default, overridden by the user's answers."""
    data: dict[str, Any] = {}
    for form in pages(template):
        for name, definition in form.get("properties", {}).items():
            if "default" in definition:
                data[name] = definition["default"]
    data.update(answers)
    for form in pages(template):
        for trigger, dependency in form.get("dependencies", {}).items():
            for branch in dependency.get("oneOf", []):
                if data.get(trigger) in branch["properties"][trigger]["enum"]:
                    for name, definition in branch["properties"].items():
                        if "default" in definition and name not in answers:
                            data[name] = definition["default"]
    return data


def scaffold_manifest(template: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
    """fetch:template's output for the skeleton manifest (values rendered as nunjucks would)."""
    values: dict[str, Any] = {}
    for name, expression in fetch_template_values(template).items():
        parameter = _PARAMETER_RE.match(expression)
        values[name] = data.get(parameter.group(1)) if parameter else CONTEXT_VALUES[name]

    def substitute(match: re.Match[str]) -> str:
        value = values[match.group(1)]
        if value is None:
            return ""  # nunjucks renders an undefined value as nothing
        if isinstance(value, bool):
            return "true" if value else "false"
        return str(value)

    manifest: dict[str, Any] = yaml.safe_load(_VALUE_RE.sub(substitute, MANIFEST_PATH.read_text()))
    return manifest


def validate_form(template: dict[str, Any], data: dict[str, Any]) -> list[str]:
    errors: list[str] = []
    for form in pages(template):
        schema: dict[str, Any] = {
            "type": "object",
            **{key: form[key] for key in ("properties", "required", "dependencies") if key in form},
        }
        validator = jsonschema.Draft7Validator(schema)
        errors.extend(f"{form['title']}: {error.message}" for error in validator.iter_errors(data))
    return errors


SAMPLE_ANSWERS = {
    "name": "text-ml",
    "ingressHostname": "ray.example.com",
    "modelId": "TinyLlama/TinyLlama-1.1B-Chat-v1.0",
}
CACHE_ANSWERS = {
    "useModelCache": True,
    "modelCacheBucket": "ray-model-cache-123456789012",
    "modelCacheLoaderSha256": "0" * 64,
    "clusterName": "platform-eks",
    "awsAccountId": "123456789012",
}


# ---------------------------------------------------------------------------------------------


def test_template_is_a_scaffolder_template_with_the_gitops_steps(template: dict[str, Any]) -> None:
    # GIVEN the template  THEN it is a v1beta3 Template: fetch:template -> publish -> ArgoCD -> register
    assert template["apiVersion"] == "scaffolder.backstage.io/v1beta3"
    assert template["kind"] == "Template"
    actions = [step["action"] for step in template["spec"]["steps"]]
    assert actions.index("fetch:template") < actions.index("publish:gitlab") < actions.index("catalog:register")
    assert "argocd:create-app" in actions


def test_pages_keep_the_seed_ones_and_add_model_cache_configuration(template: dict[str, Any]) -> None:
    # GIVEN the form pages  THEN the seed's configuration page is kept and the cache page is added
    titles = [form["title"] for form in pages(template)]
    assert "Configuration Options" in titles
    assert "Model Cache Configuration" in titles
    for form in pages(template):
        jsonschema.Draft7Validator.check_schema({"type": "object", **{k: v for k, v in form.items() if k != "title"}})


def test_model_choices_are_the_seeds_five(template: dict[str, Any]) -> None:
    # GIVEN the model picker  THEN it offers exactly the seed's five models, each with a label
    model = all_parameters(template)["modelId"]
    assert model["enum"] == SEED_MODELS
    assert len(model["enumNames"]) == len(SEED_MODELS)
    assert model["default"] == "microsoft/DialoGPT-medium"


def test_bucket_prefix_and_cluster_are_shown_only_when_the_cache_is_enabled(template: dict[str, Any]) -> None:
    # GIVEN the cache page  THEN the toggle is a boolean defaulting to off, and the bucket/prefix/
    # cluster fields live only in the `dependencies` branch selected by useModelCache == true
    cache_page = page(template, "Model Cache Configuration")
    assert cache_page["properties"]["useModelCache"] == {
        **cache_page["properties"]["useModelCache"],
        "type": "boolean",
        "default": False,
    }
    assert set(cache_page["properties"]) == {"useModelCache"}
    branches = cache_page["dependencies"]["useModelCache"]["oneOf"]
    by_state = {branch["properties"]["useModelCache"]["enum"][0]: branch for branch in branches}
    assert set(by_state) == {True, False}
    assert set(by_state[False]["properties"]) == {"useModelCache"}
    assert {"modelCacheBucket", "modelCachePrefix", "clusterName"} <= set(by_state[True]["properties"])
    assert by_state[True]["properties"]["modelCachePrefix"]["default"] == "models"


def test_form_requires_a_bucket_only_when_the_cache_is_on(template: dict[str, Any]) -> None:
    # GIVEN form submissions  WHEN validated as rjsf does
    off = form_data(template, **SAMPLE_ANSWERS)
    on_without_bucket = form_data(template, **SAMPLE_ANSWERS, useModelCache=True)
    on = form_data(template, **SAMPLE_ANSWERS, **CACHE_ANSWERS)
    bad_bucket = form_data(template, **SAMPLE_ANSWERS, **{**CACHE_ANSWERS, "modelCacheBucket": "s3://Bad_Bucket"})
    # THEN the cache off needs no bucket, the cache on needs a valid one
    assert validate_form(template, off) == []
    assert validate_form(template, on) == []
    assert validate_form(template, on_without_bucket)
    assert validate_form(template, bad_bucket)


def test_every_skeleton_field_exists_in_the_rgd_schema(template: dict[str, Any], rgd: dict[str, Any]) -> None:
    # GIVEN the skeleton's RayService manifest  THEN it is an instance of the RGD's kind, and every
    # spec field it sets is a field of the RGD schema
    manifest = yaml.safe_load(MANIFEST_PATH.read_text())
    assert manifest["apiVersion"] == "kro.run/v1alpha1"
    assert manifest["kind"] == rgd["spec"]["schema"]["kind"] == "RayService"
    rgd_fields = set(field_types(rgd))
    set_fields = set(manifest_value_paths(manifest["spec"]))
    assert set_fields, "the skeleton sets no spec fields"
    assert set_fields <= rgd_fields, f"not in the RGD schema: {sorted(set_fields - rgd_fields)}"
    required = {field.path for field in schema_fields(rgd["spec"]["schema"]["spec"]) if field.required}
    assert required <= set_fields, f"required by the RGD, not set: {sorted(required - set_fields)}"


def test_backstage_parameters_map_one_to_one_onto_rgd_fields(template: dict[str, Any], rgd: dict[str, Any]) -> None:
    # GIVEN parameters -> fetch:template values -> skeleton fields
    parameters = set(all_parameters(template))
    values = fetch_template_values(template)
    manifest = yaml.safe_load(MANIFEST_PATH.read_text())
    field_by_value = {value: path for path, value in manifest_value_paths(manifest["spec"]).items()}
    # The instance's namespace is the one value that belongs in metadata rather than the spec.
    for key, value in manifest_value_paths(manifest["metadata"]).items():
        field_by_value.setdefault(value, f"metadata.{key}")
    parameter_by_value = {}
    for name, expression in values.items():
        match = _PARAMETER_RE.match(expression)
        if match:
            parameter_by_value[name] = match.group(1)
        else:
            assert name in CONTEXT_VALUES, f"value {name} comes from neither a parameter nor the context"

    # THEN every parameter is passed once, and lands on its own RGD field (or the namespace)
    passed = list(parameter_by_value.values())
    assert sorted(passed) == sorted(parameters), f"unpassed: {parameters - set(passed)}"
    targets = {parameter: field_by_value.get(value) for value, parameter in parameter_by_value.items()}
    assert all(targets.values()), f"parameters the skeleton never uses: {[p for p, t in targets.items() if not t]}"
    assert len(set(targets.values())) == len(targets), "two parameters fill one field"
    rgd_fields = set(field_types(rgd)) | {"metadata.namespace"}
    assert set(targets.values()) <= rgd_fields
    assert targets["namespace"] == "metadata.namespace"
    for parameter in ("useModelCache", "modelCacheBucket", "modelCachePrefix", "clusterName", "modelId", "maxLength"):
        assert targets[parameter] == parameter


@pytest.mark.parametrize("cache", [False, True], ids=["hub", "s3-cache"])
def test_scaffolded_instance_is_schema_valid_and_renders_the_chosen_deployment(
    template: dict[str, Any], rgd: dict[str, Any], cache: bool
) -> None:
    # GIVEN a user's answers (GPU workers, cache on or off)  WHEN fetch:template writes the manifest
    answers = {**SAMPLE_ANSWERS, "workerGpu": "1", **(CACHE_ANSWERS if cache else {})}
    manifest = scaffold_manifest(template, form_data(template, **answers))

    # THEN every field has the type the RGD schema declares (quoted strings stay strings)
    types = field_types(rgd)
    flat = _flatten(manifest["spec"])
    for path, value in flat.items():
        assert value_matches_type(value, types[path]), f"{path}={value!r} is not a {types[path]}"
    assert manifest["metadata"]["namespace"] == "ray"

    # AND kro renders exactly the GPU RayService variant for it, with the cache settings passed on
    rendered = render_instance(rgd, manifest["spec"])
    variants = {rid for rid in rendered.included if rid.startswith("rayService")}
    assert variants == {"rayServiceGpuCached" if cache else "rayServiceGpu"}
    serve_config = yaml.safe_load(rendered.included[variants.pop()]["spec"]["serveConfigV2"])
    env_vars = serve_config["applications"][0]["runtime_env"]["env_vars"]
    assert env_vars["MODEL_ID"] == "TinyLlama/TinyLlama-1.1B-Chat-v1.0"
    assert env_vars["USE_MODEL_CACHE"] == ("true" if cache else "false")
    if cache:
        assert env_vars["MODEL_CACHE_BUCKET"] == "ray-model-cache-123456789012"
        assert env_vars["MODEL_CACHE_PREFIX"] == "models"
        assert rendered.included["modelCachePodIdentity"]["spec"]["clusterName"] == "platform-eks"


def _flatten(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{path}.{key}" if path else key))
        return flat
    return {path: node}


IAM_ROLE_NAME_LIMIT = 64
KUBERNETES_NAME_LIMIT = 63


def test_the_longest_names_the_form_accepts_fit_aws_and_kubernetes_limits(
    template: dict[str, Any], rgd: dict[str, Any]
) -> None:
    # GIVEN the longest name and namespace the form accepts (one more character is refused)
    name = "n" * 28
    namespace = "s" * 15
    cluster = "c" * 16
    answers = {**SAMPLE_ANSWERS, **CACHE_ANSWERS, "name": name, "namespace": namespace, "clusterName": cluster}
    accepted = form_data(template, **answers)
    assert validate_form(template, accepted) == []
    assert validate_form(template, {**accepted, "name": name + "n"})
    assert validate_form(template, {**accepted, "namespace": namespace + "s"})
    assert validate_form(template, {**accepted, "clusterName": cluster + "c"})

    # WHEN kro renders the instance scaffolded from them
    manifest = scaffold_manifest(template, accepted)
    rendered = render_instance(rgd, manifest["spec"], namespace=manifest["metadata"]["namespace"])

    # THEN the IAM role name and every object name stay within AWS's and Kubernetes' limits
    role_name = rendered.included["modelCacheRole"]["spec"]["name"]
    assert namespace in role_name
    assert name in role_name
    assert cluster in role_name
    assert len(role_name) <= IAM_ROLE_NAME_LIMIT
    for resource_id, obj in rendered.included.items():
        assert len(obj["metadata"]["name"]) <= KUBERNETES_NAME_LIMIT, resource_id
