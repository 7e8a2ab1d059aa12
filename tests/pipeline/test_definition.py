"""Static checks of the state machine definition and the template that the linters do not make."""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Iterator
from typing import Any

import pytest
from conftest import EVENTS_DIR, REPO_ROOT
from sfn_harness import ASL_PATH, FUNCTIONS_DIR, load_handler_module, render_module

from model_cache.contract import errors

LAMBDA_TRANSIENT = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    # A timeout or an out-of-memory end: the runtime's payload has no errorType (Step Functions
    # Developer Guide, "Handling errors in Step Functions workflows").
    "Lambda.Unknown",
}
DOMAIN_ERRORS = {
    name for name, value in inspect.getmembers(errors, inspect.isclass) if issubclass(value, errors.ModelCacheError)
}
# The sample event each function is invoked with by `sam local invoke -e` (and these tests).
SAMPLE_EVENTS = {
    "request": ["sqs_requests.json"],
    "plan": ["plan.json"],
    "copy_unit": ["copy_unit.json", "copy_unit_fargate.json"],
    "finalize": ["complete_file.json", "finalize.json"],
    "publish": ["publish.json"],
    "cleanup": ["cleanup_after_failure.json", "cleanup_after_success.json"],
    "tracked_models": ["tracked_models.json"],
    "gc": ["gc_schedule.json", "gc_dry_run.json"],
}


def all_states(states: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, state in states.items():
        yield name, state
        processor = state.get("ItemProcessor") or state.get("Iterator")
        if processor:
            yield from all_states(processor["States"])


@pytest.fixture(scope="module")
def definition() -> dict[str, Any]:
    return dict(json.loads(ASL_PATH.read_text()))


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert decoded is not None, problems
    return dict(decoded)


@pytest.mark.unit
def test_asl_placeholders_and_definition_substitutions_match() -> None:
    # GIVEN the ASL's ${...} placeholders and the template's DefinitionSubstitutions
    names = render_module.template_substitution_names(REPO_ROOT / "template.yaml")
    # THEN they are the same set (render raises on either side having extra names)
    assert render_module.placeholders(ASL_PATH.read_text()) == names
    rendered = render_module.render(ASL_PATH.read_text(), dict.fromkeys(names, "x"))
    assert "${" not in rendered


@pytest.mark.unit
def test_every_lambda_task_retries_transient_errors_with_jitter_and_never_domain_errors(
    definition: dict[str, Any],
) -> None:
    lambda_tasks = [
        (name, state)
        for name, state in all_states(definition["States"])
        if state.get("Resource") == "arn:aws:states:::lambda:invoke"
    ]
    assert len(lambda_tasks) >= 7
    for name, state in lambda_tasks:
        retriers = state.get("Retry", [])
        retried_somewhere = {error for retrier in retriers for error in retrier["ErrorEquals"]}
        assert retried_somewhere >= LAMBDA_TRANSIENT, f"{name} does not retry the transient Lambda errors"
        for retrier in retriers:
            assert retrier.get("JitterStrategy") == "FULL", name
            assert retrier.get("MaxDelaySeconds", 0) > 0, name
            assert retrier.get("BackoffRate", 1) > 1, name
            retried = set(retrier["ErrorEquals"])
            assert not retried & (DOMAIN_ERRORS | {"States.ALL", "States.TaskFailed"}), (name, retried)


@pytest.mark.unit
def test_every_failure_path_cleans_up_before_failing(definition: dict[str, Any]) -> None:
    states = definition["States"]
    for name in ("CopyUnits", "ExplainCopyFailure", "Finalize", "Publish"):
        targets = {catcher["Next"] for catcher in states[name]["Catch"]}
        assert targets == {"CleanUpAfterFailure"} or (name == "CopyUnits" and targets == {"ExplainCopyFailure"}), name
    assert states["CleanUpAfterFailure"]["Next"] == "CacheFailed"
    assert states["CleanUpAfterFailure"]["Parameters"]["Payload"]["failed"] is True
    assert states["CacheFailed"] == {**states["CacheFailed"], "Type": "Fail", "ErrorPath": "$.error.Error"}


@pytest.mark.unit
def test_copy_units_read_the_plan_from_s3_and_route_huge_files_to_fargate(definition: dict[str, Any]) -> None:
    copy_units = definition["States"]["CopyUnits"]
    assert copy_units["ItemReader"]["Resource"] == "arn:aws:states:::s3:getObject"
    assert copy_units["ItemProcessor"]["ProcessorConfig"]["Mode"] == "DISTRIBUTED"
    route = copy_units["ItemProcessor"]["States"]["RouteUnit"]
    assert route["Choices"][0]["StringEquals"] == "fargate"
    fargate = copy_units["ItemProcessor"]["States"][route["Choices"][0]["Next"]]
    assert fargate["Resource"] == "arn:aws:states:::ecs:runTask.sync"


@pytest.mark.unit
def test_state_machine_logs_no_execution_data_and_traces(template: dict[str, Any]) -> None:
    machine = template["Resources"]["ModelCacheStateMachine"]["Properties"]
    assert machine["Type"] == "STANDARD"
    assert machine["Logging"]["IncludeExecutionData"] is False
    assert machine["Tracing"]["Enabled"] is True
    assert machine["DefinitionUri"] == "statemachine/model_cache.asl.json"


@pytest.mark.unit
def test_no_policy_grants_a_wildcard_action(template: dict[str, Any]) -> None:
    text = json.dumps(template["Resources"])
    assert '"Action": "*"' not in text
    assert '"s3:*"' not in text.replace('"Effect": "Deny", "Principal": "*", "Action": "s3:*"', "")


# integration: importing a handler creates Powertools' X-Ray recorder, which opens a UDP socket.
@pytest.mark.integration
def test_every_function_has_a_handler_and_sample_events(template: dict[str, Any]) -> None:
    code_uris = {
        resource["Properties"]["CodeUri"]
        for resource in template["Resources"].values()
        if resource["Type"] == "AWS::Serverless::Function"
    }
    folders = {path.name for path in FUNCTIONS_DIR.iterdir() if path.is_dir()}
    assert code_uris == {f"functions/{folder}" for folder in folders}
    assert set(SAMPLE_EVENTS) == folders
    for folder, events in SAMPLE_EVENTS.items():
        assert callable(load_handler_module(folder).handler)
        for event in events:
            json.loads((EVENTS_DIR / event).read_text())


@pytest.mark.unit
def test_dashboard_body_is_json_once_substituted(template: dict[str, Any]) -> None:
    body, variables = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"]
    used = set(re.findall(r"\$\{([^}]+)\}", body))
    assert used <= set(variables) | {"AWS::Region", "ModelCacheStateMachine"}
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    assert {widget["properties"]["title"] for widget in widgets} >= {"Executions", "Failures"}


NAMED_IAM_PROPERTIES = {
    # The properties that give an IAM resource a custom name (CloudFormation's "Acknowledging IAM
    # resources": a template with any of them needs CAPABILITY_NAMED_IAM, CAPABILITY_IAM is refused).
    "AWS::IAM::Role": "RoleName",
    "AWS::IAM::ManagedPolicy": "ManagedPolicyName",
    "AWS::IAM::User": "UserName",
    "AWS::IAM::Group": "GroupName",
    "AWS::IAM::InstanceProfile": "InstanceProfileName",
}


@pytest.mark.unit
def test_samconfig_acknowledges_the_capabilities_the_template_needs(template: dict[str, Any]) -> None:
    import tomllib

    # GIVEN the template's IAM resources and the capabilities samconfig.toml passes to sam deploy
    named = [
        name
        for name, resource in template["Resources"].items()
        if NAMED_IAM_PROPERTIES.get(resource["Type"]) in resource.get("Properties", {})
    ]
    capabilities = tomllib.loads((REPO_ROOT / "samconfig.toml").read_text())["default"]["deploy"]["parameters"][
        "capabilities"
    ].split()
    # THEN a template that names an IAM resource is deployed with CAPABILITY_NAMED_IAM
    assert named, "the template names no IAM resource: CAPABILITY_IAM would do"
    assert "CAPABILITY_NAMED_IAM" in capabilities, f"{named} carry custom names"
    # AND the transforms SAM expands (AWS::Serverless) need no CAPABILITY_AUTO_EXPAND with sam deploy
    assert set(capabilities) <= {"CAPABILITY_IAM", "CAPABILITY_NAMED_IAM"}


@pytest.mark.unit
def test_declared_minimum_versions_have_the_features_the_code_uses() -> None:
    import tomllib

    from packaging.requirements import Requirement
    from packaging.version import Version

    # GIVEN the code's use of CRC64NVME and ChecksumType (botocore 1.36.0, January 2025)
    sources = "\n".join(
        path.read_text()
        for folder in ("layers/core/model_cache", "loader/src")
        for path in (REPO_ROOT / folder).rglob("*.py")
    )
    assert "CRC64NVME" in sources
    assert "ChecksumType" in sources
    for pyproject in ("pyproject.toml", "loader/pyproject.toml"):
        declared = tomllib.loads((REPO_ROOT / pyproject).read_text())["project"]["dependencies"]
        floors = {
            requirement.name: min(Version(spec.version) for spec in requirement.specifier if spec.operator == ">=")
            for requirement in map(Requirement, declared)
            if requirement.name in ("boto3", "botocore")
        }
        # THEN each package's floor for boto3 and botocore is at least the version that brought them
        assert set(floors) == {"boto3", "botocore"}, pyproject
        assert all(floor >= Version("1.36") for floor in floors.values()), (pyproject, floors)
