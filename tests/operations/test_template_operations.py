"""Static checks of the operations resources in template.yaml that the linters (`make validate`) do not
make: the shared-cache statements exist only when their parameters are set and only ever read; gc and
replication are least privilege; the dashboard and the alarms name metrics the code really emits."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from conftest import REPO_ROOT

pytestmark = pytest.mark.unit

NO_VALUE = object()
ROLE = "arn:aws:iam::210987654321:role/ray-pods"


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    from cfnlint.decode import decode

    decoded, problems = decode(str(REPO_ROOT / "template.yaml"))
    assert decoded is not None, problems
    return dict(decoded)


def parameters(template: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    values = {name: spec.get("Default", "") for name, spec in template["Parameters"].items()}
    for name, spec in template["Parameters"].items():
        if spec["Type"] == "CommaDelimitedList" and isinstance(values[name], str):
            values[name] = values[name].split(",") if values[name] else [""]
    # The tuning knobs (Mappings: Settings: Stack), overridden by key as an operator edits the mapping.
    values.update(template["Mappings"]["Settings"]["Stack"])
    for name, value in overrides.items():
        if isinstance(values.get(name), list) and isinstance(value, str):
            value = value.split(",") if value else [""]
        values[name] = value
    return values


class Evaluator:
    """Just enough of CloudFormation's condition functions to resolve Fn::If for given parameter values."""

    def __init__(self, template: dict[str, Any], params: dict[str, Any]) -> None:
        self.template = template
        self.params = params

    def condition(self, name: str) -> bool:
        return bool(self.value(self.template["Conditions"][name]))

    def value(self, node: Any) -> Any:
        if isinstance(node, list):
            return [item for item in (self.value(each) for each in node) if item is not NO_VALUE]
        if not isinstance(node, dict):
            return node
        if len(node) == 1:
            ((fn, arg),) = node.items()
            if fn == "Ref":
                return NO_VALUE if arg == "AWS::NoValue" else self.params.get(arg, f"<{arg}>")
            if fn == "Fn::FindInMap":
                return self.params.get(arg[2], f"<{arg[2]}>")
            if fn == "Condition":
                return self.condition(arg)
            if fn == "Fn::If":
                return self.value(arg[1] if self.condition(arg[0]) else arg[2])
            if fn == "Fn::Not":
                return not self.value(arg[0])
            if fn == "Fn::Equals":
                return self.value(arg[0]) == self.value(arg[1])
            if fn == "Fn::And":
                return all(self.value(each) for each in arg)
            if fn == "Fn::Or":
                return any(self.value(each) for each in arg)
            if fn == "Fn::Join":
                return arg[0].join(self.value(arg[1]))
        return {key: value for key, value in ((k, self.value(v)) for k, v in node.items()) if value is not NO_VALUE}


def bucket_statements(template: dict[str, Any], **overrides: Any) -> list[dict[str, Any]]:
    evaluator = Evaluator(template, parameters(template, **overrides))
    statements: list[dict[str, Any]] = evaluator.value(
        template["Resources"]["CacheBucketPolicy"]["Properties"]["PolicyDocument"]["Statement"]
    )
    return statements


def test_empty_sharing_parameters_add_nothing_to_the_bucket_policy(template: dict[str, Any]) -> None:
    """GIVEN the default (empty) sharing parameters  WHEN the bucket policy is resolved
    THEN it holds only the two Deny statements: insecure transport, and writes by anyone but the pipeline."""
    assert [statement["Sid"] for statement in bucket_statements(template)] == [
        "DenyInsecureTransport",
        "OnlyThePipelineWritesTheCache",
    ]


def test_shared_roles_and_an_organization_get_read_only_access_to_the_prefix(template: dict[str, Any]) -> None:
    """GIVEN role ARNs and an organization id  WHEN the bucket policy is resolved
    THEN they get GetObject(Version) on prefix/* and ListBucket bound to the prefix, the organization only
    through aws:PrincipalOrgID, and no statement grants any write or delete."""
    statements = bucket_statements(
        template,
        SharedReadPrincipalArns=[ROLE, "arn:aws:iam::111122223333:role/x"],
        SharedReadOrganizationId="o-abc123def45",
    )
    allows = [s for s in statements if s["Effect"] == "Allow"]
    assert {s["Sid"] for s in allows} == {
        "SharedReadCachedModels",
        "SharedListCachedModels",
        "OrganizationReadCachedModels",
        "OrganizationListCachedModels",
    }
    for statement in allows:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        assert set(actions) <= {"s3:GetObject", "s3:GetObjectVersion", "s3:ListBucket"}
        if "s3:ListBucket" in actions:
            assert statement["Condition"]["StringLike"]["s3:prefix"]
        else:
            assert statement["Resource"] == {"Fn::Sub": "${CacheBucket.Arn}/${CachePrefix}/*"}
        if statement["Sid"].startswith("Organization"):
            assert statement["Principal"] == {"AWS": "*"}
            assert statement["Condition"]["StringEquals"]["aws:PrincipalOrgID"] == "o-abc123def45"
        else:
            assert statement["Principal"] == {"AWS": [ROLE, "arn:aws:iam::111122223333:role/x"]}


def test_replication_is_off_by_default_and_filtered_on_the_prefix_when_on(template: dict[str, Any]) -> None:
    """GIVEN no replica, then a replica bucket  WHEN the bucket is resolved
    THEN there is no replication config, then one rule on `{prefix}/` replicating delete markers, with a role
    that reads only versions under the prefix and writes only under the replica's prefix."""
    bucket = template["Resources"]["CacheBucket"]["Properties"]
    off = Evaluator(template, parameters(template))
    assert off.value({"x": bucket["ReplicationConfiguration"]}) == {}
    assert not off.condition("Replicate")
    on = Evaluator(template, parameters(template, ReplicaBucketName="model-cache-replica-eu"))
    config = on.value(bucket["ReplicationConfiguration"])
    (rule,) = config["Rules"]
    assert rule["Filter"] == {"Prefix": {"Fn::Sub": "${CachePrefix}/"}}
    assert rule["DeleteMarkerReplication"] == {"Status": "Enabled"}
    assert rule["Destination"]["Bucket"] == {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ReplicaBucketName}"}
    assert template["Resources"]["ReplicationRole"]["Condition"] == "Replicate"
    policy = on.value(template["Resources"]["ReplicationPolicy"]["Properties"]["PolicyDocument"])
    resources = {s["Sid"]: s["Resource"] for s in policy["Statement"]}
    assert resources["ReadVersionsUnderThePrefix"] == {"Fn::Sub": "${CacheBucket.Arn}/${CachePrefix}/*"}
    assert resources["ReplicateUnderThePrefix"] == {
        "Fn::Sub": "arn:${AWS::Partition}:s3:::${ReplicaBucketName}/${CachePrefix}/*"
    }
    assert "DecryptTheSource" not in resources  # SSE-S3 by default: no KMS statements


def test_the_gc_function_may_delete_only_current_versions_under_the_prefix(template: dict[str, Any]) -> None:
    """GIVEN the gc function  THEN its role lists only the prefix (and the claims folder), reads and deletes
    only prefix/*, writes and deletes its marks only under the work prefix's claims/, never deletes object
    versions, and its schedule is off by default."""
    gc = template["Resources"]["GcFunction"]["Properties"]
    statements = gc["Policies"][0]["Statement"]
    actions = {s["Sid"]: s["Action"] for s in statements}
    assert actions == {
        "ListOnlyThePrefix": "s3:ListBucket",
        "MarkSnapshotsBeingDeleted": ["s3:PutObject", "s3:DeleteObject"],
        "ReadRefsAndManifests": "s3:GetObject",
        "DeleteOnlyUnderThePrefix": "s3:DeleteObject",
    }
    for statement in statements:
        if statement["Action"] == "s3:ListBucket":
            assert statement["Condition"]["StringLike"]["s3:prefix"]
        elif statement["Sid"] == "MarkSnapshotsBeingDeleted":
            assert statement["Resource"]["Fn::Sub"][0].endswith("/${WorkPrefix}/claims/*")
        else:
            cache, gated = statement["Resource"]
            assert cache["Fn::Sub"][0].endswith("/${CachePrefix}/*")
            assert gated["Fn::If"][1]["Fn::Sub"][0].endswith("/${GatedPrefix}/*")
    assert "DeleteObjectVersion" not in json.dumps(gc)
    schedule = gc["Events"]["CollectGarbage"]
    assert schedule["Type"] == "ScheduleV2"
    assert schedule["Properties"]["State"] == {"Fn::FindInMap": ["Settings", "Stack", "GcScheduleState"]}
    assert template["Mappings"]["Settings"]["Stack"]["GcScheduleState"] == "DISABLED"


def emitted_names() -> str:
    """The source of everything that emits metrics: handlers, the core metrics module, the loader."""
    sources = [path.read_text() for path in (REPO_ROOT / "functions").glob("*/app.py")]
    sources.append((REPO_ROOT / "layers/core/model_cache/adapters/task_metrics.py").read_text())
    sources.append((REPO_ROOT / "loader/src/model_cache_loader/metrics.py").read_text())
    return "\n".join(sources)


def test_the_dashboard_and_alarms_name_only_metrics_the_code_emits(template: dict[str, Any]) -> None:
    """GIVEN the dashboard body and the loader miss-rate alarm  THEN every ModelCache / loader metric they
    name is emitted somewhere in the code (a renamed metric would leave an empty graph or a silent alarm)."""
    body = template["Resources"]["Dashboard"]["Properties"]["DashboardBody"]["Fn::Sub"][0]
    widgets = json.loads(re.sub(r"\$\{[^}]+\}", "x", body))["widgets"]
    named: set[str] = set()
    for widget in widgets:
        for row in widget["properties"].get("metrics", []):
            strings = [item for item in row if isinstance(item, str)]
            if len(strings) >= 2 and strings[0] in ("ModelCache", "x"):  # "x" is the loader namespace variable
                named.add(strings[1])
            for item in row:
                if isinstance(item, dict) and "expression" in item:
                    named.update(re.findall(r'MetricName=\\?"(\w+)', item["expression"]))
    alarm = template["Resources"]["LoaderMissRateAlarm"]["Properties"]["Metrics"]
    named.update(m["MetricStat"]["Metric"]["MetricName"] for m in alarm if "MetricStat" in m)
    assert {"BytesFromHub", "BytesCopiedInS3", "ExecutionFailuresByCause", "CacheHit", "CacheMiss"} <= named
    source = emitted_names()
    missing = sorted(name for name in named if f'"{name}"' not in source and f"'{name}'" not in source)
    assert missing == []
    titles = {widget["properties"]["title"] for widget in widgets}
    assert {"Loader miss rate (%)", "Failures by cause", "Alarms"} <= titles
