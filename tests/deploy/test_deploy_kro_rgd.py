"""deploy/kro/ray-service.yaml: the kro ResourceGraphDefinition for the RayService API.

kro cannot run here, so these tests hold the RGD to the rules kro applies when it accepts an RGD
and renders an instance (see deploy_kro.py): SimpleSchema syntax, CEL that parses, string
templates that yield strings, includeWhen/readyWhen that yield booleans, and the rendered objects
(IAM policies, Pod Identity, serveConfigV2) checked for what they must say.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import yaml
from celpy import celtypes
from deploy_kro import (
    KNOWN_MARKERS,
    RGD_PATH,
    KroModelError,
    Rendered,
    compile_cel,
    evaluate,
    field_types,
    find_expressions,
    is_standalone,
    is_valid_type,
    load_rgd,
    parse_field,
    references,
    render_instance,
    render_value,
    schema_defaults,
    schema_fields,
    value_matches_type,
    walk_strings,
)

pytestmark = pytest.mark.unit

BUCKET = "ray-model-cache-123456789012"
ACCOUNT = "123456789012"
CACHED = {"useModelCache": True, "modelCacheBucket": BUCKET, "clusterName": "platform-eks", "awsAccountId": ACCOUNT}
LOADER_ZIP_KEY = "model-cache-loader/0.1.0/model_cache_loader-0.1.0-py3-none-any.zip"
RAYSERVICE_IDS = {"rayServiceCpu", "rayServiceCpuCached", "rayServiceGpu", "rayServiceGpuCached"}
# The instances every expression is evaluated against: the defaults, and every switch flipped.
SAMPLE_SPECS: list[dict[str, Any]] = [
    {},
    {**CACHED, "resources": {"worker": {"gpu": "1"}}},
]
REQUIRED_SAMPLE = {
    "name": "text-ml",
    "ingressHostname": "ray.example.com",
    "rayServeFile": "https://gitlab.example.com/ml/text-ml/-/raw/main/serve.zip",
    "gitlab": {"hostname": "gitlab.example.com", "username": "ml-team"},
}


@pytest.fixture(scope="module")
def rgd() -> dict[str, Any]:
    return load_rgd()


def render(rgd: dict[str, Any], **spec: Any) -> Rendered:
    return render_instance(rgd, {**REQUIRED_SAMPLE, **spec})


def all_expression_sites(rgd: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, value) for every string holding an expression: templates, conditions, status."""
    sites: list[tuple[str, str]] = []
    for resource in rgd["spec"]["resources"]:
        rid = resource["id"]
        sites.extend(
            (f"{rid}.template.{path}", text) for path, text in walk_strings(resource["template"]) if "${" in text
        )
        sites.extend((f"{rid}.includeWhen", text) for text in resource.get("includeWhen", []))
        sites.extend((f"{rid}.readyWhen", text) for text in resource.get("readyWhen", []))
    sites.extend((f"status.{path}", text) for path, text in walk_strings(rgd["spec"]["schema"].get("status", {})))
    return sites


# ---------------------------------------------------------------------------------------------
# Shape and schema
# ---------------------------------------------------------------------------------------------


def test_rgd_is_a_kro_resource_graph_definition_for_rayservice(rgd: dict[str, Any]) -> None:
    # GIVEN the parsed file  THEN it is a kro RGD defining kind RayService with unique resource ids
    assert rgd["apiVersion"] == "kro.run/v1alpha1"
    assert rgd["kind"] == "ResourceGraphDefinition"
    assert rgd["spec"]["schema"]["kind"] == "RayService"
    ids = [resource["id"] for resource in rgd["spec"]["resources"]]
    assert len(ids) == len(set(ids))
    assert {"rayIngress", "modelCacheServiceAccount", "modelCacheRole", "modelCachePodIdentity"} <= set(ids)
    assert set(ids) >= RAYSERVICE_IDS


def test_every_schema_field_has_a_valid_simpleschema_type_and_default(rgd: dict[str, Any]) -> None:
    # GIVEN every field of the schema  THEN its type is a SimpleSchema type, its markers are known
    # ones, and a default (when given) parses as a value of that type
    fields = list(schema_fields(rgd["spec"]["schema"]["spec"]))
    assert fields
    for field in fields:
        assert is_valid_type(field.type), f"{field.path}: unknown type {field.type!r}"
        assert set(field.markers) <= KNOWN_MARKERS, (
            f"{field.path}: unknown markers {set(field.markers) - KNOWN_MARKERS}"
        )
        if "default" in field.markers:
            assert value_matches_type(field.default_value(), field.type), f"{field.path}: bad default"
        for bound in ("minimum", "maximum"):
            if bound in field.markers:
                assert field.type in ("integer", "float", "number")
                float(field.markers[bound])
        if "required" in field.markers:
            assert field.markers["required"] in ("true", "false")
            assert "default" not in field.markers, f"{field.path}: required and defaulted"


def test_schema_keeps_the_seed_fields_and_adds_the_model_cache_ones(rgd: dict[str, Any]) -> None:
    # GIVEN the schema  THEN the seed's fields keep their types/defaults and the cache fields exist
    types = field_types(rgd)
    defaults = schema_defaults(rgd)
    expected_types = {
        "createdBy": "string",
        "gitlab.hostname": "string",
        "gitlab.username": "string",
        "ingressHostname": "string",
        "name": "string",
        "modelId": "string",
        "maxLength": "string",
        "rayServeFile": "string",
        "replicas": "integer",
        "serveReplicas.min": "integer",
        "serveReplicas.max": "integer",
        "resources.head.cpu": "string",
        "resources.head.memory": "string",
        "resources.worker.cpu": "string",
        "resources.worker.gpu": "string",
        "resources.worker.memory": "string",
        "useModelCache": "boolean",
        "modelCacheBucket": "string",
        "modelCachePrefix": "string",
        "clusterName": "string",
    }
    for path, field_type in expected_types.items():
        assert types.get(path) == field_type, path
    assert defaults["createdBy"] == "unknown"
    assert defaults["modelId"] == "microsoft/DialoGPT-medium"
    assert defaults["maxLength"] == "100"
    assert defaults["replicas"] == 2
    assert defaults["useModelCache"] is False
    assert defaults["modelCacheBucket"] == ""
    assert defaults["modelCachePrefix"] == "models"


# ---------------------------------------------------------------------------------------------
# CEL: parses, and types as kro requires
# ---------------------------------------------------------------------------------------------


def test_every_expression_parses_as_cel(rgd: dict[str, Any]) -> None:
    # GIVEN every ${...} in the RGD  WHEN cel-python parses it  THEN it is valid CEL
    sites = all_expression_sites(rgd)
    expressions = [(where, expression.source) for where, text in sites for expression in find_expressions(text)]
    assert len(expressions) > 50
    for where, source in expressions:
        try:
            compile_cel(source)
        except Exception as error:  # celpy raises its own parse error types
            pytest.fail(f"{where}: ${{{source}}} is not CEL: {error}")


@pytest.mark.parametrize("spec", SAMPLE_SPECS, ids=["defaults", "cache-and-gpu"])
def test_every_expression_inside_a_string_template_yields_a_string(rgd: dict[str, Any], spec: dict[str, Any]) -> None:
    # GIVEN an instance (defaults, then every switch flipped)  WHEN each template string holding
    # an expression next to other text is rendered  THEN every embedded expression yields a string
    rendered = render(rgd, **spec)
    embedded = 0
    for resource in rgd["spec"]["resources"]:
        if resource["id"] not in rendered.included:
            continue
        activation = {"schema": _schema_activation(rgd, spec), **_resource_activation(rendered)}
        for where, text in walk_strings(resource["template"]):
            if "${" in text and not is_standalone(text):
                embedded += len(find_expressions(text))
                try:
                    assert isinstance(render_value(text, activation), str)
                except KroModelError as error:
                    pytest.fail(f"{resource['id']}.{where}: {error}")
    assert embedded > 10


def test_embedded_expressions_on_non_string_fields_are_wrapped_in_string(rgd: dict[str, Any]) -> None:
    # GIVEN the static shape of every embedded expression  THEN one that reads a non-string schema
    # field is a string(...) call: kro rejects e.g. "${schema.spec.useModelCache}" inside a string
    types = field_types(rgd)
    for where, text in all_expression_sites(rgd):
        if is_standalone(text):
            continue
        for expression in find_expressions(text):
            source = expression.source.strip()
            read = {path for path in types if f"schema.spec.{path}" in source}
            non_string = {path for path in read if types[path] != "string"}
            if non_string:
                message = f"{where}: ${{{source}}} reads {sorted(non_string)} inside a string without string(...)"
                assert source.startswith("string("), message
                assert source.endswith(")"), message


def test_include_and_ready_conditions_are_booleans_over_the_right_scope(rgd: dict[str, Any]) -> None:
    # GIVEN every includeWhen and readyWhen  THEN each is a lone expression yielding a boolean;
    # includeWhen reads only the schema, readyWhen only its own resource
    ids = {resource["id"] for resource in rgd["spec"]["resources"]}
    rendered = render(rgd, **CACHED)
    for resource in rgd["spec"]["resources"]:
        rid = resource["id"]
        for condition in resource.get("includeWhen", []):
            assert is_standalone(condition), f"{rid}: includeWhen {condition!r}"
            source = find_expressions(condition)[0].source
            assert references(source, ids | {"schema"}) == {"schema"}, f"{rid}: includeWhen {source}"
            for spec in SAMPLE_SPECS:
                result = evaluate(source, {"schema": _schema_activation(rgd, spec)})
                assert isinstance(result, celtypes.BoolType), f"{rid}: includeWhen {source} is not a boolean"
        for condition in resource.get("readyWhen", []):
            assert is_standalone(condition), f"{rid}: readyWhen {condition!r}"
            source = find_expressions(condition)[0].source
            assert references(source, ids | {"schema"}) == {rid}, f"{rid}: readyWhen {source}"
            if rid in rendered.included:
                result = evaluate(source, _resource_activation(rendered))
                assert isinstance(result, celtypes.BoolType), f"{rid}: readyWhen {source} is not a boolean"
                assert result, f"{rid}: readyWhen {source} is false for a healthy resource"


# ---------------------------------------------------------------------------------------------
# What an instance renders to
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("gpu", ["0", "1"])
@pytest.mark.parametrize("cache", [False, True])
def test_exactly_one_rayservice_variant_renders_for_each_combination(
    rgd: dict[str, Any], gpu: str, cache: bool
) -> None:
    # GIVEN a CPU or GPU instance with the cache off or on  WHEN rendered
    spec: dict[str, Any] = {"resources": {"worker": {"gpu": gpu}}, **(CACHED if cache else {})}
    rendered = render(rgd, **spec)

    # THEN exactly one RayService is created, the right one, with the cache objects only when on
    variants = RAYSERVICE_IDS & set(rendered.included)
    expected = "rayService" + ("Gpu" if gpu != "0" else "Cpu") + ("Cached" if cache else "")
    assert variants == {expected}
    cache_objects = {"modelCacheServiceAccount", "modelCacheRole", "modelCachePodIdentity"}
    assert (cache_objects <= set(rendered.included)) is cache
    assert not (cache_objects & set(rendered.included)) or cache
    assert "rayIngress" in rendered.included

    service = rendered.included[expected]
    head = service["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    worker_group = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]
    worker = worker_group["template"]["spec"]
    if cache:
        account = rendered.included["modelCacheServiceAccount"]["metadata"]["name"]
        assert head["serviceAccountName"] == worker["serviceAccountName"] == account
    else:
        assert "serviceAccountName" not in head
        assert "serviceAccountName" not in worker
    limits = worker["containers"][0]["resources"]["limits"]
    assert ("nvidia.com/gpu" in limits) is (gpu != "0")
    assert worker_group["replicas"] == 2
    assert worker_group["maxReplicas"] == 4


def test_serve_config_passes_the_model_and_cache_settings_and_installs_the_loader(rgd: dict[str, Any]) -> None:
    # GIVEN an instance with the cache on and a custom prefix  WHEN rendered
    rendered = render(rgd, **CACHED, modelCachePrefix="team-a/models", modelId="microsoft/phi-2", maxLength="256")
    serve_config = yaml.safe_load(rendered.included["rayServiceCpuCached"]["spec"]["serveConfigV2"])

    # THEN serveConfigV2 is YAML whose app imports app:deployment with the pod variables set as strings
    application = serve_config["applications"][0]
    assert application["import_path"] == "app:deployment"
    env_vars = application["runtime_env"]["env_vars"]
    assert env_vars["MODEL_ID"] == "microsoft/phi-2"
    assert env_vars["MAX_LENGTH"] == "256"
    assert env_vars["USE_MODEL_CACHE"] == "true"
    assert env_vars["MODEL_CACHE_BUCKET"] == BUCKET
    assert env_vars["MODEL_CACHE_PREFIX"] == "team-a/models"
    assert all(isinstance(value, str) for value in env_vars.values())
    # AND the loader comes from the cache bucket as a py_modules zip (no package index), with the
    # pinned transformers beside it on the stock image
    assert application["runtime_env"]["py_modules"] == [f"s3://{BUCKET}/{LOADER_ZIP_KEY}"]
    assert "transformers==5.24.0" in application["runtime_env"]["pip"]["packages"]

    # AND with the cache off, the same app is told so
    plain = yaml.safe_load(render(rgd).included["rayServiceCpu"]["spec"]["serveConfigV2"])
    assert plain["applications"][0]["runtime_env"]["env_vars"]["USE_MODEL_CACHE"] == "false"


@pytest.mark.parametrize("gpu", ["0", "1"])
@pytest.mark.parametrize("cache", [False, True])
def test_every_rendered_serve_config_is_valid_for_rays_own_schema(rgd: dict[str, Any], gpu: str, cache: bool) -> None:
    """KubeRay hands serveConfigV2 to Ray Serve's REST API, which parses it with
    ray.serve.schema.ServeDeploySchema: validate with Ray's own model (the ray we test the app on),
    not with our idea of it."""
    from ray.serve.schema import ServeDeploySchema

    # GIVEN each RayService variant, rendered  WHEN its serveConfigV2 is parsed by Ray's schema
    rendered = render(rgd, **{"resources": {"worker": {"gpu": gpu}}, **(CACHED if cache else {})})
    service = next(rendered.included[rid] for rid in RAYSERVICE_IDS if rid in rendered.included)
    parsed = ServeDeploySchema.model_validate(yaml.safe_load(service["spec"]["serveConfigV2"]))
    # THEN it is accepted, and says what the app needs
    (application,) = parsed.applications
    assert application.import_path == "app:deployment"
    (deployment,) = application.deployments
    assert deployment.autoscaling_config == {"min_replicas": 1, "max_replicas": 2}
    assert application.runtime_env["env_vars"]["USE_MODEL_CACHE"] == ("true" if cache else "false")
    assert [d.name for d in application.deployments] == ["TextGenerator"]


@pytest.mark.unit
def test_rays_schema_refuses_what_a_broken_serve_config_would_say() -> None:
    """The validation above can fail: Ray's schema refuses a missing import path and a negative replica
    count (it ignores unknown fields, so those are our schemas' job)."""
    from pydantic import ValidationError
    from ray.serve.schema import ServeDeploySchema

    good = {"applications": [{"name": "a", "import_path": "app:deployment", "route_prefix": "/a"}]}
    ServeDeploySchema.model_validate(good)
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate({"applications": [{"name": "a", "route_prefix": "/a"}]})
    bad_replicas = {**good["applications"][0], "deployments": [{"name": "TextGenerator", "num_replicas": -3}]}
    with pytest.raises(ValidationError):
        ServeDeploySchema.model_validate({"applications": [bad_replicas]})


@pytest.mark.parametrize("cache", [False, True])
def test_the_ingress_reaches_kuberays_serve_service_and_nothing_exposes_the_dashboard(
    rgd: dict[str, Any], cache: bool
) -> None:
    # GIVEN an instance, rendered
    rendered = render(rgd, **(CACHED if cache else {}))
    service = next(rendered.included[rid] for rid in RAYSERVICE_IDS if rid in rendered.included)
    ingress = rendered.included["rayIngress"]
    # THEN the Ingress has one path, the serve route, on the Service KubeRay keeps on the serving
    # cluster (<RayService name>-serve-svc, which follows a zero-downtime upgrade)
    (path,) = [p for rule in ingress["spec"]["rules"] for p in rule["http"]["paths"]]
    assert path["path"] == f"/ray-serve/{REQUIRED_SAMPLE['name']}"
    assert path["backend"]["service"] == {
        "name": f"{service['metadata']['name']}-serve-svc",
        "port": {"number": 8000},
    }
    # AND no Service or Ingress of ours carries the dashboard's port (its Jobs API runs code)
    for rid, obj in rendered.included.items():
        if obj["kind"] in ("Service", "Ingress"):
            assert "8265" not in json.dumps(obj), rid


HOSTILE_PREFIXES = ["*", "models/*", "*/models", "mod?els", "../other-team", "models/../x", "./models", "/models",
                    "models/", "a//b", "", "models\n", "models/ x"]  # fmt: skip
HOSTILE_BUCKETS = ["*", "cache-*", "my-bucket/*", "arn:aws:s3:::my-bucket", "my-bucket/models", "..", "A"]


def schema_pattern(rgd: dict[str, Any], field: str) -> re.Pattern[str]:
    definition = rgd["spec"]["schema"]["spec"][field]
    return re.compile(parse_field(field, definition).markers["pattern"].strip('"'))


@pytest.mark.parametrize("prefix", HOSTILE_PREFIXES)
def test_the_instance_schema_refuses_a_prefix_that_would_widen_the_role(rgd: dict[str, Any], prefix: str) -> None:
    """The prefix is pasted into the role's policy (arn:aws:s3:::bucket/<prefix>/*): a wildcard or a
    '..' segment would let an instance read what is not its cache. The API server checks the CRD's
    pattern before kro renders anything; the Backstage form checks the same pattern first."""
    assert not schema_pattern(rgd, "modelCachePrefix").fullmatch(prefix)
    assert not re.fullmatch(backstage_pattern("modelCachePrefix"), prefix)


@pytest.mark.parametrize("bucket", HOSTILE_BUCKETS)
def test_the_instance_schema_refuses_a_bucket_that_is_not_a_bucket_name(rgd: dict[str, Any], bucket: str) -> None:
    assert not schema_pattern(rgd, "modelCacheBucket").fullmatch(bucket)
    assert not re.fullmatch(backstage_pattern("modelCacheBucket"), bucket)


def test_the_patterns_admit_the_prefixes_and_buckets_in_use(rgd: dict[str, Any]) -> None:
    for prefix in ("models", "team-a/models", "org.x/v1_models"):
        assert schema_pattern(rgd, "modelCachePrefix").fullmatch(prefix), prefix
        assert re.fullmatch(backstage_pattern("modelCachePrefix"), prefix), prefix
    for bucket in (BUCKET, "model-cache-123456789012-us-west-2"):
        assert schema_pattern(rgd, "modelCacheBucket").fullmatch(bucket), bucket
    assert schema_pattern(rgd, "modelCacheBucket").fullmatch("")  # the default, with the cache off


def backstage_pattern(field: str) -> str:
    template = yaml.safe_load((RGD_PATH.parents[1] / "backstage" / "template-ray-serve.yaml").read_text())

    def find(node: Any) -> str | None:
        if isinstance(node, dict):
            if field in node and isinstance(node[field], dict) and "pattern" in node[field]:
                return str(node[field]["pattern"])
            for value in node.values():
                if (found := find(value)) is not None:
                    return found
        elif isinstance(node, list):
            for value in node:
                if (found := find(value)) is not None:
                    return found
        return None

    pattern = find(template)
    assert pattern is not None, f"the Backstage form has no pattern for {field}"
    return pattern


def test_runtime_env_installs_what_the_app_requirements_list(rgd: dict[str, Any]) -> None:
    # GIVEN deploy/ray/requirements.txt and the serveConfigV2 pip list rendered with the defaults
    requirements_path = RGD_PATH.parents[1] / "ray" / "requirements.txt"
    requirements = [
        line.strip()
        for line in requirements_path.read_text().splitlines()
        if line.strip() and not line.lstrip().startswith("#")
    ]
    for gpu in ("0", "1"):
        for extra in ({}, CACHED):
            rendered = render(rgd, **extra, resources={"worker": {"gpu": gpu}})
            for rid, service in rendered.included.items():
                if rid not in RAYSERVICE_IDS:
                    continue
                pip = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["runtime_env"]["pip"]
                # THEN the stock-image pods install exactly what the app declares it needs, CPU torch on CPU pods
                assert sorted(pip["packages"]) == sorted(requirements), rid
                options = pip["pip_install_options"]
                assert ("https://download.pytorch.org/whl/cpu" in options) is (gpu == "0"), rid
                assert "--no-cache-dir" in options


def test_pods_on_the_runtime_image_install_nothing_at_start(rgd: dict[str, Any]) -> None:
    # GIVEN an instance on the runtime image (containers/ray-serve)  WHEN each variant renders
    image = "123456789012.dkr.ecr.us-west-2.amazonaws.com/ray-serve-model-cache:0.1.0-cpu"
    for gpu in ("0", "1"):
        for extra in ({}, CACHED):
            rendered = render(rgd, **extra, runtimeImage=image, resources={"worker": {"gpu": gpu}})
            service = next(rendered.included[rid] for rid in RAYSERVICE_IDS if rid in rendered.included)
            runtime_env = yaml.safe_load(service["spec"]["serveConfigV2"])["applications"][0]["runtime_env"]
            # THEN the replica pip-installs nothing, and every container runs that image
            assert "pip" not in runtime_env
            config = service["spec"]["rayClusterConfig"]
            images = {value for path, value in walk_strings(config) if path.endswith(".image")}
            assert images == {image}


def test_rayservice_variants_differ_only_in_gpu_and_service_account(rgd: dict[str, Any]) -> None:
    # GIVEN the four hand-maintained RayService templates  THEN they match leaf for leaf except
    # where a variant must differ, so a change to one that misses the others fails here
    templates = {
        resource["id"]: resource["template"]
        for resource in rgd["spec"]["resources"]
        if resource["id"] in RAYSERVICE_IDS
    }
    allowed = ("serviceAccountName", "image", "nvidia.com/gpu", "tolerations", "groupName", "serveConfigV2")
    base = _flatten(templates["rayServiceCpu"])
    # the cached variants carry no HF_TOKEN (the next test) and pull the model in an init container
    cached_only = (
        "headGroupSpec.template.spec.containers[0].env[0].",
        "workerGroupSpecs[0].template.spec.containers[0].env[1].",
        ".initContainers[",
    )
    for rid, template in templates.items():
        leaves = _flatten(template)
        differing = {path for path in set(base) | set(leaves) if base.get(path) != leaves.get(path)}
        unexpected = {
            path
            for path in differing
            if not any(marker in path for marker in allowed)
            and not (rid.endswith("Cached") and any(marker in path for marker in cached_only))
        }
        assert not unexpected, f"{rid} differs from rayServiceCpu at {sorted(unexpected)}"
        # the GPU image and GPU torch (no CPU index), and the loader's py_modules when cached
        if "Gpu" in rid:
            assert leaves["spec.rayClusterConfig.workerGroupSpecs[0].template.spec.containers[0].image"].endswith(
                '-gpu"}'
            )
        normalised = [
            line.replace("--extra-index-url, https://download.pytorch.org/whl/cpu, ", "")
            for line in template["spec"]["serveConfigV2"].splitlines()
            if "num_gpus" not in line and "num_cpus" not in line and "py_modules" not in line
        ]
        reference = [
            line.replace("--extra-index-url, https://download.pytorch.org/whl/cpu, ", "")
            for line in templates["rayServiceCpu"]["spec"]["serveConfigV2"].splitlines()
            if "num_cpus" not in line
        ]
        assert normalised == reference, f"{rid}: serveConfigV2 drifted"
        assert ("py_modules" in template["spec"]["serveConfigV2"]) is rid.endswith("Cached")
        assert ("whl/cpu" in template["spec"]["serveConfigV2"]) is ("Cpu" in rid)


@pytest.mark.parametrize("gpu", ["0", "1"])
@pytest.mark.parametrize("cache", [False, True])
def test_pods_that_read_the_cache_get_no_hub_token_and_no_deprecated_field_is_set(
    rgd: dict[str, Any], gpu: str, cache: bool
) -> None:
    # GIVEN each variant, rendered
    rendered = render(rgd, **{"resources": {"worker": {"gpu": gpu}}, **(CACHED if cache else {})})
    service = next(rendered.included[rid] for rid in RAYSERVICE_IDS if rid in rendered.included)
    text = json.dumps(service)
    # THEN a pod with the S3 read role holds no HF_TOKEN (the Hub fallback then reads public repos
    # only), and the cache-off pods keep it for gated models on the Hub path
    assert ("HF_TOKEN" in text) is not cache
    # AND KubeRay's deprecated RayService fields (ray.io/v1: "not used anymore", kuberay#1685) are unset
    assert "serviceUnhealthySecondThreshold" not in service["spec"]
    assert "deploymentUnhealthySecondThreshold" not in service["spec"]


def test_ray_version_matches_the_ray_the_app_is_tested_on(rgd: dict[str, Any]) -> None:
    # GIVEN the RayService templates  THEN rayVersion and image tags are the Ray version in .venv
    import ray

    for resource in rgd["spec"]["resources"]:
        if resource["id"] in RAYSERVICE_IDS:
            config = resource["template"]["spec"]["rayClusterConfig"]
            assert config["rayVersion"] == ray.__version__
            images = [path_value for path, path_value in walk_strings(config) if path.endswith(".image")]
            assert images
            assert all(f":{ray.__version__}-" in image for image in images)


# ---------------------------------------------------------------------------------------------
# IAM and Pod Identity
# ---------------------------------------------------------------------------------------------

READ_ONLY_ACTIONS = {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}


def assert_read_only_and_prefix_scoped(policy: dict[str, Any], bucket: str, prefix: str) -> None:
    """The least-privilege rule for the pods' role: nothing but reads of bucket/prefix/."""
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    assert statements
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement
        assert "NotResource" not in statement
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert set(actions) <= READ_ONLY_ACTIONS, f"not read-only: {actions}"
        if "s3:GetObject" in actions:
            # the cached files, read by version too (the loader pins each GET to the manifest's version_id),
            # or the one loader release the pods run (its exact key, no wildcard, current version only)
            assert (actions, resources) in (
                (["s3:GetObject", "s3:GetObjectVersion"], [f"arn:aws:s3:::{bucket}/{prefix}/*"]),
                (["s3:GetObject"], [f"arn:aws:s3:::{bucket}/{LOADER_ZIP_KEY}"]),
            ), (actions, resources)
        if "s3:ListBucket" in actions:
            assert actions == ["s3:ListBucket"]
            assert resources == [f"arn:aws:s3:::{bucket}"], resources
            allowed_prefixes = statement["Condition"]["StringLike"]["s3:prefix"]
            allowed_prefixes = allowed_prefixes if isinstance(allowed_prefixes, list) else [allowed_prefixes]
            assert allowed_prefixes
            assert all(value.startswith(f"{prefix}/") for value in allowed_prefixes)
            assert set(statement["Condition"]) == {"StringLike"}


@pytest.mark.parametrize("prefix", ["models", "team-a/models"])
def test_inline_policy_is_json_read_only_and_scoped_to_the_prefix(rgd: dict[str, Any], prefix: str) -> None:
    # GIVEN the cache on with a bucket and prefix  WHEN the ACK Role renders
    role = render(rgd, **CACHED, modelCachePrefix=prefix).included["modelCacheRole"]
    assert role["apiVersion"] == "iam.services.k8s.aws/v1alpha1"
    assert role["kind"] == "Role"
    # THEN inlinePolicies is a map of JSON strings (as ACK requires), each read-only on the prefix
    policies = role["spec"]["inlinePolicies"]
    assert policies
    assert all(isinstance(document, str) for document in policies.values())
    for document in policies.values():
        assert_read_only_and_prefix_scoped(json.loads(document), BUCKET, prefix)


KMS_KEY = "arn:aws:kms:us-west-2:123456789012:key/0b1c2d3e-4f50-6172-8394-a5b6c7d8e9f0"


def test_the_pods_may_decrypt_with_the_caches_key_only_when_named_and_only_through_s3(rgd: dict[str, Any]) -> None:
    # GIVEN the cache on without and with modelCacheKmsKeyArn
    def statements(**spec: Any) -> list[dict[str, Any]]:
        role = render(rgd, **CACHED, **spec).included["modelCacheRole"]
        return [s for document in role["spec"]["inlinePolicies"].values() for s in json.loads(document)["Statement"]]

    plain, keyed = statements(), statements(modelCacheKmsKeyArn=KMS_KEY, awsRegion="us-west-2")
    # THEN without a key no KMS statement is rendered; with one, exactly kms:Decrypt on that key via S3
    assert [s for s in plain if str(s["Action"]).startswith("kms:")] == []
    [decrypt] = [s for s in keyed if s["Action"] == "kms:Decrypt"]
    assert decrypt["Resource"] == KMS_KEY
    assert decrypt["Condition"] == {"StringEquals": {"kms:ViaService": "s3.us-west-2.amazonaws.com"}}
    assert [s for s in keyed if s is not decrypt] == plain
    # AND the schema refuses a key that is not a KMS key ARN
    assert not schema_pattern(rgd, "modelCacheKmsKeyArn").fullmatch("*")
    assert not schema_pattern(rgd, "modelCacheKmsKeyArn").fullmatch("arn:aws:kms:us-west-2:123456789012:alias/x")


def test_policy_check_rejects_broader_grants() -> None:
    # GIVEN policies that grant too much  THEN the least-privilege check catches each of them
    too_broad = [
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": f"arn:aws:s3:::{BUCKET}/*"}],
        },
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": f"arn:aws:s3:::{BUCKET}/*"}],
        },
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:ListBucket", "Resource": f"arn:aws:s3:::{BUCKET}"}],
        },
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:PutObject", "Resource": f"arn:aws:s3:::{BUCKET}/models/*"}],
        },
    ]
    for policy in too_broad:
        with pytest.raises((AssertionError, KeyError)):
            assert_read_only_and_prefix_scoped(policy, BUCKET, "models")


def test_trust_policy_lets_eks_pod_identity_assume_and_tag(rgd: dict[str, Any]) -> None:
    # GIVEN the rendered Role  THEN its trust policy is JSON trusting pods.eks.amazonaws.com with
    # sts:AssumeRole and sts:TagSession, and nothing else
    role = render(rgd, **CACHED).included["modelCacheRole"]
    trust = json.loads(role["spec"]["assumeRolePolicyDocument"])
    assert len(trust["Statement"]) == 1
    statement = trust["Statement"][0]
    assert statement["Effect"] == "Allow"
    assert statement["Principal"] == {"Service": "pods.eks.amazonaws.com"}
    assert sorted(statement["Action"]) == ["sts:AssumeRole", "sts:TagSession"]
    # AND only the instance's own service account, namespace and cluster, by Pod Identity's session tags
    rendered = render(rgd, **CACHED)
    account = rendered.included["modelCacheServiceAccount"]["metadata"]
    association = rendered.included["modelCachePodIdentity"]["spec"]
    assert statement["Condition"] == {
        "StringEquals": {
            "aws:SourceAccount": ACCOUNT,
            "aws:RequestTag/eks-cluster-name": association["clusterName"],
            "aws:RequestTag/kubernetes-namespace": account["namespace"],
            "aws:RequestTag/kubernetes-service-account": account["name"],
        }
    }
    assert association["serviceAccount"] == account["name"]


def test_pod_identity_association_ties_the_service_account_to_the_role(rgd: dict[str, Any]) -> None:
    # GIVEN the cache on  WHEN the PodIdentityAssociation renders
    rendered = render(rgd, **CACHED)
    association = rendered.included["modelCachePodIdentity"]
    account = rendered.included["modelCacheServiceAccount"]
    # THEN it is the ACK EKS kind, for the instance's namespace and the RGD's own service account,
    # with the role ARN ACK reported for the Role
    assert association["apiVersion"] == "eks.services.k8s.aws/v1alpha1"
    assert association["kind"] == "PodIdentityAssociation"
    assert association["spec"]["clusterName"] == "platform-eks"
    assert association["spec"]["namespace"] == account["metadata"]["namespace"] == "team-ml"
    assert association["spec"]["serviceAccount"] == account["metadata"]["name"]
    assert association["spec"]["roleARN"].startswith("arn:aws:iam::")
    assert association["spec"]["roleARN"].endswith(rendered.included["modelCacheRole"]["spec"]["name"])


def test_pod_identity_is_ready_only_when_ack_reports_it_synced(rgd: dict[str, Any]) -> None:
    # GIVEN the association's readyWhen  WHEN ACK reports not synced, then synced
    resource = next(r for r in rgd["spec"]["resources"] if r["id"] == "modelCachePodIdentity")
    [condition] = [find_expressions(text)[0].source for text in resource["readyWhen"]]

    def ready(status: str) -> bool:
        observed = {"status": {"conditions": [{"type": "ACK.ResourceSynced", "status": status}]}}
        return bool(evaluate(condition, {"modelCachePodIdentity": observed}))

    # THEN it is ready only in the second case
    assert ready("False") is False
    assert ready("True") is True


def test_cached_pods_start_only_after_the_pod_identity_association(rgd: dict[str, Any]) -> None:
    # GIVEN the cached variants  THEN they reference the association, so kro orders them after it
    # (EKS Pod Identity injects credentials only into pods created after the association exists)
    ids = {resource["id"] for resource in rgd["spec"]["resources"]} | {"schema"}
    for resource in rgd["spec"]["resources"]:
        if resource["id"] in RAYSERVICE_IDS:
            refs: set[str] = set()
            for _, text in walk_strings(resource["template"]):
                for expression in find_expressions(text):
                    refs |= references(expression.source, ids)
            assert ("modelCachePodIdentity" in refs) is resource["id"].endswith("Cached")


# ---------------------------------------------------------------------------------------------
# The model on local disk before Ray starts
# ---------------------------------------------------------------------------------------------


def worker_pod(rendered: Rendered) -> dict[str, Any]:
    service = next(rendered.included[rid] for rid in RAYSERVICE_IDS if rid in rendered.included)
    spec: dict[str, Any] = service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["template"]["spec"]
    return spec


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


@pytest.mark.parametrize("gpu", ["0", "1"])
def test_cached_workers_pull_the_model_onto_their_volume_before_ray_starts(rgd: dict[str, Any], gpu: str) -> None:
    # GIVEN a cached instance with its disk sized from the manifest  WHEN rendered
    rendered = render(rgd, **CACHED, modelDiskSize="16Gi", resources={"worker": {"gpu": gpu}})
    pod = worker_pod(rendered)
    serve_config = yaml.safe_load(
        next(rendered.included[rid] for rid in RAYSERVICE_IDS if rid in rendered.included)["spec"]["serveConfigV2"]
    )

    # THEN one init container runs the bucket's loader (the very zip py_modules names) into the volume
    (init,) = pod["initContainers"]
    assert init["image"] == pod["containers"][0]["image"]
    env = env_of(init)
    assert (
        f"s3://{env['MODEL_CACHE_BUCKET']}/{env['MODEL_CACHE_LOADER_KEY']}"
        in serve_config["applications"][0]["runtime_env"]["py_modules"]
    )
    assert env["HF_HUB_CACHE"] == "/models/hub"
    assert "HF_TOKEN" not in env
    assert "python -m model_cache_loader pull --fallback error" in init["args"][0]
    assert init["volumeMounts"] == [{"name": "model-cache", "mountPath": "/models"}]
    # AND the worker reads the same volume as its Hugging Face cache, its disk requested and capped
    worker = pod["containers"][0]
    assert env_of(worker)["HF_HUB_CACHE"] == "/models/hub"
    assert worker["volumeMounts"] == [{"name": "model-cache", "mountPath": "/models"}]
    assert worker["resources"]["requests"]["ephemeral-storage"] == "16Gi"
    assert pod["volumes"] == [{"name": "model-cache", "emptyDir": {"sizeLimit": "16Gi"}}]


def test_the_init_container_tolerates_a_miss_and_nothing_else(rgd: dict[str, Any]) -> None:
    # GIVEN the init container's script  THEN exit 3 (not cached) lets the pod start, so the replica
    # falls back to the Hub, and any other failure (no bucket, denied, bad bytes) stops the pod
    script = worker_pod(render(rgd, **CACHED))["initContainers"][0]["args"][0]
    assert '[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]' in script
    assert "|| exit 1" in script


def test_node_local_mode_shares_one_directory_per_node(rgd: dict[str, Any]) -> None:
    # GIVEN nodeLocalModelCache  WHEN rendered, cached or not
    for extra in ({}, CACHED):
        pod = worker_pod(render(rgd, **extra, nodeLocalModelCache=True))
        # THEN the volume is the node's directory, which must exist (never created root-owned)
        assert pod["volumes"] == [
            {"name": "model-cache", "hostPath": {"path": "/var/lib/s3-model-cache", "type": "Directory"}}
        ]
    # AND without it, nothing of the node is mounted
    assert "hostPath" not in json.dumps(render(rgd, **CACHED).included)


def test_the_loader_release_the_rgd_names_is_the_loader_in_the_repo(rgd: dict[str, Any]) -> None:
    # GIVEN loader/pyproject.toml's version  THEN the RGD's py_modules key is that release's zip key
    import tomllib

    from model_cache.operations.loader_release import release_keys

    version = tomllib.loads((RGD_PATH.parents[2] / "loader" / "pyproject.toml").read_text())["project"]["version"]
    assert release_keys(version)[1] == LOADER_ZIP_KEY
    assert LOADER_ZIP_KEY in RGD_PATH.read_text()
    assert "model-cache-loader[hub]" not in RGD_PATH.read_text()


# ---------------------------------------------------------------------------------------------
# The role: unique per cluster, bounded, trusted from one account
# ---------------------------------------------------------------------------------------------


def test_the_role_is_named_per_cluster_and_bounded(rgd: dict[str, Any]) -> None:
    # GIVEN the same instance on two clusters of one account  WHEN rendered
    first = render(rgd, **CACHED).included["modelCacheRole"]["spec"]
    second = render(rgd, **{**CACHED, "clusterName": "platform-eks-2"}).included["modelCacheRole"]["spec"]
    # THEN their IAM roles differ (one would otherwise hang on the other's readyWhen)
    assert first["name"] != second["name"]
    assert first["name"] == "platform-eks-team-ml-text-ml-mc"
    # AND each is bounded by the stack's read-only boundary in the instance's account
    assert first["permissionsBoundary"] == f"arn:aws:iam::{ACCOUNT}:policy/model-cache-ray-pods-boundary"


HOSTILE_ACCOUNTS = ["*", "12345678901", "1234567890123", "12345678901*", "arn:aws:iam::123456789012:root"]
HOSTILE_CLUSTERS = ["*", "prod-*", "a/b", "c" * 17, "-lead"]
HOSTILE_BOUNDARIES = ["*", "boundary/*", "arn:aws:iam::aws:policy/AdministratorAccess", ""]


@pytest.mark.parametrize("account", HOSTILE_ACCOUNTS)
def test_the_instance_schema_refuses_an_account_that_is_not_one(rgd: dict[str, Any], account: str) -> None:
    assert not schema_pattern(rgd, "awsAccountId").fullmatch(account)
    assert not re.fullmatch(backstage_pattern("awsAccountId"), account)


@pytest.mark.parametrize("cluster", HOSTILE_CLUSTERS)
def test_the_instance_schema_refuses_a_cluster_name_that_would_widen_the_trust(
    rgd: dict[str, Any], cluster: str
) -> None:
    assert not schema_pattern(rgd, "clusterName").fullmatch(cluster)
    assert not re.fullmatch(backstage_pattern("clusterName"), cluster)


@pytest.mark.parametrize("boundary", HOSTILE_BOUNDARIES)
def test_the_instance_schema_refuses_a_boundary_that_is_not_a_policy_name(rgd: dict[str, Any], boundary: str) -> None:
    # an ARN or a path here would bound the role by some other policy than the stack's
    assert not schema_pattern(rgd, "permissionsBoundaryName").fullmatch(boundary)


# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _schema_activation(rgd: dict[str, Any], spec: dict[str, Any]) -> dict[str, Any]:
    from deploy_kro import instance_schema

    return instance_schema(rgd, {**REQUIRED_SAMPLE, **spec})


def _resource_activation(rendered: Rendered) -> dict[str, Any]:
    from deploy_kro import sample_status

    return {rid: {**obj, "status": sample_status(rid, obj)} for rid, obj in rendered.included.items()}


def _flatten(node: Any, path: str = "") -> dict[str, Any]:
    if isinstance(node, dict):
        flat: dict[str, Any] = {}
        for key, value in node.items():
            flat.update(_flatten(value, f"{path}.{key}" if path else str(key)))
        return flat
    if isinstance(node, list):
        flat = {}
        for position, value in enumerate(node):
            flat.update(_flatten(value, f"{path}[{position}]"))
        return flat
    return {path: node}
