"""Least privilege and transport security, read from template.yaml itself.

The template is parsed with the CloudFormation short-form tags (`!Ref`, `!Sub`, `!If`, ...) turned
into their long forms, and every policy document is walked: IAM roles' inline policies, managed
policies, resource policies (bucket, queue), and SAM `Policies` (inline statements, SAM policy
templates, managed policy names). `Fn::If` branches are both walked; `AWS::NoValue` is nothing.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from typing import Any

import pytest
import yaml
from conftest import REPO_ROOT

pytestmark = pytest.mark.unit

TEMPLATE = REPO_ROOT / "template.yaml"
TOOLS = REPO_ROOT / ".venv-tools" / "bin"

# Actions AWS does not let a policy scope to a resource, so an Allow of them needs Resource "*"
# (each with the reason; the template must carry a comment saying so next to the statement).
STAR_RESOURCE_ACTIONS = {
    "logs:CreateLogDelivery": "CloudWatch Logs vended delivery APIs have no resource-level permissions",
    "logs:GetLogDelivery": "vended log delivery, as above",
    "logs:UpdateLogDelivery": "vended log delivery, as above",
    "logs:DeleteLogDelivery": "vended log delivery, as above",
    "logs:ListLogDeliveries": "vended log delivery, as above",
    "logs:PutResourcePolicy": "account-level log resource policy, no resource ARN",
    "logs:DescribeResourcePolicies": "account-level list call, no resource ARN",
    "logs:DescribeLogGroups": "a list call over the account's log groups",
    "xray:PutTraceSegments": "X-Ray has no resource-level permissions",
    "xray:PutTelemetryRecords": "X-Ray has no resource-level permissions",
    "cloudwatch:PutMetricData": "metric writes are scoped by the cloudwatch:namespace condition, not a resource",
    "ecr:GetAuthorizationToken": "the registry token is per account and region; ECR defines no resource for it",
}
# SAM policy templates the template may use, and why each is narrow enough.
SAM_POLICY_TEMPLATES = {
    "LambdaInvokePolicy": "lambda:InvokeFunction on one named function",
}
POD_READ_ACTIONS = {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket", "kms:Decrypt"}


class CfnLoader(yaml.SafeLoader):  # type: ignore[misc]  # PyYAML ships no type hints here
    """YAML with CloudFormation's short-form intrinsic functions."""


def _intrinsic(loader: CfnLoader, tag_suffix: str, node: yaml.Node) -> dict[str, Any]:
    if isinstance(node, yaml.ScalarNode):
        value: Any = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _intrinsic)


@cache
def template() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.load(TEMPLATE.read_text(), Loader=CfnLoader)  # noqa: S506 - SafeLoader subclass
    return loaded


def resources(kind: str | None = None) -> Iterator[tuple[str, dict[str, Any]]]:
    for name, resource in template()["Resources"].items():
        if kind is None or resource["Type"] == kind:
            yield name, resource


def branches(value: Any) -> Iterator[Any]:
    """A value with every Fn::If expanded into both branches; AWS::NoValue yields nothing."""
    if isinstance(value, dict) and set(value) == {"Fn::If"}:
        _, when_true, when_false = value["Fn::If"]
        yield from branches(when_true)
        yield from branches(when_false)
    elif value == {"Ref": "AWS::NoValue"}:
        return
    else:
        yield value


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Statement:
    where: str
    body: dict[str, Any]

    @property
    def effect(self) -> str:
        return str(self.body.get("Effect"))

    @property
    def actions(self) -> list[str]:
        return [str(action) for action in as_list(self.body.get("Action", []))]

    @property
    def resources(self) -> list[Any]:
        return as_list(self.body.get("Resource", []))


def statements_of(document: Any, where: str) -> Iterator[Statement]:
    for doc in branches(document):
        for statement in branches(doc.get("Statement", [])):
            for item in as_list(statement):
                for body in branches(item):
                    yield Statement(where, body)


def sam_policies(name: str, policies: Any) -> Iterator[tuple[str, Any]]:
    """(kind, value) for each entry of a SAM `Policies`: 'statement', 'template', or 'managed'."""
    for entry in branches(policies):
        for item in as_list(entry):
            for policy in branches(item):
                if isinstance(policy, str) or (isinstance(policy, dict) and set(policy) <= {"Ref", "Fn::Sub"}):
                    yield "managed", policy
                elif "Statement" in policy:
                    yield "statement", policy
                else:
                    for template_name, parameters in policy.items():
                        yield "template", (template_name, parameters)


def all_statements() -> list[Statement]:
    found: list[Statement] = []
    for name, resource in resources():
        props = resource.get("Properties", {})
        kind = resource["Type"]
        if kind == "AWS::IAM::Role":
            for policies in branches(props.get("Policies", [])):
                for policy in as_list(policies):
                    for each in branches(policy):
                        found.extend(statements_of(each["PolicyDocument"], f"{name}/{each.get('PolicyName')}"))
        elif kind in (
            "AWS::IAM::Policy",
            "AWS::IAM::RolePolicy",
            "AWS::IAM::ManagedPolicy",
            "AWS::S3::BucketPolicy",
            "AWS::SQS::QueuePolicy",
        ):
            found.extend(statements_of(props["PolicyDocument"], name))
        elif kind in ("AWS::Serverless::Function", "AWS::Serverless::StateMachine"):
            for policy_kind, value in sam_policies(name, props.get("Policies", [])):
                if policy_kind == "statement":
                    found.extend(statements_of(value, name))
    return found


def test_policies_are_found() -> None:
    """GIVEN the template WHEN its policy documents are walked THEN every function, role and resource
    policy contributes statements (so the checks below cannot pass on an empty walk)."""
    wheres = {statement.where.split("/")[0] for statement in all_statements()}
    functions = {name for name, _ in resources("AWS::Serverless::Function")}
    assert functions <= wheres, functions - wheres
    assert {"PodReadOnlyPolicy", "CopierTaskRole"} <= wheres
    assert len(all_statements()) >= 20


def test_no_allow_statement_has_a_wildcard_action() -> None:
    """GIVEN every Allow statement THEN no action has a wildcard: not '*', not a whole service ('s3:*'), not a
    family ('s3:Get*', 's3:Put*'); Deny statements may (the TLS-only deny must cover every S3 action)."""
    wildcards = [
        (s.where, s.body.get("Sid"), action)
        for s in all_statements()
        if s.effect == "Allow"
        for action in s.actions
        if "*" in action or "?" in action
    ]
    assert wildcards == []


def sid_has_comment(sid: str) -> bool:
    """The template has a `#` comment among the few lines above the statement with this Sid."""
    lines = TEMPLATE.read_text().splitlines()
    for index, line in enumerate(lines):
        if re.search(rf"Sid:\s*{re.escape(sid)}\b", line):
            return any(above.strip().startswith("#") for above in lines[max(0, index - 4) : index])
    return False


def test_star_resources_only_where_aws_requires_them_and_commented() -> None:
    """GIVEN every Allow statement with Resource '*' THEN each of its actions is on the allow-list of
    actions AWS cannot scope to a resource, and the template explains it in a comment."""
    starred = [s for s in all_statements() if s.effect == "Allow" and "*" in s.resources]
    for statement in starred:
        unjustified = [action for action in statement.actions if action not in STAR_RESOURCE_ACTIONS]
        assert unjustified == [], f"{statement.where} {statement.body.get('Sid')}: '*' resource for {unjustified}"
        assert statement.body.get("Sid"), f"{statement.where}: a '*' statement needs a Sid to carry its comment"
        assert sid_has_comment(statement.body["Sid"]), f"{statement.body['Sid']}: no comment says why '*'"


def test_sam_policy_templates_and_managed_policies_are_known() -> None:
    """GIVEN SAM policy templates and managed policies in `Policies` THEN each is on the allow-list
    (a template like S3CrudPolicy would grant s3:* equivalents on the whole bucket)."""
    used = [
        (name, value)
        for name, resource in resources()
        if resource["Type"].startswith("AWS::Serverless::")
        for kind, value in sam_policies(name, resource.get("Properties", {}).get("Policies", []))
        if kind != "statement"
    ]
    unknown = [
        (name, value) for name, value in used if not (isinstance(value, tuple) and value[0] in SAM_POLICY_TEMPLATES)
    ]
    assert unknown == []


def test_pods_managed_policy_is_read_only_on_the_prefix() -> None:
    """GIVEN the managed policy the pods attach THEN it only reads: Get on objects under the cache
    prefix, and List only with an s3:prefix condition naming that prefix."""
    policy = template()["Resources"]["PodReadOnlyPolicy"]
    statements = list(statements_of(policy["Properties"]["PolicyDocument"], "PodReadOnlyPolicy"))
    assert {action for s in statements for action in s.actions} <= POD_READ_ACTIONS
    assert all(s.effect == "Allow" for s in statements)
    for statement in statements:
        text = json.dumps(statement.resources)
        if "s3:GetObject" in statement.actions:
            assert "${CachePrefix}/*" in text, text
        if "s3:ListBucket" in statement.actions:
            prefixes = json.dumps(statement.body["Condition"]["StringLike"]["s3:prefix"])
            assert "${CachePrefix}/" in prefixes
    assert not any(action.startswith(("s3:Put", "s3:Delete", "s3:Abort")) for s in statements for action in s.actions)


def test_bucket_policy_denies_requests_without_tls() -> None:
    """GIVEN the cache bucket's policy THEN a Deny for every principal and every S3 action on the bucket
    and its objects applies when aws:SecureTransport is false."""
    _, policy = next(resources("AWS::S3::BucketPolicy"))
    denies = [
        s
        for s in statements_of(policy["Properties"]["PolicyDocument"], "CacheBucketPolicy")
        if s.effect == "Deny"
        and s.body.get("Principal") in ("*", {"AWS": "*"})
        and "s3:*" in s.actions
        and str(s.body.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport")).lower() == "false"
    ]
    assert len(denies) == 1
    resources_text = json.dumps(denies[0].resources)
    assert "CacheBucket.Arn" in resources_text or "CacheBucket" in resources_text
    assert "/*" in resources_text, "the objects, not only the bucket"


def checkov_skips() -> dict[str, list[tuple[str, str]]]:
    """Resource name -> [(check id, comment)] from every `Metadata: checkov: skip:` (anchors resolved)."""
    found: dict[str, list[tuple[str, str]]] = {}
    for name, resource in resources():
        for skip in resource.get("Metadata", {}).get("checkov", {}).get("skip", []):
            found.setdefault(name, []).append((skip.get("id", ""), str(skip.get("comment", "")).strip()))
    return found


def test_every_checkov_skip_has_a_reason() -> None:
    """GIVEN every checkov skip in the template THEN it names a check id and a reason of a sentence."""
    skips = [(name, check, comment) for name, items in checkov_skips().items() for check, comment in items]
    assert skips, "the walk found the template's skips"
    assert [(n, c) for n, c, comment in skips if not re.fullmatch(r"CKV2?_AWS_\d+", c) or len(comment) < 20] == []
    assert not list(REPO_ROOT.glob(".checkov.y*ml")), "no repo-wide checkov config may skip checks unexplained"
    assert "#checkov:skip" not in TEMPLATE.read_text().replace(" ", "")


def test_every_cfn_lint_ignore_has_a_reason() -> None:
    """GIVEN every cfn-lint `ignore_checks` entry THEN a comment line above it says why, and no
    repo-wide config or command line ignores a rule."""
    lines = TEMPLATE.read_text().splitlines()
    entries = 0
    for index, line in enumerate(lines):
        if line.strip() != "ignore_checks:":
            continue
        indent = len(line) - len(line.lstrip())
        commented = False
        for item in lines[index + 1 :]:
            stripped = item.strip()
            if stripped and len(item) - len(item.lstrip()) <= indent:
                break
            if stripped.startswith("#"):
                commented = True
            elif stripped.startswith("- "):
                entries += 1
                assert commented, f"template.yaml:{index + 1}: {stripped} has no reason above it"
    assert entries > 0
    assert not list(REPO_ROOT.glob(".cfnlintrc*"))
    validate = (REPO_ROOT / "scripts" / "validate.sh").read_text()
    assert "--ignore-checks" not in validate
    assert "--skip-check" not in validate
    assert "--soft-fail" not in validate


@pytest.mark.slow
def test_checkov_skips_exactly_the_explained_checks() -> None:
    """GIVEN checkov run on the template (offline) THEN it fails nothing, and every check it reports as
    skipped is one the template's Metadata explains for that resource."""
    if not (TOOLS / "checkov").exists():
        pytest.fail("checkov is not installed: run `make install` (it creates .venv-tools)")
    done = subprocess.run(
        [str(TOOLS / "checkov"), "-f", str(TEMPLATE), "--framework", "cloudformation", "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=REPO_ROOT,
    )
    report = json.loads(done.stdout)
    results = (report[0] if isinstance(report, list) else report)["results"]
    assert results["failed_checks"] == []
    explained = {(name, check) for name, items in checkov_skips().items() for check, _ in items}
    skipped = {(s["resource"].split(".", 1)[1], s["check_id"]) for s in results["skipped_checks"]}
    assert skipped <= explained


def environment_variables() -> Iterator[tuple[str, str, Any]]:
    """(resource, variable, value) of every environment the template sets: Globals, functions, containers."""
    globals_env = template().get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {})
    for variable, value in globals_env.items():
        yield "Globals", variable, value
    for name, resource in resources():
        props = resource.get("Properties", {})
        for variable, value in props.get("Environment", {}).get("Variables", {}).items():
            yield name, variable, value
        for container in props.get("ContainerDefinitions", []):
            for entry in container.get("Environment", []):
                for item in branches(entry):
                    yield name, item["Name"], item["Value"]


def test_no_environment_variable_carries_the_token() -> None:
    """GIVEN every environment variable the template sets (Lambda globals and functions, the copier
    container) THEN none is HF_TOKEN and none takes its value from the token parameter: the token
    only ever travels as a Secrets Manager ARN (HF_TOKEN_SECRET_ARN), read at run time."""
    variables = list(environment_variables())
    assert any(variable == "HF_TOKEN_SECRET_ARN" for _, variable, _ in variables)
    assert [
        (where, variable) for where, variable, _ in variables if variable in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN")
    ] == []
    token_parameters = {name for name in template()["Parameters"] if "token" in name.lower()}
    assert token_parameters == {"HfTokenSecretArn"}, "the only token parameter is the secret's ARN"
    for where, variable, value in variables:
        if "HfTokenSecretArn" in json.dumps(value):
            assert variable == "HF_TOKEN_SECRET_ARN", (where, variable)


# ---------------------------------------------------------------------------------------------
# Controls that must not go (issue 13): each is an entry of `make mutants` too
# ---------------------------------------------------------------------------------------------

S3_OBJECT_WRITES = ("s3:PutObject", "s3:DeleteObject", "s3:DeleteObjectVersion", "s3:AbortMultipartUpload")


def sub_text(value: Any) -> str:
    """The text of a resource: a plain string, or a Fn::Sub's template (with its variables' own text)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Sub" in value:
        sub = value["Fn::Sub"]
        return sub if isinstance(sub, str) else str(sub[0])
    return json.dumps(value)


def test_every_s3_object_grant_is_under_the_cache_or_work_prefix() -> None:
    """GIVEN every Allow of an S3 object action  THEN each resource is an object key under `${CachePrefix}/` or
    `${WorkPrefix}/` of the cache bucket (or the replica bucket, for the replication role), or, for reads by the
    Ray pods' boundary, the loader's releases (`model-cache-loader/`, model_cache.operations.loader_release):
    no `${Bucket}/*`."""
    outside = []
    for statement in all_statements():
        if statement.effect != "Allow" or not any(a.startswith("s3:") and "Bucket" not in a for a in statement.actions):
            continue
        if statement.where.startswith("ReplicationPolicy") or statement.where == "CacheBucketPolicy":
            continue
        for resource in (branch for each in statement.resources for branch in branches(each)):
            text = sub_text(resource)
            if text.startswith("arn:${AWS::Partition}:s3:::${Bucket}") and text.endswith("${Bucket}"):
                continue  # the bucket itself (ListBucket), checked by the prefix-condition test
            if set(statement.actions) <= {"s3:GetObject", "s3:GetObjectVersion"} and text.endswith(
                "${Bucket}/model-cache-loader/*"
            ):
                continue  # the loader's releases, read-only, beside the cache prefix
            if not re.search(r"\$\{Bucket\}/\$\{(CachePrefix|GatedPrefix|WorkPrefix)\}/", text):
                outside.append((statement.where, statement.body.get("Sid"), text))
    assert outside == []


def test_no_pipeline_role_may_delete_a_cached_version() -> None:
    """GIVEN every Allow of s3:DeleteObjectVersion  THEN it is on the work prefix only: no role can destroy a
    version under the cache prefix (a bad write is taken off its key with a delete marker instead)."""
    grants = [
        (statement.where, sub_text(resource))
        for statement in all_statements()
        if statement.effect == "Allow" and "s3:DeleteObjectVersion" in statement.actions
        for resource in statement.resources
    ]
    assert grants, "the cleanup function deletes its work files' versions"
    assert [grant for grant in grants if "/${WorkPrefix}/" not in grant[1]] == []


def test_every_list_grant_is_bound_to_a_prefix() -> None:
    """GIVEN every Allow of s3:ListBucket or s3:ListBucketVersions  THEN it carries an s3:prefix condition
    naming only the cache or work prefix (the replication role's is the exception S3 replication needs)."""
    unbound = []
    for statement in all_statements():
        if statement.effect != "Allow" or statement.where.startswith("Replication"):
            continue
        if not {"s3:ListBucket", "s3:ListBucketVersions"} & set(statement.actions):
            continue
        prefixes = as_list(statement.body.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []))
        texts = [sub_text(branch) for prefix in prefixes for branch in branches(prefix)]
        allowed = ("${CachePrefix}/", "${GatedPrefix}/", "${WorkPrefix}/")
        if not texts or not all(text.startswith(allowed) for text in texts):
            unbound.append((statement.where, statement.body.get("Sid"), texts))
    assert unbound == []


def test_the_pods_may_list_exactly_the_cache_prefix() -> None:
    """GIVEN the pods' managed policy  THEN its s3:prefix list is exactly the cache prefix and what is under it
    (equality, so an added '*' or another prefix is caught)."""
    policy = template()["Resources"]["PodReadOnlyPolicy"]["Properties"]["PolicyDocument"]
    lists = [s for s in statements_of(policy, "PodReadOnlyPolicy") if "s3:ListBucket" in s.actions]
    assert len(lists) == 1
    prefixes = [sub_text(p) for p in as_list(lists[0].body["Condition"]["StringLike"]["s3:prefix"])]
    assert sorted(prefixes) == ["${CachePrefix}/", "${CachePrefix}/*"]


def test_the_tls_deny_covers_the_bucket_and_its_objects_exactly() -> None:
    """GIVEN the TLS-only deny  THEN its resources are exactly the bucket and every object in it."""
    policy = template()["Resources"]["CacheBucketPolicy"]["Properties"]["PolicyDocument"]
    [deny] = [s for s in statements_of(policy, "CacheBucketPolicy") if s.body.get("Sid") == "DenyInsecureTransport"]
    assert deny.resources == [{"Fn::GetAtt": ["CacheBucket", "Arn"]}, {"Fn::Sub": "${CacheBucket.Arn}/*"}]
    assert deny.actions == ["s3:*"]


def test_only_the_pipeline_roles_may_write_under_the_cache_prefix() -> None:
    """GIVEN the bucket policy  THEN a Deny for every principal covers every write and delete under the cache
    prefix and of the loader release unless the principal is one of the roles that write it (and only those) or
    matches OperatorPrincipalArns (only when the parameter is set)."""
    policy = template()["Resources"]["CacheBucketPolicy"]["Properties"]["PolicyDocument"]
    [deny] = [
        s for s in statements_of(policy, "CacheBucketPolicy") if s.body.get("Sid") == "OnlyThePipelineWritesTheCache"
    ]
    assert deny.effect == "Deny"
    assert deny.body["Principal"] == "*"
    assert set(S3_OBJECT_WRITES) - {"s3:AbortMultipartUpload"} <= set(deny.actions)
    assert deny.resources == [
        {"Fn::Sub": "${CacheBucket.Arn}/${CachePrefix}/*"},
        {"Fn::If": ["HasGatedPrefix", {"Fn::Sub": "${CacheBucket.Arn}/${GatedPrefix}/*"}, {"Ref": "AWS::NoValue"}]},
        {"Fn::Sub": "${CacheBucket.Arn}/model-cache-loader/*"},
    ]
    assert deny.body["Condition"]["ArnNotLike"] == {
        "Fn::If": ["HasOperators", {"aws:PrincipalArn": {"Ref": "OperatorPrincipalArns"}}, {"Ref": "AWS::NoValue"}]
    }
    writers = deny.body["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    # (the copier's role exists only on a stack with the Fargate copier)
    named = [role["Fn::If"][1] if "Fn::If" in role else role for role in writers]
    assert {"Fn::If": ["HasCopier", {"Fn::GetAtt": ["CopierTaskRole", "Arn"]}, {"Ref": "AWS::NoValue"}]} in writers
    assert sorted(role["Fn::GetAtt"][0] for role in named) == sorted(
        [
            "PlanFunctionRole",
            "CopyUnitFunctionRole",
            "FinalizeFunctionRole",
            "PublishFunctionRole",
            "CleanupFunctionRole",
            "GcFunctionRole",
            "CopierTaskRole",
        ]
    )


def test_incomplete_uploads_are_aborted_by_the_lifecycle() -> None:
    """GIVEN the created bucket  THEN a lifecycle rule aborts incomplete multipart uploads, bucket-wide."""
    rules = template()["Resources"]["CacheBucket"]["Properties"]["LifecycleConfiguration"]["Rules"]
    aborting = [rule for rule in rules if "AbortIncompleteMultipartUpload" in rule]
    assert len(aborting) == 1
    assert aborting[0]["Status"] == "Enabled"
    assert "Prefix" not in aborting[0]
    assert "Filter" not in aborting[0]


def test_the_hub_token_is_read_from_its_one_secret_only() -> None:
    """GIVEN every grant of secretsmanager:GetSecretValue  THEN its resource is exactly the HfTokenSecretArn
    parameter (never `secret:*` or a pattern)."""
    grants = [s for s in all_statements() if "secretsmanager:GetSecretValue" in s.actions]
    assert grants
    assert all(s.resources == [{"Ref": "HfTokenSecretArn"}] for s in grants), [(s.where, s.resources) for s in grants]


def test_the_state_machine_logs_no_execution_data() -> None:
    """GIVEN the state machine's logging  THEN IncludeExecutionData is false (inputs name repos and requesters)."""
    logging_config = template()["Resources"]["ModelCacheStateMachine"]["Properties"]["Logging"]
    assert logging_config["IncludeExecutionData"] is False


def test_every_kms_grant_is_through_s3_only() -> None:
    """GIVEN every Allow of kms:Decrypt or kms:GenerateDataKey  THEN it holds only via S3 (kms:ViaService), so
    the key cannot be used directly by a role that reads the cache."""
    grants = [s for s in all_statements() if s.effect == "Allow" and any(a.startswith("kms:") for a in s.actions)]
    assert grants
    for statement in grants:
        via = statement.body.get("Condition", {}).get("StringEquals", {}).get("kms:ViaService")
        assert via is not None, (statement.where, statement.body.get("Sid"))
        assert sub_text(via).startswith("s3.${"), (statement.where, via)


def test_cache_and_work_prefixes_must_differ() -> None:
    """GIVEN the template's Rules  THEN one asserts CachePrefix differs from the work prefix the Settings mapping
    holds (the work files' expiry would otherwise expire the cache); Rules read parameters only, so the rule
    names the mapping's value."""
    work_prefix = template()["Mappings"]["Settings"]["Stack"]["WorkPrefix"]
    assertions = template()["Rules"]["CacheAndWorkPrefixesDiffer"]["Assertions"]
    assert assertions[0]["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "CachePrefix"}, work_prefix]}]}


def trust_statements() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for name, resource in resources("AWS::IAM::Role"):
        for statement in as_list(resource["Properties"]["AssumeRolePolicyDocument"]["Statement"]):
            found.append((name, statement))
    return found


def test_every_role_is_assumed_by_one_aws_service_of_this_account_only() -> None:
    """GIVEN every role's trust policy  THEN its principal is one AWS service (no account, no '*') and the
    assumption is bound to this account's resources (aws:SourceArn or aws:SourceAccount)."""
    trusts = trust_statements()
    assert trusts
    for name, statement in trusts:
        assert statement["Effect"] == "Allow"
        assert set(statement["Principal"]) == {"Service"}, name
        assert isinstance(statement["Principal"]["Service"], str), name
        condition = json.dumps(statement.get("Condition", {}))
        assert "aws:SourceArn" in condition or "aws:SourceAccount" in condition, name


def test_the_copier_execution_role_pulls_only_its_image_and_logs_only_its_group() -> None:
    """GIVEN the copier's execution role  THEN it has no managed policy (AmazonECSTaskExecutionRolePolicy grants
    every repository and log group) and its grants name the copier's repository and log group."""
    role = template()["Resources"]["CopierExecutionRole"]["Properties"]
    assert "ManagedPolicyArns" not in role
    statements = {s.body["Sid"]: s for s in all_statements() if s.where.startswith("CopierExecutionRole/")}
    assert "repository/${Name}" in sub_text(statements["PullTheCopierImage"].resources[0])
    assert statements["WriteTheCopierLogs"].resources == [{"Fn::Sub": "${CopierLogGroup.Arn}:*"}]


def test_only_listed_or_tagged_principals_may_send_requests() -> None:
    """GIVEN the request queue's policy  THEN SendMessage is denied to every principal that is neither listed in
    RequestSenderPrincipalArns nor tagged model-cache-sender=true, except the request function's own role
    (which sends a request deferred for capacity back with a delay)."""
    policy = template()["Resources"]["RequestQueuesPolicy"]["Properties"]["PolicyDocument"]
    [deny] = [s for s in statements_of(policy, "RequestQueuesPolicy") if s.body.get("Sid") == "DenyUnlistedSenders"]
    assert deny.effect == "Deny"
    assert deny.actions == ["sqs:SendMessage"]
    listed, tagged_only = deny.body["Condition"]["Fn::If"][1:]
    request_role = {"Fn::GetAtt": ["RequestFunctionRole", "Arn"]}
    senders = {"Fn::Join": [",", {"Ref": "RequestSenderPrincipalArns"}]}
    listed_or_request_role = {"Fn::Split": [",", {"Fn::Join": [",", [senders, request_role]]}]}
    assert listed["ArnNotLike"] == {"aws:PrincipalArn": listed_or_request_role}
    assert tagged_only["ArnNotLike"] == {"aws:PrincipalArn": request_role}
    assert (
        listed["StringNotEquals"] == tagged_only["StringNotEquals"] == {"aws:PrincipalTag/model-cache-sender": "true"}
    )


# ---------------------------------------------------------------------------------------------
# The Ray pods' permissions boundary against what a kro RayService instance may ask for
# ---------------------------------------------------------------------------------------------

STACK_BUCKET = "model-cache-123456789012"


def boundary_allows(action: str, resource: str, prefixes: list[str]) -> bool:
    """Whether RayPodsPermissionsBoundary allows this S3 request (the stack's bucket and prefix `models`)."""
    import fnmatch

    def concrete(text: str) -> str:
        return (
            text.replace("${AWS::Partition}", "aws")
            .replace("${Bucket}", STACK_BUCKET)
            .replace("${CachePrefix}", "models")
        )

    for statement in statements_of(
        template()["Resources"]["RayPodsPermissionsBoundary"]["Properties"]["PolicyDocument"], "boundary"
    ):
        if statement.effect != "Allow" or action not in statement.actions:
            continue
        if not any(fnmatch.fnmatchcase(resource, concrete(sub_text(each))) for each in statement.resources):
            continue
        allowed = [
            concrete(sub_text(each))
            for each in as_list(statement.body.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []))
        ]
        if prefixes and not all(
            any(fnmatch.fnmatchcase(prefix, pattern) for pattern in allowed) for prefix in prefixes
        ):
            continue
        return True
    return False


def role_grants(bucket: str, prefix: str) -> list[tuple[str, str, list[str]]]:
    """(action, resource, s3:prefix values) the kro RayService's role asks for, rendered for this instance."""
    from conftest import shared_test_module

    kro = shared_test_module("deploy_kro", "tests/deploy/deploy_kro.py")
    role = kro.render_cache_role(bucket, prefix)
    grants = []
    for document in role["spec"]["inlinePolicies"].values():
        for statement in json.loads(document)["Statement"]:
            prefixes = as_list(statement.get("Condition", {}).get("StringLike", {}).get("s3:prefix", []))
            for action in as_list(statement["Action"]):
                for resource in as_list(statement["Resource"]):
                    grants.append((action, resource, prefixes))
    return grants


def test_the_boundary_lets_an_instance_of_the_stacks_cache_read_everything_it_asks_for() -> None:
    # GIVEN an instance naming the stack's bucket and prefix  THEN every grant of its role is inside the boundary
    grants = role_grants(STACK_BUCKET, "models")
    assert grants
    assert [grant for grant in grants if not boundary_allows(*grant)] == []


@pytest.mark.parametrize(
    ("bucket", "prefix"),
    [("other-team-bucket", "models"), (STACK_BUCKET, "team-b/secrets"), (STACK_BUCKET, "gated")],
)
def test_the_boundary_refuses_what_an_instance_names_outside_the_cache(bucket: str, prefix: str) -> None:
    # GIVEN an instance naming another bucket, or another prefix of the stack's bucket (a pattern-valid name)
    grants = role_grants(bucket, prefix)
    # THEN nothing of that other place gets through the boundary: only the loader's release of the
    # stack's own bucket is readable, and from another bucket not even that
    through = [grant for grant in grants if boundary_allows(*grant)]
    if bucket == STACK_BUCKET:
        assert through == [
            (
                "s3:GetObject",
                f"arn:aws:s3:::{STACK_BUCKET}/model-cache-loader/0.1.0/model_cache_loader-0.1.0-py3-none-any.zip",
                [],
            )
        ]
    else:
        assert through == []
