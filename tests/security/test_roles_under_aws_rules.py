"""Issue 22's table, re-run under AWS's rules: every principal runs the real task code with exactly its role.

Each row of the review that evaluated the roles on AWS is a test here. The roles, the boundary and
the bucket policy are rendered from template.yaml (and the kro RGD) for the stack the test deploys
(model_cache_devtools.stack_iam); the code signs with that role's keys (s3_authz.acting_as, or the
role's keys in a subprocess's environment), and the world in front of moto decides as S3 and IAM do.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from conftest import REGION, MotoEndpoint, client_as, shared_test_module, unique_name

from model_cache.adapters.s3 import s3_client
from model_cache.contract import layout
from model_cache.contract.errors import AccessDenied
from model_cache.pipeline import publish, refresh, tracked
from model_cache.pipeline.s3_copy import _key_exists
from model_cache_devtools import modelgen, s3_authz, stack_iam
from model_cache_devtools.local_pipeline import Router, Stack, create_stack, executing_state_machines, install_routes
from model_cache_devtools.s3_authz import Principal

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

TINY = modelgen.TINY_MODEL
OPERATOR_ARN = f"arn:aws:iam::{s3_authz.ACCOUNT}:role/model-cache-operators"


@pytest.fixture
def router(aws: MotoEndpoint, hf_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Router]:
    with executing_state_machines(aws):
        yield install_routes(monkeypatch, aws)


@pytest.fixture
def unversioned_bucket(s3: Any) -> str:
    """A bucket that never had versioning (the `bucket` fixture's is versioned): no version ids anywhere."""
    name = unique_name("model-cache-roles")
    s3.create_bucket(Bucket=name)
    return name


def role(stack: Stack, name: str) -> Principal:
    assert stack.iam is not None
    return stack.iam.roles[name]


def published(stack: Stack, repo_id: str = TINY) -> dict[str, Any]:
    """Cache `repo_id` through the state machine (every task under its own role); its root manifest."""
    execution = stack.run({"repo_id": repo_id})
    assert execution["status"] == "SUCCEEDED", (execution.get("error"), execution.get("cause", "")[:500])
    s3 = boto3.client("s3", region_name=REGION)
    key = layout.root_manifest_key(stack.prefix, repo_id)
    manifest: dict[str, Any] = json.loads(s3.get_object(Bucket=stack.bucket, Key=key)["Body"].read())
    return manifest


def denied(call: Any, **kwargs: Any) -> bool:
    try:
        call(**kwargs)
    except ClientError as exc:
        return exc.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    return False


def test_publish_reads_a_commits_missing_manifest_as_absent_and_publishes_it(
    router: Router, aws: MotoEndpoint, unversioned_bucket: str
) -> None:
    # GIVEN a stack on an unversioned bucket and a commit never published
    bucket = unversioned_bucket
    stack = create_stack(aws, router, bucket)
    missing = layout.manifest_key(stack.prefix, TINY, "a" * 40)
    # WHEN Publish's role reads manifests/{commit}.json (its first-publish check)
    with s3_authz.acting_as(role(stack, "PublishFunctionRole")):
        found = publish.get_json(s3_client(), bucket, missing)
    # THEN it is absent, not AccessDenied, and the whole first publish succeeds under the roles
    assert found is None
    assert published(stack)["repo_id"] == TINY


def test_plan_checks_a_reusable_file_by_its_pinned_version(router: Router, aws: MotoEndpoint, bucket: str) -> None:
    # GIVEN a snapshot published into a versioned bucket (its manifest pins each file's version)
    stack = create_stack(aws, router, bucket)
    entry = next(item for item in published(stack)["files"] if item.get("version_id") and item.get("crc64nvme"))
    # WHEN Plan's role checks it for reuse by a refresh (a HEAD with versionId)
    with s3_authz.acting_as(role(stack, "PlanFunctionRole")):
        source = refresh._checked_source(s3_client(), bucket, entry)
    # THEN the pinned version is found and offered as the copy source
    assert source is not None
    assert source.version_id == entry["version_id"]


def test_copy_unit_sees_a_missing_destination_and_copies_from_a_pinned_source(
    router: Router, aws: MotoEndpoint, bucket: str
) -> None:
    stack = create_stack(aws, router, bucket)
    entry = next(item for item in published(stack)["files"] if item.get("version_id"))
    for copier, commit in (("CopyUnitFunctionRole", "b" * 40), ("CopierTaskRole", "d" * 40)):
        destination = layout.file_key(stack.prefix, TINY, commit, entry["path"])
        with s3_authz.acting_as(role(stack, copier)):
            client = s3_client()
        # WHEN the copy role looks for its destination, then copies the pinned version of the source
        assert _key_exists(client, bucket, destination) is False
        source = {"Bucket": bucket, "Key": entry["key"], "VersionId": entry["version_id"]}
        client.copy_object(Bucket=bucket, Key=destination, CopySource=source)
        # THEN the copy holds the verified bytes
        assert _key_exists(client, bucket, destination) is True


def test_tracked_models_reads_the_cached_refs_and_manifests(router: Router, aws: MotoEndpoint, bucket: str) -> None:
    # GIVEN one model cached
    stack = create_stack(aws, router, bucket)
    published(stack)
    # WHEN the scheduled refresh's TrackedModels role lists what to refresh
    with s3_authz.acting_as(role(stack, "TrackedModelsFunctionRole")):
        models = tracked.tracked_models(s3_client(), bucket, stack.prefix, "")
    # THEN the cached model is there
    assert [(model["repo_id"], model["revision"]) for model in models] == [(TINY, "main")]


def test_the_request_lambda_takes_a_missing_ref_for_not_cached(
    router: Router, aws: MotoEndpoint, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from model_cache.pipeline.request_message import cached_result_stands, parse_request

    # GIVEN a stack with nothing cached
    stack = create_stack(aws, router, bucket)
    monkeypatch.setenv("MODEL_CACHE_BUCKET", bucket)
    monkeypatch.setenv("MODEL_CACHE_PREFIX", stack.prefix)
    # WHEN the request Lambda's role asks whether a finished execution's result stands
    with s3_authz.acting_as(role(stack, "RequestFunctionRole")):
        stands = cached_result_stands(parse_request(TINY))
    # THEN a missing ref means "run again" (False), not an AccessDenied that sends the message to the DLQ
    assert stands is False


def test_the_request_lambda_takes_execution_slots_and_writes_nothing_else(
    router: Router, aws: MotoEndpoint, bucket: str
) -> None:
    from model_cache.pipeline import inflight

    # GIVEN a stack with no execution slot taken yet
    stack = create_stack(aws, router, bucket)
    with s3_authz.acting_as(role(stack, "RequestFunctionRole")):
        client = s3_client()
        ledger = inflight.InFlightLedger(client, bucket, inflight.ledger_key(stack.work_prefix), limit=2, running=set)
        # WHEN the request Lambda's role takes two slots (creating the ledger, then over its ETag)
        ledger.take("first", "AIDAONE")
        ledger.take("second", "AIDATWO")
        # THEN the third is refused for capacity, not for access
        with pytest.raises(inflight.Full):
            ledger.take("third", "AIDATHREE")
        # AND the same writes anywhere else in the work prefix (a run's claim) are denied
        claim_key = f"{stack.work_prefix}/claims/{stack.prefix}/forged.json"
        with pytest.raises(AccessDenied):
            inflight.InFlightLedger(client, bucket, claim_key, limit=2, running=set).take("x", "AIDAONE")


def test_the_request_lambda_may_defer_to_its_queue_and_no_further(
    router: Router, aws: MotoEndpoint, bucket: str
) -> None:
    # GIVEN the stack's request queue under the template's queue policy (no consumer: nothing runs afterwards)
    stack = create_stack(aws, router, bucket)
    assert stack.iam is not None
    assert stack.iam.queue_policy is not None
    admin = boto3.client("sqs", region_name=REGION)
    queue_url = admin.create_queue(QueueName=f"{stack.stack_name}-requests")["QueueUrl"]
    admin.set_queue_attributes(QueueUrl=queue_url, Attributes={"Policy": json.dumps(stack.iam.queue_policy)})
    dlq_url = admin.create_queue(QueueName=f"{stack.stack_name}-requests-dlq")["QueueUrl"]
    admin.set_queue_attributes(QueueUrl=dlq_url, Attributes={"Policy": json.dumps(stack.iam.queue_policy)})
    request_role = role(stack, "RequestFunctionRole")

    def send(who: Principal, url: str) -> str:
        try:
            client_as(who, "sqs").send_message(QueueUrl=url, MessageBody=TINY, DelaySeconds=30)
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "sent"

    # WHEN the request Lambda's role sends a deferred request back  THEN it may, untagged and unlisted
    assert send(request_role, queue_url) == "sent"
    # AND it may not send to the dead-letter queue; a role with its policy but another name may not send at all
    assert send(request_role, dlq_url) == "AccessDenied"
    impostor = s3_authz.active().register(
        Principal(f"arn:aws:iam::{s3_authz.ACCOUNT}:role/impostor-{stack.suffix}", request_role.identity)
    )
    assert send(impostor, queue_url) == "AccessDenied"


def rgd_pod_role(stack: Stack, kms_key_arn: str = "") -> Principal:
    """The kro RayService's pod role for this stack's bucket, bounded by the stack's boundary."""
    kro = shared_test_module("deploy_kro", "tests/deploy/deploy_kro.py")
    rendered = kro.render_cache_role(stack.bucket, stack.prefix, s3_authz.ACCOUNT, kms_key_arn=kms_key_arn)["spec"]
    assert stack.iam is not None
    return s3_authz.active().register(
        Principal(
            f"arn:aws:iam::{s3_authz.ACCOUNT}:role/{rendered['name']}",
            [json.loads(document) for document in rendered["inlinePolicies"].values()],
            boundary=stack.iam.managed_policies[stack_iam.PODS_BOUNDARY],
        )
    )


def loader_pull(who: Principal, stack: Stack, repo_id: str, cache: str) -> subprocess.CompletedProcess[str]:
    """`model-cache-loader pull` as the init container runs it, with the pod role's keys."""
    env = {
        **os.environ,
        **who.credentials(),
        "MODEL_CACHE_BUCKET": stack.bucket,
        "MODEL_CACHE_PREFIX": stack.prefix,
        "HF_HUB_CACHE": cache,
    }
    command = [sys.executable, "-m", "model_cache_loader", "pull", repo_id, "--fallback", "error"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def managed_policy_pod_role(stack: Stack) -> Principal:
    """A pod role with the stack's PodReadOnlyPolicy attached, bounded by the stack's boundary."""
    assert stack.iam is not None
    return s3_authz.active().register(stack_iam.pod_principal(stack.iam, f"ray-pods-{stack.suffix}"))


@pytest.mark.parametrize("pod_role", [rgd_pod_role, managed_policy_pod_role], ids=["kro RGD role", "PodReadOnlyPolicy"])
def test_a_pod_role_under_the_boundary_pulls_and_misses_cleanly(
    router: Router, aws: MotoEndpoint, bucket: str, tmp_path: Any, pod_role: Any
) -> None:
    # GIVEN a model cached in a versioned bucket (every file GET pinned to its version_id)
    stack = create_stack(aws, router, bucket)
    published(stack)
    pod = pod_role(stack)
    # WHEN the init container pulls it with the RGD's role under the stack's boundary
    pulled = loader_pull(pod, stack, TINY, str(tmp_path / "hub"))
    # THEN it is pulled from S3
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    # AND a model that is not cached is a miss (exit 3, the pod starts and falls back), not a denial (5)
    missing = loader_pull(pod, stack, "test-org/never-cached", str(tmp_path / "hub2"))
    assert missing.returncode == 3, missing.stderr[-2000:]
    # AND the pod can write nothing
    with s3_authz.acting_as(pod):
        client = s3_client()
    assert denied(client.put_object, Bucket=bucket, Key=f"{stack.prefix}/x", Body=b"x")


@pytest.fixture
def customer_key(aws: MotoEndpoint) -> str:
    kms = boto3.client("kms", region_name=REGION, endpoint_url=aws.url)
    return str(kms.create_key(Description="model cache")["KeyMetadata"]["Arn"])


def test_with_a_customer_kms_key_the_pipeline_refresh_gc_requests_and_pods_work(
    router: Router, aws: MotoEndpoint, bucket: str, customer_key: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from model_cache.operations import gc
    from model_cache.pipeline import inflight
    from model_cache.pipeline.request_message import cached_result_stands, parse_request

    # GIVEN a stack whose bucket encrypts with a customer managed key (KmsKeyArn)
    stack = create_stack(aws, router, bucket, kms_key_arn=customer_key)
    # WHEN a model is cached: the Distributed Map reads units.json, every task reads and writes SSE-KMS
    manifest = published(stack)
    # AND an older snapshot no ref names lies beside it, for gc to take away (its marker is an SSE-KMS write)
    admin = boto3.client("s3", region_name=REGION)
    stale = "e" * 40
    admin.put_object(Bucket=bucket, Key=layout.file_key(stack.prefix, TINY, stale, "config.json"), Body=b"{}")
    admin.put_object(
        Bucket=bucket,
        Key=layout.manifest_key(stack.prefix, TINY, stale),
        Body=json.dumps({**manifest, "commit": stale}).encode(),
    )
    # AND the scheduled refresh lists it, and gc reads the manifests and writes its marker
    with s3_authz.acting_as(role(stack, "TrackedModelsFunctionRole")):
        client = s3_client()
        models = tracked.tracked_models(client, bucket, stack.prefix, "")
        listed = tracked.write_tracked_list(
            client, bucket, stack.prefix, "", work_prefix=stack.work_prefix, run_id="kms"
        )
    with s3_authz.acting_as(role(stack, "GcFunctionRole")):
        report = gc.collect(
            s3_client(), bucket, prefix=stack.prefix, keep=0, older_than_days=0, work_prefix=stack.work_prefix
        )
    monkeypatch.setenv("MODEL_CACHE_BUCKET", bucket)
    monkeypatch.setenv("MODEL_CACHE_PREFIX", stack.prefix)
    with s3_authz.acting_as(role(stack, "RequestFunctionRole")):
        stands = cached_result_stands(parse_request(f"{TINY}@{manifest['commit']}"))
        # AND the request Lambda takes an execution slot (an SSE-KMS write and read of the ledger)
        ledger = inflight.InFlightLedger(
            s3_client(), bucket, inflight.ledger_key(stack.work_prefix), limit=1, running=set
        )
        ledger.take("kms-slot", "AIDAONE")
        with pytest.raises(inflight.Full):
            ledger.take("kms-slot-2", "AIDATWO")
    pulled = loader_pull(managed_policy_pod_role(stack), stack, TINY, str(tmp_path / "hub"))
    pulled_by_rgd_pod = loader_pull(rgd_pod_role(stack, customer_key), stack, TINY, str(tmp_path / "hub-rgd"))
    without_key = loader_pull(rgd_pod_role(stack), stack, TINY, str(tmp_path / "hub-rgd-no-key"))
    # THEN all of it succeeded under the roles: the published snapshot is kept, the stale one deleted
    assert [model["repo_id"] for model in models] == [TINY]
    assert listed["count"] == 1
    assert report.deleted_snapshots == 1
    assert sorted(decision.commit for decision in report.decisions if decision.action == "delete") == [stale]
    assert stands is True
    assert pulled.returncode == 0, pulled.stderr[-2000:]
    # AND a kro RGD pod given the key (modelCacheKmsKeyArn) pulls; one without it is refused (exit 5, not a miss)
    assert pulled_by_rgd_pod.returncode == 0, pulled_by_rgd_pod.stderr[-2000:]
    assert without_key.returncode == 5, without_key.stderr[-2000:]
    # AND gc took its marker away again (no claim is left to block a later run of that commit)
    claims = admin.list_objects_v2(Bucket=bucket, Prefix=f"{stack.work_prefix}/claims/").get("Contents", [])
    assert [item["Key"] for item in claims] == []
    # AND no role reads the key's data without the grant: the pods' policy without KMS is refused
    plain_pod = s3_authz.active().register(
        Principal(
            f"arn:aws:iam::{s3_authz.ACCOUNT}:role/pod-without-kms",
            [{"Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"], "Resource": "*"}]}],
        )
    )
    with s3_authz.acting_as(plain_pod):
        assert denied(s3_client().get_object, Bucket=bucket, Key=layout.root_manifest_key(stack.prefix, TINY))


def test_operators_may_write_the_cache_and_no_one_else_outside_the_pipeline(
    router: Router, aws: MotoEndpoint, bucket: str
) -> None:
    # GIVEN a stack whose OperatorPrincipalArns names the operators' role
    stack = create_stack(aws, router, bucket, operator_arns=(OPERATOR_ARN,))
    administrator = s3_authz.ADMINISTRATOR_ACCESS
    operator = s3_authz.active().register(Principal(OPERATOR_ARN, [administrator]))
    team_admin = s3_authz.active().register(
        Principal(f"arn:aws:iam::{s3_authz.ACCOUNT}:role/data-platform-admin", [administrator])
    )
    key = layout.ref_key(stack.prefix, TINY, "main")
    release = "model-cache-loader/0.1.0/model_cache_loader-0.1.0-py3-none-any.zip"
    # WHEN an operator writes under the cache prefix and the loader release (sync --force, publish-loader)
    with s3_authz.acting_as(operator):
        client = s3_client()
    client.put_object(Bucket=bucket, Key=key, Body=b"c" * 40)
    client.put_object(Bucket=bucket, Key=release, Body=b"zip")
    # THEN that works; an account administrator who is not an operator is refused both, and deletes
    with s3_authz.acting_as(team_admin):
        other = s3_client()
    assert denied(other.put_object, Bucket=bucket, Key=key, Body=b"d" * 40)
    assert denied(other.put_object, Bucket=bucket, Key=release, Body=b"evil")
    assert denied(other.delete_object, Bucket=bucket, Key=key)


def test_each_role_is_refused_outside_its_need(router: Router, aws: MotoEndpoint, bucket: str) -> None:
    # GIVEN a published model and the roles of its stack
    stack = create_stack(aws, router, bucket)
    manifest = published(stack)
    commit = manifest["commit"]
    ref = layout.ref_key(stack.prefix, TINY, "main")
    snapshot_file = layout.file_key(stack.prefix, TINY, commit, "config.json")

    def refused(role_name: str, action: str, **kwargs: Any) -> bool:
        with s3_authz.acting_as(role(stack, role_name)):
            client = s3_client()
        return denied(getattr(client, action), Bucket=bucket, **kwargs)

    # THEN the copiers cannot move a ref or rewrite a manifest; nothing but gc and cleanup deletes
    for copier in ("CopyUnitFunctionRole", "CopierTaskRole"):
        assert refused(copier, "put_object", Key=ref, Body=b"f" * 40)
        assert refused(copier, "put_object", Key=layout.manifest_key(stack.prefix, TINY, commit), Body=b"{}")
        assert refused(copier, "delete_object", Key=snapshot_file)
    # AND plan starts uploads of snapshot files only
    assert refused("PlanFunctionRole", "put_object", Key=ref, Body=b"f" * 40)
    # AND publish writes no snapshot file and deletes nothing
    assert refused("PublishFunctionRole", "put_object", Key=snapshot_file, Body=b"{}")
    assert refused("PublishFunctionRole", "delete_object", Key=ref)
    # AND no pipeline role reads or writes outside the cache and work prefixes, nor destroys a version
    for name in stack_iam.FUNCTION_ROLES.values():
        assert refused(name, "put_object", Key="elsewhere/x", Body=b"x")
    # AND a 403 on a key that exists stays a denial: the role's listing holds the key, so it is not a miss
    with s3_authz.acting_as(role(stack, "RequestFunctionRole")), pytest.raises(AccessDenied):
        publish.get_json(s3_client(), bucket, snapshot_file)
    version = boto3.client("s3", region_name=REGION).head_object(Bucket=bucket, Key=snapshot_file)["VersionId"]
    for name in ("FinalizeFunctionRole", "GcFunctionRole", "CleanupFunctionRole"):
        assert refused(name, "delete_object", Key=snapshot_file, VersionId=version)


def test_finalize_takes_its_own_bad_write_off_and_aborts_a_redundant_upload(
    router: Router, aws: MotoEndpoint, bucket: str
) -> None:
    from model_cache.pipeline.multipart import StoredObject, delete_own_write

    # GIVEN an object this run's finalize completed (it failed its check) and an upload another run made redundant
    stack = create_stack(aws, router, bucket)
    admin = boto3.client("s3", region_name=REGION)
    bad = layout.file_key(stack.prefix, TINY, "f" * 40, "model.safetensors")
    etag = admin.put_object(Bucket=bucket, Key=bad, Body=b"bad bytes")["ETag"]
    redundant = admin.create_multipart_upload(Bucket=bucket, Key=bad + ".2")["UploadId"]
    # WHEN finalize's role takes its write off the key and aborts the upload
    with s3_authz.acting_as(role(stack, "FinalizeFunctionRole")):
        client = s3_client()
    removed = delete_own_write(client, bucket, bad, StoredObject(version_id=None, crc64nvme=None, etag=etag))
    client.abort_multipart_upload(Bucket=bucket, Key=bad + ".2", UploadId=redundant)
    # THEN both happened under its own grants
    assert removed is True
    assert admin.list_objects_v2(Bucket=bucket, Prefix=bad).get("Contents", []) == []
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []


def test_cleanup_run_again_after_it_removed_the_work_files_is_a_no_op(
    router: Router, aws: MotoEndpoint, bucket: str
) -> None:
    # GIVEN a run whose cleanup already deleted its work files (plan.json included)
    stack = create_stack(aws, router, bucket)
    published(stack)
    [first] = router.calls("cleanup")
    # WHEN the cleanup task runs again with the same input (a retry after a lost response)
    body, errored = router.run_handler("cleanup", first.event, role(stack, "CleanupFunctionRole"))
    # THEN the missing plan reads as absent, not as AccessDenied, and the retry succeeds
    assert errored is False, body
    assert json.loads(body)["status"] == "cleaned"


def test_plan_undoes_its_uploads_and_its_claim_when_it_cannot_finish(
    router: Router, aws: MotoEndpoint, bucket: str
) -> None:
    from model_cache.pipeline import claims

    # GIVEN a plan that started an upload and wrote its claim, then failed to write plan.json
    stack = create_stack(aws, router, bucket)
    with s3_authz.acting_as(role(stack, "PlanFunctionRole")):
        client = s3_client()
    key = layout.file_key(stack.prefix, TINY, "c" * 40, "model.safetensors")
    upload = client.create_multipart_upload(Bucket=bucket, Key=key)["UploadId"]
    claim = f"{stack.work_prefix}/claims/{layout.repo_slug(TINY)}/{'c' * 40}/run-1"
    client.put_object(Bucket=bucket, Key=claim, Body=b"{}")
    # WHEN its role aborts the upload and releases the claim (steps.plan's failure path)
    client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload)
    claims.release(client, bucket, claim)
    # THEN nothing of the failed plan is left
    admin = boto3.client("s3", region_name=REGION)
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    assert admin.list_objects_v2(Bucket=bucket, Prefix=claim).get("Contents", []) == []


def model_cache_cli(who: Principal, *args: str) -> subprocess.CompletedProcess[str]:
    """A documented operator command, as the operator runs it: the `model-cache` CLI with that role's keys."""
    env = {**os.environ, **who.credentials()}
    command = [sys.executable, "-m", "model_cache.cli.main", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, check=False)


def test_operator_commands_run_as_the_operator_and_no_one_else(router: Router, aws: MotoEndpoint, bucket: str) -> None:
    # GIVEN a stack whose OperatorPrincipalArns names the operators' role (docs/tutorial/deploy.md)
    stack = create_stack(aws, router, bucket, operator_arns=(OPERATOR_ARN,))
    operator = s3_authz.active().register(Principal(OPERATOR_ARN, [s3_authz.ADMINISTRATOR_ACCESS]))
    team_admin = s3_authz.active().register(
        Principal(f"arn:aws:iam::{s3_authz.ACCOUNT}:role/ml-team-admin", [s3_authz.ADMINISTRATOR_ACCESS])
    )
    sync = ("sync", TINY, "--bucket", bucket, "--prefix", stack.prefix)
    # WHEN the operator runs `model-cache sync`, `sync --force` and a manual `gc`
    synced = model_cache_cli(operator, *sync)
    forced = model_cache_cli(operator, *sync, "--force")
    collected = model_cache_cli(
        operator, "gc", "--bucket", bucket, "--prefix", stack.prefix, "--keep", "0", "--older-than", "0"
    )
    # THEN each succeeds under the write protection
    assert synced.returncode == 0, synced.stderr[-2000:]
    assert forced.returncode == 0, forced.stderr[-2000:]
    assert collected.returncode == 0, collected.stderr[-2000:]
    # AND an account administrator who is not an operator is refused the same sync, with the access exit code
    refused = model_cache_cli(team_admin, *sync, "--force")
    assert refused.returncode == AccessDenied.exit_code, refused.stderr[-2000:]


def test_only_tagged_or_listed_senders_may_request_a_model(router: Router, aws: MotoEndpoint, bucket: str) -> None:
    from model_cache_devtools.local_pipeline import add_request_queue

    # GIVEN a stack's request queue under the template's queue policy, and the RequestSenderPolicy output
    stack = create_stack(aws, router, bucket)
    queue_url = add_request_queue(stack)
    assert stack.iam is not None
    sender_policy = stack.iam.managed_policies["RequestSenderPolicy"]

    def send(who: Principal) -> str:
        """ "sent", or the error code SQS answered."""
        client = client_as(who, "sqs")
        try:
            client.send_message(QueueUrl=queue_url, MessageBody=json.dumps({"repo_id": TINY}))
        except ClientError as exc:
            return str(exc.response["Error"]["Code"])
        return "sent"

    def principal(name: str, policy: dict[str, Any], **tags: str) -> Principal:
        arn = f"arn:aws:iam::{s3_authz.ACCOUNT}:role/{name}-{stack.suffix}"
        return s3_authz.active().register(Principal(arn, [policy], tags=tags))

    # THEN a tagged principal with the sender policy may send; without the tag, or with s3:*-like admin
    # rights but no tag, it may not; a tag without the identity grant is not enough either
    assert send(principal("team-sender", sender_policy, **{"model-cache-sender": "true"})) == "sent"
    assert send(principal("untagged-sender", sender_policy)) == "AccessDenied"
    assert send(principal("untagged-admin", s3_authz.ADMINISTRATOR_ACCESS)) == "AccessDenied"
    assert send(principal("tag-only", {"Statement": []}, **{"model-cache-sender": "true"})) == "AccessDenied"
    # AND the one accepted request's execution ends inside this test (nothing keeps calling moto afterwards)
    executions = stack.sfn.list_executions(stateMachineArn=stack.state_machine_arn)["executions"]
    assert len(executions) == 1
    assert stack.wait(executions[0]["executionArn"])["status"] == "SUCCEEDED"
