"""`make mutants`: break each guard that carries the promise, one at a time, and check a test notices.

The promise: a model in the cache is complete and verified, or absent. Each entry of MUTANTS is a
deliberate break of one guard (a line of code or of template.yaml replaced), the tests that must catch
it, and why the guard exists. For every entry the working tree (tracked and new files, as they are now)
is copied to a scratch folder, the one replacement is applied there, and the entry's tests run against
the scratch copy (PYTHONPATH puts its core package, loader and devtools ahead of the editable installs). An entry
is *killed* when those tests fail, *survived* when they pass, *error* when pytest could not run them or
the replacement no longer matches the source (a stale entry). First the union of all entries' tests
runs once unmutated: it must pass, or no verdict means anything.

    python scripts/mutants.py                 # every entry
    python scripts/mutants.py --only refs     # entries whose name contains "refs"
    python scripts/mutants.py --only grant:   # the least-privilege group, generated from the rendered policies
    python scripts/mutants.py --list          # the entries, no run

Exits 0 only when every entry was killed. Not part of `make test`: it runs each entry's tests again.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CORE = "layers/core/model_cache"
LOADER = "loader/src/model_cache_loader"
DEVTOOLS = "devtools/src/model_cache_devtools"
PIPELINE_TESTS = "tests/reliability/test_integrity_pipeline.py"
LOADER_TESTS = "tests/reliability/test_integrity_loader.py"
MEMORY_TESTS = "tests/loader/test_loader_memory.py"
AUTO_TESTS = "tests/loader/test_loader_verify_auto.py"
PYTEST_TIMEOUT_SECONDS = 180


@dataclass(frozen=True)
class Mutant:
    name: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    guards: str
    # Set for the test run instead of a text replacement (path and old empty): the grants group.
    env: tuple[tuple[str, str], ...] = ()


# The CPU cached variant's init container, from its exit test to the worker image: the shortest text
# that makes the exit test of that one variant unique (the GPU variant has the same script).
_CPU_INIT_TAIL = """
                        env:
                          - {name: MODEL_ID, value: "${schema.spec.modelId}"}
                          - {name: MODEL_CACHE_BUCKET, value: "${schema.spec.modelCacheBucket}"}
                          - {name: MODEL_CACHE_PREFIX, value: "${schema.spec.modelCachePrefix}"}
                          - {name: MODEL_CACHE_LOADER_KEY, value: "model-cache-loader/0.1.0/model_cache_loader-0.1.0-py3-none-any.zip"}
                          - {name: MODEL_CACHE_LOADER_SHA256, value: "${schema.spec.modelCacheLoaderSha256}"}
                          - {name: AWS_REGION, value: "${schema.spec.awsRegion}"}
                          - {name: HF_HUB_CACHE, value: /models/hub}
                        volumeMounts:
                          - {name: model-cache, mountPath: /models}
                        resources:
                          requests:
                            cpu: ${schema.spec.resources.worker.cpu}
                            memory: ${schema.spec.resources.worker.memory}
                          limits:
                            cpu: ${schema.spec.resources.worker.cpu}
                            memory: ${schema.spec.resources.worker.memory}
                    # emptyDir: the pod's own disk, sized by modelDiskSize. Node-local: a directory on the
                    # node that every pod there shares (the loader's lock keeps one download per node); the
                    # node must have it, writable by uid 1000 (docs/tutorial/deploy.md).
                    volumes: '${schema.spec.nodeLocalModelCache ? [{"name": "model-cache", "hostPath": {"path": "/var/lib/s3-model-cache", "type": "Directory"}}] : [{"name": "model-cache", "emptyDir": {"sizeLimit": schema.spec.modelDiskSize}}]}'
                    containers:
                      - name: ray-worker
                        image: '${schema.spec.runtimeImage != "" ? schema.spec.runtimeImage : "rayproject/ray:2.60.0-py311"}'"""


MUTANTS: tuple[Mutant, ...] = (
    # --- publish order and refs (docs/architecture.md 3.1) ------------------------------------------
    Mutant(
        "publish: refs before the manifest",
        f"{CORE}/pipeline/publish.py",
        "    published = write_manifest(s3, plan.bucket, plan.manifest_key, manifest, policy=policy)\n"
        "    return point_refs(s3, plan.bucket, plan.prefix, plan.repo_id, plan.revision, published, is_head=is_head)",
        "    moved = point_refs(s3, plan.bucket, plan.prefix, plan.repo_id, plan.revision, manifest, is_head=is_head)\n"
        "    write_manifest(s3, plan.bucket, plan.manifest_key, manifest, policy=policy)\n"
        "    return moved",
        (f"{PIPELINE_TESTS}::test_publish_writes_the_manifest_before_any_ref_and_a_ref_before_manifest_json",),
        "a reader that finds a ref finds its manifest",
    ),
    Mutant(
        "refs: move without asking the Hub for the head",
        f"{CORE}/pipeline/publish.py",
        "            if not is_head():\n                return False",
        "            if False:\n                return False",
        (f"{PIPELINE_TESTS}::test_an_older_commit_that_publishes_last_never_moves_refs_back",),
        "refs only move forward: an older commit never takes the ref",
    ),
    Mutant(
        "refs: unconditional ref write",
        f"{CORE}/pipeline/publish.py",
        'put_bytes(s3, bucket, key, wanted, "text/plain", if_match=etag, create=etag is None, metadata=metadata)',
        'put_bytes(s3, bucket, key, wanted, "text/plain", metadata=metadata)',
        (f"{PIPELINE_TESTS}::test_interleaved_publishes_leave_refs_main_and_manifest_json_on_the_head_commit",),
        "a ref write loses to a writer that moved it in between (If-Match / If-None-Match)",
    ),
    Mutant(
        "refs: manifest.json written without re-reading refs/main",
        f"{CORE}/pipeline/publish.py",
        '        if get_bytes(s3, bucket, ref_key) != manifest["commit"].encode("ascii"):\n            return False',
        "        if False:\n            return False",
        (f"{PIPELINE_TESTS}::test_interleaved_publishes_leave_refs_main_and_manifest_json_on_the_head_commit",),
        "manifest.json follows refs/main: the two never name different commits",
    ),
    Mutant(
        "manifest: overwritten instead of replaced by a superset",
        f"{CORE}/pipeline/publish.py",
        "        existing = parse_json_object(body, bucket, key)\n        merged = merge_manifests(existing, manifest)",
        "        existing = parse_json_object(body, bucket, key)\n        merged = manifest",
        (f"{PIPELINE_TESTS}::test_concurrent_runs_with_different_selections_publish_the_union",),
        "manifests/{commit}.json is immutable but for supersets",
    ),
    Mutant(
        "selection: already published ignores include/exclude",
        f"{CORE}/pipeline/prepare.py",
        "            if all(path in have for path in chosen):",
        "            if True:",
        (f"{PIPELINE_TESTS}::test_a_narrow_request_does_not_seal_the_commit",),
        "a narrow request never seals a commit",
    ),
    # --- write-once snapshot keys ---------------------------------------------------------------
    Mutant(
        "write-once: CompleteMultipartUpload without If-None-Match",
        f"{CORE}/pipeline/multipart.py",
        '        "IfNoneMatch": "*",\n    }',
        "    }",
        (f"{PIPELINE_TESTS}::test_a_second_run_never_replaces_a_published_object_with_unverified_bytes",),
        "a published object is never replaced by unverified bytes",
    ),
    Mutant(
        "write-once: small-file PutObject without If-None-Match",
        f"{CORE}/pipeline/hub_to_s3.py",
        'Body=data, ChecksumAlgorithm=CHECKSUM_ALGORITHM, IfNoneMatch="*"',
        "Body=data, ChecksumAlgorithm=CHECKSUM_ALGORITHM",
        (f"{PIPELINE_TESTS}::test_a_second_run_never_replaces_a_published_object_with_unverified_bytes",),
        "a published small file is never replaced (its version stays the manifest's)",
    ),
    Mutant(
        "adopt: a taken key used without checking its bytes",
        f"{CORE}/pipeline/multipart.py",
        "    if read_back:\n        read_back_digests(s3, bucket, planned, found)\n    return found",
        "    return found",
        (f"{PIPELINE_TESTS}::test_a_retried_finalize_accepts_a_completed_object_only_if_it_is_its_own",),
        "another run's object is adopted only if it holds the verified bytes",
    ),
    Mutant(
        "finalize retry: completed object accepted without its ETag and size",
        f"{CORE}/pipeline/multipart.py",
        '    if head.get("ETag") != multipart_etag(parts) or head.get("ContentLength") != planned.size:\n'
        "        return None\n    # Exactly",
        "    # Exactly",
        (f"{PIPELINE_TESTS}::test_a_retried_finalize_accepts_a_completed_object_only_if_it_is_its_own",),
        "a retried finalize takes a completed object for its own only with its parts' ETag and size",
    ),
    Mutant(
        "delete: an adopted object deleted after a failed check",
        f"{CORE}/pipeline/multipart.py",
        "    if not stored.created or not stored.etag:\n",
        "    if not stored.etag:\n",
        (f"{PIPELINE_TESTS}::test_a_retried_finalize_accepts_a_completed_object_only_if_it_is_its_own",),
        "a run deletes only what it created",
    ),
    Mutant(
        "cleanup: a failed run deletes the objects at its keys",
        f"{CORE}/pipeline/finalize.py",
        "    aborted = abort_uploads(s3, plan)\n",
        "    for planned in plan.files:\n        s3.delete_object(Bucket=plan.bucket, Key=planned.key)\n"
        "    aborted = abort_uploads(s3, plan)\n",
        (
            f"{PIPELINE_TESTS}::test_second_execution_failing_in_finalize_never_deletes_the_first_ones_published_objects",
        ),
        "no run deletes an object a published manifest names",
    ),
    Mutant(
        "cleanup: open uploads left open",
        f"{CORE}/pipeline/finalize.py",
        "    aborted = abort_uploads(s3, plan)\n",
        "    aborted = 0\n",
        ("tests/pipeline/test_engine.py", "tests/pipeline/test_steps.py"),
        "a failure leaves no incomplete multipart upload",
    ),
    # --- verification ---------------------------------------------------------------------------
    Mutant(
        "verify: a read-back hashed but not compared",
        f"{CORE}/pipeline/multipart.py",
        "    try:\n        return hasher.verify()\n    except errors.IntegrityError as exc:\n"
        "        if not stored.created:",
        "    try:\n        return hasher.digests()\n    except errors.IntegrityError as exc:\n"
        "        if not stored.created:",
        ("tests/pipeline/test_state_machine.py::test_hash_mismatch_fails_and_leaves_no_incomplete_upload",),
        "a file split across units is verified by reading it back",
    ),
    Mutant(
        "verify: sha256 of an LFS file not compared",
        f"{CORE}/pipeline/verify.py",
        "        if digests.sha256 != hub_file.lfs_sha256:",
        "        if False:",
        ("tests/reliability/test_reliability_hub.py", "tests/pipeline/test_engine.py"),
        "every byte is checked against the Hub's declared hash",
    ),
    Mutant(
        "verify: a small file written before it is hashed",
        f"{CORE}/pipeline/hub_to_s3.py",
        "                digests = hasher.verify()  # before the PUT: a bad small file is never written",
        "                digests = hasher.digests()",
        ("tests/pipeline/test_engine.py",),
        "a bad small file is never written",
    ),
    Mutant(
        "verify: a copy inside S3 not checked against the recorded CRC64NVME",
        f"{CORE}/pipeline/s3_copy.py",
        "            try:\n                _check_copy(planned, stored)\n",
        "            try:\n                pass\n",
        ("tests/operations/test_refresh.py",),
        "a refresh copy is byte-exact",
    ),
    # --- traversal ------------------------------------------------------------------------------
    Mutant(
        # One rule, the loader's, for both sides since issue 26: the pipeline's check of a Hub listing and
        # the loader's check of a manifest both fail when it breaks.
        "traversal: a '..' path is accepted, from the Hub by the pipeline or from a manifest by the loader",
        f"{LOADER}/layout.py",
        '    if any(segment in (".", "..") for segment in segments):',
        "    if False:",
        ("tests/badinput/test_badinput_corpus.py", "tests/contract/test_ids.py", "tests/loader/test_loader_layout.py"),
        "a Hub listing cannot write outside the snapshot prefix, nor a tampered manifest outside the cache",
    ),
    # --- the Hub ----------------------------------------------------------------------------------
    Mutant(
        "hub: model_info without a timeout",
        f"{CORE}/adapters/hubapi.py",
        "files_metadata=files_metadata, timeout=api_timeout())",
        "files_metadata=files_metadata)",
        (f"{PIPELINE_TESTS}::test_a_stalled_hub_api_fails_resolve_instead_of_hanging",),
        "a stalled Hub cannot hang resolve",
    ),
    Mutant(
        "plan: a retried Plan task plans again",
        f"{CORE}/pipeline/steps.py",
        "    prepared = _stored_plan(s3, request) or prepare_plan(",
        "    prepared = None or prepare_plan(",
        (f"{PIPELINE_TESTS}::test_a_retried_plan_task_starts_no_second_set_of_uploads",),
        "a retried Plan task orphans no upload",
    ),
    Mutant(
        "request: any StartExecution failure taken for a duplicate",
        f"{CORE}/pipeline/request_message.py",
        "        except client.exceptions.ExecutionAlreadyExists:",
        "        except client.exceptions.ClientError:\n"
        '            return StartedExecution(name=name, outcome="deduplicated-running")\n'
        "        except client.exceptions.ExecutionAlreadyExists:",
        (f"{PIPELINE_TESTS}::test_a_throttled_start_execution_is_a_failed_item_not_a_duplicate",),
        "a throttled request goes back to the queue, never lost",
    ),
    # --- operations: dedupe by outcome, the failure path, refresh copies, capacity ----------------
    Mutant(
        "dedupe: a finished execution's name taken for a duplicate",
        f"{CORE}/pipeline/request_message.py",
        '            if status == "SUCCEEDED" and check(request):',
        "            if True:",
        ("tests/pipeline/test_request_outcomes.py",),
        "a request is never silently dropped: a failed run or a stale success runs again",
    ),
    Mutant(
        "dedupe: a succeeded branch request collapses without asking the Hub for the head",
        f"{CORE}/pipeline/request_message.py",
        "            or hubapi.head_commit(request.repo_id, request.revision, token=hub_token()) != commit\n",
        "            or False\n",
        (
            "tests/pipeline/test_request_outcomes.py::test_a_branch_request_within_the_hour_runs_again_when_the_branch_moved",
        ),
        "a branch that moved is cached again within the dedupe window",
    ),
    Mutant(
        "failure path: a failed completion's own error is not what the execution fails with",
        f"{CORE}/pipeline/work_files.py",
        "    raise_unit_error(records)\n    raise_unit_error(completions)\n",
        "    raise_unit_error(records)\n",
        ("tests/pipeline/test_state_machine.py::test_hash_mismatch_fails_and_leaves_no_incomplete_upload",),
        "a split file that fails its read-back ends the execution with IntegrityError, not the Map's generic error",
    ),
    Mutant(
        "refresh: a copy names the source key, not the verified version",
        f"{CORE}/pipeline/s3_copy.py",
        '    return {"Bucket": plan.bucket, "Key": source.key, **pinned}',
        '    return {"Bucket": plan.bucket, "Key": source.key}',
        ("tests/operations/test_refresh.py",),
        "a delete marker or a newer write over a source never fails or poisons a refresh copy",
    ),
    Mutant(
        "capacity: the copy-unit function reserves less than one refresh fans out",
        "template.yaml",
        "      ReservedConcurrentExecutions: !FindInMap [Settings, Stack, CopyUnitConcurrency]\n",
        "      ReservedConcurrentExecutions: 50\n",
        ("tests/operations/test_capacity.py",),
        "one scheduled refresh at its widest is never throttled",
    ),
    Mutant(
        "capacity: a throttled unit gives up after two minutes",
        "statemachine/model_cache.asl.json",
        '"FunctionName": "${CopyUnitFunctionArn}",\n              "Payload.$": "$"\n            },\n            "TimeoutSeconds": 960,\n            "Retry": [\n              {\n                "ErrorEquals": [\n                  "Lambda.TooManyRequestsException"\n                ],\n                "IntervalSeconds": 10,\n                "MaxAttempts": 40,',
        '"FunctionName": "${CopyUnitFunctionArn}",\n              "Payload.$": "$"\n            },\n            "TimeoutSeconds": 960,\n            "Retry": [\n              {\n                "ErrorEquals": [\n                  "Lambda.TooManyRequestsException"\n                ],\n                "IntervalSeconds": 10,\n                "MaxAttempts": 6,',
        ("tests/operations/test_capacity.py",),
        "throttled units wait for running ones to drain",
    ),
    Mutant(
        "gc: deletes a snapshot a run in flight claimed",
        f"{CORE}/operations/gc.py",
        "    if runs:\n        return replace(decision",
        "    if False:\n        return replace(decision",
        ("tests/operations/test_gc_interleaving.py",),
        "gc never deletes what a run in flight writes or points a ref at",
    ),
    Mutant(
        "gc: a run goes ahead while gc is deleting its snapshot",
        f"{CORE}/pipeline/claims.py",
        "    if layout.GC_MARKER in _live(s3, bucket, claims_folder):",
        "    if False:",
        ("tests/operations/test_gc_interleaving.py",),
        "a run never adopts or re-points a snapshot gc is deleting",
    ),
    Mutant(
        "gc: retention counted from created_at, not from the lost ref",
        f"{CORE}/operations/gc.py",
        "        since = max(snap.created_at, lost) if snap.published and lost else snap.created_at",
        "        since = snap.created_at",
        ("tests/operations/test_gc_interleaving.py::test_retention_counts_from_when_a_snapshot_lost_its_last_ref",),
        "a snapshot that was main a minute ago is not deleted at once",
    ),
    Mutant(
        "refresh: the Map's results collected into the state",
        "statemachine/model_cache.asl.json",
        '      "Label": "RefreshEachModel",\n      "ResultPath": null,',
        '      "Label": "RefreshEachModel",\n      "ResultPath": "$.refreshed",',
        ("tests/pipeline/test_tracked.py",),
        "a refresh of thousands of tracked pairs stays inside the 256 KiB state",
    ),
    Mutant(
        "fargate: a task that never started fails the unit at once",
        "statemachine/model_cache.asl.json",
        '"Next": "ReadFargateStop"',
        '"Next": "FargateUnitFailed"',
        ("tests/pipeline/test_fargate_stops.py",),
        "a multi-hour run survives an image pull, ENI or maintenance stop",
    ),
    Mutant(
        "fargate: task stops retried without a cap",
        "statemachine/model_cache.asl.json",
        '"NumericLessThanEquals": 3',
        '"NumericLessThanEquals": 30',
        ("tests/pipeline/test_fargate_stops.py",),
        "a task that keeps failing to start fails the run after three retries",
    ),
    Mutant(
        "fargate: the copier's own failure retried as a transient stop",
        "statemachine/model_cache.asl.json",
        '"StringEquals": "SpotInterruption"',
        '"StringEquals": "EssentialContainerExited"',
        ("tests/pipeline/test_fargate_stops.py",),
        "a domain error on Fargate is not retried",
    ),
    # --- scale: AWS limits and bounded work (issue 15) -------------------------------------------
    Mutant(
        "scale: the limit check runs only after the claim is written",
        f"{CORE}/pipeline/prepare.py",
        "    check_plan(make_run_plan(snapshot, every_file, bucket=bucket, prefix=prefix, options=request.options))\n",
        "",
        ("tests/scale/test_plan_limits.py",),
        "a refused plan writes nothing at all, not even a claim",
    ),
    Mutant(
        "scale: no duration is held to its limit",
        f"{CORE}/pipeline/limits.py",
        "        if work.seconds * headroom > work.limit_s:",
        "        if work.seconds > 10 * work.limit_s:",
        ("tests/scale/test_plan_limits.py", "tests/scale/test_scale_model.py"),
        "a unit or completion that would outlive its Lambda or Fargate task is refused at plan time",
    ),
    Mutant(
        "scale: no bound on the number of units",
        f"{CORE}/pipeline/limits.py",
        "    if len(plan.units) > MAX_UNITS:",
        "    if len(plan.units) > 100 * MAX_UNITS:",
        ("tests/scale/test_plan_limits.py",),
        "Finalize's record reads and the Map's item file stay bounded",
    ),
    Mutant(
        "scale: finalize completes and reads back split files itself again",
        f"{CORE}/pipeline/steps.py",
        '            records.append(FileRecord.from_json(completed[planned.path]["record"]))',
        "            records.append(finalize_file(s3, the_plan, planned, outcomes.get(planned.path))[0])",
        ("tests/scale/test_bounded_finalize.py",),
        "the one Finalize invocation reads no file back, whatever the model's size",
    ),
    Mutant(
        "scale: a completion ignores a failed unit of its file",
        f"{CORE}/pipeline/steps.py",
        "        raise_unit_error(records)\n        if len(records) != len(holders)",
        "        if len(records) != len(holders)",
        ("tests/pipeline/test_steps.py::test_a_fargate_units_domain_error_is_what_finalize_fails_with",),
        "a completion fails with the failed unit's own error",
    ),
    # --- typed task events: parsed once at the edge (issue 26) --------------------------------------
    Mutant(
        "contract: the bucket rule takes any string, for the pipeline and the loader alike",
        f"{LOADER}/layout.py",
        "    if isinstance(bucket, str) and _BUCKET_RE.match(bucket):",
        "    if isinstance(bucket, str):",
        ("tests/contract/test_ids.py", "tests/pipeline/test_task_events.py"),
        "a bad bucket name is refused at the edge, naming it, not taken for an unreachable S3",
    ),
    Mutant(
        "events: a unit id of JSON true is unit 1",
        f"{CORE}/pipeline/events.py",
        "    if not isinstance(value, int) or isinstance(value, bool) or value < 0:",
        "    if not isinstance(value, int) or value < 0:",
        ("tests/pipeline/test_task_events.py",),
        "a malformed Map item is refused, never taken for another unit",
    ),
    Mutant(
        "events: cleanup refuses an event naming no plan",
        f"{CORE}/pipeline/events.py",
        "            plan: PlanRef | None = PlanRef.from_event(event)\n        except errors.InvalidRequest:",
        "            plan: PlanRef | None = PlanRef.from_event(event)\n        except KeyError:",
        ("tests/pipeline/test_task_events.py",),
        "cleanup never fails in place of the failure it cleans up after",
    ),
    Mutant(
        "events: the Map's error never reaches the explaining finalize",
        f"{CORE}/pipeline/events.py",
        'return cls(plan=plan, explain=bool(event.get("explain")), map_error=event.get("map_error"))',
        'return cls(plan=plan, explain=bool(event.get("explain")), map_error=None)',
        ("tests/pipeline/test_task_events.py",),
        "a failed Map's own error is quoted in the execution's failure",
    ),
    Mutant(
        "events: a parsed plan request is parsed again",
        f"{CORE}/pipeline/events.py",
        "        if isinstance(event, cls):\n            return event\n        if isinstance(event, str):",
        "        if isinstance(event, str):",
        ("tests/pipeline/test_handlers_parse_once.py", "tests/pipeline/test_task_events.py"),
        "the plan event is validated once, at the edge",
    ),
    Mutant(
        "handlers: the copy handler hands the raw event inward",
        "functions/copy_unit/app.py",
        "        result = steps.copy_unit(task, token=hub_token())",
        "        result = steps.copy_unit(event, token=hub_token())",
        ("tests/pipeline/test_handlers_parse_once.py",),
        "handlers are thin: parse once, call one core function",
    ),
    Mutant(
        "steps: a completion's file index past the plan is not refused",
        f"{CORE}/pipeline/steps.py",
        "    if file_index >= len(the_plan.files) or the_plan.files[file_index].path != planned.path:",
        "    if the_plan.files[file_index].path != planned.path:",
        ("tests/pipeline/test_steps.py::test_a_completion_naming_the_wrong_file_index_is_refused",),
        "a bad CompleteFiles item fails with a clear InvalidRequest, not an IndexError",
    ),
    Mutant(
        "scale: the layout choice keeps the slower run",
        f"{CORE}/pipeline/limits.py",
        "    return split if wall_time(split, rates).total_s < wall_time(whole, rates).total_s else whole",
        "    return split if wall_time(split, rates).total_s > wall_time(whole, rates).total_s else whole",
        ("tests/scale/test_scale_model.py",),
        "a 15 GB model in a minute and a 405B model in 15 minutes",
    ),
    Mutant(
        "scale: the finalize function reserves less than one refresh completes at once",
        "template.yaml",
        "      ReservedConcurrentExecutions: 64\n",
        "      ReservedConcurrentExecutions: 20\n",
        ("tests/operations/test_capacity.py",),
        "completions of a refresh at its widest are never throttled for long",
    ),
    Mutant(
        "harness: a Distributed Map with a failed item succeeds (moto's own behaviour)",
        f"{DEVTOOLS}/local_pipeline.py",
        "    patch_map_run_failure_threshold(patcher)\n",
        "",
        ("tests/pipeline/test_copy_failure.py",),
        "the tests take the path AWS takes after a failed unit: ExplainCopyFailure, nothing completed",
    ),
    # --- governance and security controls (issue 13) --------------------------------------------
    Mutant(
        "security: the copy unit may write anywhere in the bucket",
        "template.yaml",
        '- Sid: WriteSnapshotFilesAndUnitResults\n              Effect: Allow\n              Action: s3:PutObject\n              Resource:\n                - !Sub ["arn:${AWS::Partition}:s3:::${Bucket}/${CachePrefix}/*/snapshots/*"',
        '- Sid: WriteSnapshotFilesAndUnitResults\n              Effect: Allow\n              Action: s3:PutObject\n              Resource:\n                - !Sub ["arn:${AWS::Partition}:s3:::${Bucket}/*"',
        (
            "tests/security/test_security_template.py",
            "tests/security/test_roles_under_aws_rules.py::test_each_role_is_refused_outside_its_need",
        ),
        "a copy unit writes only under the cache and work prefixes",
    ),
    Mutant(
        "security: the replication role gets s3:*",
        "template.yaml",
        "            Action: [s3:ReplicateObject, s3:ReplicateDelete, s3:ReplicateTags]",
        '            Action: "s3:*"',
        ("tests/security/test_security_template.py",),
        "every IAM resource type, RolePolicy included, is walked and no Allow has a wildcard action",
    ),
    Mutant(
        "security: the TLS deny misses the bucket itself",
        "template.yaml",
        '- Sid: DenyInsecureTransport\n            Effect: Deny\n            Principal: "*"\n            Action: "s3:*"\n            Resource:\n              - !GetAtt CacheBucket.Arn\n',
        '- Sid: DenyInsecureTransport\n            Effect: Deny\n            Principal: "*"\n            Action: "s3:*"\n            Resource:\n',
        ("tests/security/test_security_template.py",),
        "no request over plain HTTP, to the bucket or its objects",
    ),
    Mutant(
        "security: the pods may list the whole bucket",
        "template.yaml",
        '                s3:prefix: [!Sub "${CachePrefix}/", !Sub "${CachePrefix}/*"]\n          - !If [UseCustomKmsKey, {Sid: DecryptCachedModels',
        '                s3:prefix: [!Sub "${CachePrefix}/", !Sub "${CachePrefix}/*", "*"]\n          - !If [UseCustomKmsKey, {Sid: DecryptCachedModels',
        ("tests/security/test_security_template.py",),
        "pods list only the cache prefix (lists compared by equality)",
    ),
    Mutant(
        "security: the pods get s3:Get*",
        "template.yaml",
        "          - Sid: ReadCachedModels\n            Effect: Allow\n            Action: [s3:GetObject, s3:GetObjectVersion]",
        '          - Sid: ReadCachedModels\n            Effect: Allow\n            Action: ["s3:Get*"]',
        ("tests/security/test_security_template.py",),
        "no Allow of an action family",
    ),
    Mutant(
        "security: no lifecycle rule aborts incomplete uploads",
        "template.yaml",
        "          - Id: abort-incomplete-multipart-uploads\n            Status: Enabled\n            AbortIncompleteMultipartUpload:\n              DaysAfterInitiation: !FindInMap [Settings, Stack, AbortIncompleteMultipartUploadDays]\n",
        "",
        ("tests/security/test_security_template.py",),
        "an upload a killed run left open costs nothing after a week",
    ),
    Mutant(
        "security: the copier may read every secret",
        "template.yaml",
        "                  Action: secretsmanager:GetSecretValue\n                  Resource: !Ref HfTokenSecretArn",
        '                  Action: secretsmanager:GetSecretValue\n                  Resource: !Sub "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:*"',
        ("tests/security/test_security_template.py",),
        "the Hub token is read from its one secret only",
    ),
    Mutant(
        "security: the state machine logs execution data",
        "template.yaml",
        "        IncludeExecutionData: false",
        "        IncludeExecutionData: true",
        ("tests/security/test_security_template.py",),
        "inputs (repos, requesters) stay out of the logs",
    ),
    Mutant(
        "governance: anyone with s3 write access may rewrite the cache",
        "template.yaml",
        "          - Sid: OnlyThePipelineWritesTheCache\n            Effect: Deny",
        "          - Sid: OnlyThePipelineWritesTheCache\n            Effect: Allow",
        ("tests/security/test_resource_policies.py",),
        "only the pipeline's roles write under the cache prefix",
    ),
    Mutant(
        "governance: finalize may destroy cached versions",
        "template.yaml",
        "              Action: [s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload]",
        "              Action: [s3:PutObject, s3:DeleteObject, s3:AbortMultipartUpload, s3:DeleteObjectVersion]",
        (
            "tests/security/test_security_template.py",
            "tests/security/test_roles_under_aws_rules.py::test_each_role_is_refused_outside_its_need",
        ),
        "no pipeline role can permanently delete a cached version",
    ),
    Mutant(
        "governance: anyone in the account may send requests",
        "template.yaml",
        '          - Sid: DenyUnlistedSenders\n            Effect: Deny\n            Principal: "*"\n            Action: sqs:SendMessage',
        '          - Sid: DenyUnlistedSenders\n            Effect: Deny\n            Principal: "*"\n            Action: sqs:ChangeMessageVisibility',
        ("tests/security/test_resource_policies.py",),
        "only listed or tagged principals request models",
    ),
    Mutant(
        "governance: the work prefix may be the cache prefix",
        "template.yaml",
        "      - Assert: !Not [!Equals [!Ref CachePrefix, _model-cache-work]]",
        "      - Assert: !Not [!Equals [!Ref CachePrefix, !Ref CopierImageUri]]",
        ("tests/security/test_security_template.py",),
        "the work files' 7-day expiry never covers the cache",
    ),
    Mutant(
        "governance: the pods may use the KMS key directly",
        "template.yaml",
        '{Sid: DecryptCachedModels, Effect: Allow, Action: kms:Decrypt, Resource: !Ref KmsKeyArn, Condition: {StringEquals: {"kms:ViaService": !Sub "s3.${AWS::Region}.amazonaws.com"}}}',
        "{Sid: DecryptCachedModels, Effect: Allow, Action: kms:Decrypt, Resource: !Ref KmsKeyArn}",
        ("tests/security/test_security_template.py",),
        "the cache's key works only through S3",
    ),
    Mutant(
        "governance: the copier pulls any image and writes any log group",
        "template.yaml",
        "      # group only. The repository is the image URI's name (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG or @sha256).\n      Policies:",
        '      # group only. The repository is the image URI\'s name (ACCOUNT.dkr.ecr.REGION.amazonaws.com/NAME:TAG or @sha256).\n      ManagedPolicyArns:\n        - !Sub "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy"\n      Policies:',
        ("tests/security/test_security_template.py",),
        "the copier's execution role is narrowed to its repository and log group",
    ),
    Mutant(
        "governance: the org allow list is not enforced",
        f"{CORE}/pipeline/governance.py",
        "        if self.allowed_orgs is not None and org not in self.allowed_orgs:",
        "        if False:",
        ("tests/security/test_governance.py",),
        "a repo of an org the cache does not mirror is refused before anything is written",
    ),
    Mutant(
        "governance: the byte quota is not enforced",
        f"{CORE}/pipeline/governance.py",
        "        if self.max_repo_bytes is not None and size > self.max_repo_bytes:",
        "        if self.max_repo_bytes is not None and size > 1000 * self.max_repo_bytes:",
        ("tests/security/test_governance.py",),
        "a selection bigger than MaxRepoBytes is refused at plan time",
    ),
    Mutant(
        "governance: force from anyone",
        f"{CORE}/pipeline/governance.py",
        "        if not force or self.force_senders is None:",
        "        if True:",
        ("tests/security/test_governance.py",),
        "force is reserved to the platform's principals",
    ),
    Mutant(
        # Without the check at Plan, only Publish's (after the copy) refuses a request over the quota. Until
        # issue 26 this entry removed a second, selection-only check that the union check made redundant,
        # so it could not be killed; that check is gone.
        "governance: the quota is checked after the run claimed its snapshot",
        f"{CORE}/pipeline/prepare.py",
        "    if policy.limits_repo_size:\n",
        "    if False:\n",
        ("tests/security/test_governance.py",),
        "a refused request writes nothing",
    ),
    Mutant(
        "governance: the requester is what the body says",
        f"{CORE}/pipeline/request_message.py",
        "    request = replace(parse_request(body), requested_by=sender)",
        "    request = parse_request(body)",
        ("tests/pipeline/test_request_handler.py",),
        "the requester on record is the SQS SenderId",
    ),
    Mutant(
        "governance: executions in flight unbounded",
        f"{CORE}/pipeline/inflight.py",
        "            if len(in_flight) >= self.limit:",
        "            if False:",
        ("tests/security/test_governance.py",),
        "never an unbounded fan-out of executions",
    ),
    Mutant(
        "governance: the refresh widens a narrow request",
        f"{CORE}/pipeline/tracked.py",
        "                    include, exclude = recorded_selection(s3, bucket, prefix, repo_id, revision)",
        "                    include, exclude = (), ()",
        ("tests/operations/test_refresh_state_machine.py",),
        "a refresh copies only what was asked",
    ),
    Mutant(
        "governance: a tampered plan may name another repo's keys",
        f"{CORE}/pipeline/plan.py",
        "            if planned.key != layout.file_key(self.prefix, self.repo_id, self.commit, planned.path):",
        "            if False:",
        ("tests/security/test_plan_tampering.py",),
        "a plan.json rewritten by someone else names no other key",
    ),
    Mutant(
        "governance: a tampered plan's work folder may be the cache",
        f"{CORE}/pipeline/plan.py",
        '        if self.prefix == self.work_prefix or self.prefix.startswith(self.work_prefix + "/"):',
        "        if False:",
        ("tests/security/test_plan_tampering.py",),
        "cleanup of a tampered plan deletes nothing in the cache",
    ),
    Mutant(
        "governance: a gated repo under the open prefix",
        f"{CORE}/pipeline/prepare.py",
        "    if snapshot.gated and request.gated_prefix:",
        "    if False:",
        ("tests/security/test_gated_prefix.py",),
        "a gated model is readable only with the gated policy",
    ),
    Mutant(
        "governance: the Hub reader follows a redirect anywhere",
        f"{CORE}/adapters/hub_reader.py",
        "        if (\n            ip.is_loopback\n",
        "        if False and (\n            ip.is_loopback\n",
        ("tests/adapters/test_redirects.py",),
        "a spoofed mirror cannot point the copier at the instance metadata or the VPC",
    ),
    Mutant(
        "governance: the loader allocates what a manifest claims",
        f"{LOADER}/transfer.py",
        "        if needed > free - FREE_SPACE_MARGIN:",
        "        if False:",
        ("tests/loader/test_loader_tampered_sizes.py",),
        "a tampered manifest cannot fill the node's disk",
    ),
    Mutant(
        "governance: a big blob allocated before its real size is known",
        f"{LOADER}/transfer.py",
        "        if job.size < HEAD_BEFORE_ALLOCATE:",
        "        if True:",
        ("tests/loader/test_loader_tampered_sizes.py",),
        "no space is reserved for a size that is not the object's",
    ),
    Mutant(
        "governance: the loader follows a symlink planted at a staging path",
        f"{LOADER}/transfer.py",
        "            job.fd = os.open(job.tmp_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)\n",
        "            job.fd = os.open(job.tmp_path, os.O_RDWR | os.O_CREAT, 0o644)\n",
        ("tests/loader/test_loader_tampered_sizes.py",),
        "a pull never writes through a link to another file",
    ),
    # --- the loader -----------------------------------------------------------------------------
    Mutant(
        "loader: GET without the manifest's version id",
        f"{LOADER}/transfer.py",
        "                if job.version_id:\n",
        "                if False:\n",
        (f"{LOADER_TESTS}::test_the_loader_reads_the_version_the_manifest_verified",),
        "a pod reads exactly the bytes that were verified",
    ),
    Mutant(
        "loader: a retry restarts at the part's first byte",
        f"{LOADER}/transfer.py",
        "            if self._cancel.is_set():\n                raise _Cancelled()\n            try:\n"
        '                request: dict[str, Any] = {"Bucket": self.bucket, "Key": job.key}',
        "            if self._cancel.is_set():\n                raise _Cancelled()\n            offset = start\n"
        '            try:\n                request: dict[str, Any] = {"Bucket": self.bucket, "Key": job.key}',
        (f"{LOADER_TESTS}::test_a_retry_that_serves_other_bytes_is_never_renamed_into_a_blob",),
        "every byte on disk is a byte that was hashed",
    ),
    Mutant(
        "loader: a short body is an integrity error",
        f"{LOADER}/transfer.py",
        '                    raise ShortBody(f"the body ended {end - offset} bytes early")',
        '                    raise IntegrityError(f"the body ended {end - offset} bytes early")',
        (f"{LOADER_TESTS}::test_an_s3_body_cut_mid_get_resumes_from_the_first_missing_byte",),
        "a connection cut mid-body is retried, not fatal",
    ),
    Mutant(
        "loader: no Hub fallback when S3 keeps serving bad bytes",
        f"{LOADER}/api.py",
        "        except (AccessError, NotCachedError, IntegrityError) as exc:",
        "        except (AccessError, NotCachedError) as exc:",
        (f"{LOADER_TESTS}::test_s3_that_keeps_serving_bad_bytes_falls_back_to_the_hub_and_says_why",),
        "a pod still starts when the cache serves bad bytes",
    ),
    Mutant(
        "loader: a narrow local manifest copy never read again",
        f"{LOADER}/api.py",
        "                if not _narrow(checked):",
        "                if True:",
        (f"{LOADER_TESTS}::test_a_manifest_that_grew_into_a_superset_is_read_again",),
        "a reader of a manifest that grew into a superset gets the new files",
    ),
    Mutant(
        "loader: a blob renamed without its digest matching",
        f"{LOADER}/transfer.py",
        "            return job.hashed_bytes == job.size and job.digest.hexdigest() == job.sha256",
        "            return True",
        (f"{LOADER_TESTS}::test_a_retry_that_serves_other_bytes_is_never_renamed_into_a_blob[sha256]",),
        "no blob differs from its name",
    ),
    Mutant(
        "loader: a blob renamed without its CRC64NVME matching (the default for pinned reads)",
        f"{LOADER}/transfer.py",
        "            return self._file_crc64nvme(job) == decode_crc64nvme(job.crc64nvme, job.label)",
        "            return True",
        (
            f"{LOADER_TESTS}::test_a_retry_that_serves_other_bytes_is_never_renamed_into_a_blob[default-crc64nvme-pinned]",
        ),
        "no blob differs from its name, under the default check too",
    ),
    Mutant(
        "loader: staging files named per process",
        f"{LOADER}/hfcache.py",
        '    return f"{os.getpid()}.{threading.get_ident()}.{uuid.uuid4().hex[:12]}"',
        '    return f"{os.getpid()}"',
        # The race test finds a shared staging file only when its threads meet inside the window (it survived
        # one full run on a loaded machine); the staging test holds one writer inside it, so it always does.
        (
            "tests/loader/test_loader_staging.py",
            f"{LOADER_TESTS}::test_two_threads_pulling_one_model_in_one_process_never_race",
        ),
        "two threads of one process pull safely",
    ),
    Mutant(
        "loader: pwrite's count ignored",
        f"{LOADER}/transfer.py",
        "            chunk = chunk[written:]\n            offset += written",
        "            chunk = chunk[len(chunk) :]\n            offset += written",
        (f"{LOADER_TESTS}::test_a_short_write_is_written_again_not_taken_for_done",),
        "a short write is never taken for done",
    ),
    Mutant(
        "loader: no fsync before the rename",
        f"{LOADER}/transfer.py",
        "            os.fsync(job.fd)\n        except OSError as exc:\n"
        "            raise _cache_write_error(job, job.tmp_path, exc)",
        "            pass\n        except OSError as exc:\n"
        "            raise _cache_write_error(job, job.tmp_path, exc)",
        (f"{LOADER_TESTS}::test_a_blob_is_fsynced_before_its_rename",),
        "a crash cannot leave a zero-filled blob of the right size",
    ),
    # --- issue 14: to memory, the stand-in's cost model, the loader's data path -----------------
    Mutant(
        "memory: a file's sha256 not compared",
        f"{LOADER}/memory.py",
        "        if state.digest is not None and state.digest.hexdigest() != entry.sha256:",
        "        if False:",
        (f"{MEMORY_TESTS}::test_an_object_with_other_bytes_fails_its_file_and_load_returns_nothing",),
        "a tensor streamed to memory comes from the bytes the manifest describes",
    ),
    Mutant(
        "memory: a file's CRC64NVME not compared",
        f"{LOADER}/memory.py",
        "        if (\n            state.crc is not None",
        "        if (\n            False",
        (f"{MEMORY_TESTS}::test_an_object_with_other_bytes_fails_its_file_and_load_returns_nothing",),
        "verify=crc64nvme to memory checks the manifest's CRC",
    ),
    Mutant(
        "memory: the header's bytes left out of the digest",
        f"{LOADER}/memory.py",
        "        self._hash(state, memoryview(head)[:data_start])",
        "        state.hashed += data_start",
        (f"{MEMORY_TESTS}::test_every_tensor_equals_safetensors_loading_the_same_file",),
        "the digest covers every byte of the file, header included",
    ),
    Mutant(
        "memory: overlapping tensors accepted",
        f"{LOADER}/memory.py",
        "        if spec.begin != cursor:",
        "        if spec.begin > cursor:",
        (f"{MEMORY_TESTS}::test_a_header_that_does_not_describe_its_file_is_refused",),
        "a header whose tensors overlap is refused before any allocation",
    ),
    Mutant(
        "memory: shape not checked against the byte range",
        f"{LOADER}/memory.py",
        "    if count * DTYPES[dtype][1] != offsets[1] - offsets[0]:",
        "    if False:",
        (f"{MEMORY_TESTS}::test_a_header_that_does_not_describe_its_file_is_refused",),
        "a tensor's shape and dtype account for exactly its bytes",
    ),
    Mutant(
        "memory: the budget ignored",
        f"{LOADER}/memory.py",
        "                if needed and self._buffered and self._buffered + needed > self.memory_limit:",
        "                if False:",
        (f"{MEMORY_TESTS}::test_memory_held_is_bounded_by_the_limit_not_by_the_file",),
        "memory held is bounded by the setting, not by the model",
    ),
    Mutant(
        "memory: a range answered with other bytes accepted",
        f"{LOADER}/memory.py",
        '        if content_range != expected or int(response.get("ContentLength", -1)) != end - start:',
        "        if False:",
        (f"{MEMORY_TESTS}::test_an_object_of_another_size_is_refused_though_its_first_bytes_match",),
        "an object that is not the manifest's size is refused, whatever its first bytes",
    ),
    Mutant(
        "memory: a cut body not resumed",
        f"{LOADER}/memory.py",
        "                last_error = exc\n        assert last_error is not None",
        "                raise\n        assert last_error is not None",
        (f"{MEMORY_TESTS}::test_a_body_cut_mid_tensor_is_resumed_and_the_tensors_are_exact",),
        "a cut body is resumed, never taken for complete",
    ),
    Mutant(
        "memory: crc64nvme asked where none is recorded checks nothing",
        f"{LOADER}/transfer.py",
        '    if verify == "crc64nvme" and (crc64nvme is None or not crc64nvme_available()):',
        '    if verify == "crc64nvme" and not crc64nvme_available():',
        (f"{MEMORY_TESTS}::test_verify_crc64nvme_without_a_recorded_crc_checks_sha256",),
        "a file with no recorded CRC is still verified, by sha256",
    ),
    Mutant(
        "stand-in: ranged GETs read the whole object again",
        f"{DEVTOOLS}/moto_ranges.py",
        "            _state.lazy = _wants_single_range(self.headers)",
        "            _state.lazy = False",
        ("tests/world/test_moto_ranges.py::test_a_ranged_get_reads_only_its_range",),
        "the benchmarks' S3 charges O(range) for a ranged GET, as S3 does",
    ),
    Mutant(
        "stand-in: a suffix range sliced from the start",
        f"{DEVTOOLS}/moto_ranges.py",
        "        start, stop, _ = index.indices(self._length)",
        "        start, stop = 0, (index.stop or 0) - (index.start or 0)",
        ("tests/world/test_moto_ranges.py::test_every_range_form_answers_as_stock_moto",),
        "the O(range) server answers every range exactly as stock moto",
    ),
    Mutant(
        "loader: finished parts not written back early",
        f"{LOADER}/transfer.py",
        "        self._writeback.put(job.fd, start, end - start)\n",
        "",
        ("tests/loader/test_loader_pull.py::test_every_finished_part_starts_its_writeback_before_the_fsync",),
        "the fsync before the rename does not write the whole blob at the end",
    ),
    Mutant(
        "deploy: the RGD's prefix pattern admits a wildcard",
        "deploy/kro/ray-service.yaml",
        'modelCachePrefix: string | default="models" pattern="^[A-Za-z0-9][A-Za-z0-9._-]*(/',
        'modelCachePrefix: string | default="models" pattern="^[A-Za-z0-9*][A-Za-z0-9._*-]*(/',
        ("tests/deploy/test_deploy_kro_rgd.py::test_the_instance_schema_refuses_a_prefix_that_would_widen_the_role",),
        "an instance cannot widen its role's read grant past its cache prefix",
    ),
    Mutant(
        "deploy: the role trusts any pod of any cluster",
        "deploy/kro/ray-service.yaml",
        '"aws:RequestTag/kubernetes-service-account": "${schema.spec.name}-ray-model-cache"',
        '"aws:RequestTag/kubernetes-service-account": "*"',
        ("tests/deploy/test_deploy_kro_rgd.py::test_trust_policy_lets_eks_pod_identity_assume_and_tag",),
        "only the instance's own service account can assume its read role",
    ),
    Mutant(
        "deploy: a published loader version replaced by other files",
        f"{CORE}/operations/loader_release.py",
        "            if published is None or wheel_files_digest(published) != files_digest:",
        "            if published is None:",
        ("tests/deploy/test_loader_release.py::test_a_version_is_never_replaced_by_other_code",),
        "a pod that pinned a loader version never gets other code under it",
    ),
    Mutant(
        "deploy: the loader release written without If-None-Match",
        f"{CORE}/operations/loader_release.py",
        "put_bytes(s3, bucket, key, data, WHEEL_CONTENT_TYPE, create=True)",
        "put_bytes(s3, bucket, key, data, WHEEL_CONTENT_TYPE)",
        (
            "tests/deploy/test_loader_release.py::test_a_version_is_never_replaced_by_other_code",
            "tests/deploy/test_loader_release.py::test_publishing_a_rebuild_of_the_same_version_is_a_no_op",
        ),
        "publishing a version again never rewrites what pods already read",
    ),
    Mutant(
        "deploy: a wheel whose METADATA names another version accepted",
        f"{CORE}/operations/loader_release.py",
        "        if metadata_name not in names:",
        "        if False:",
        (
            "tests/deploy/test_loader_release.py::test_a_file_that_is_not_this_loader_wheel_is_refused_and_nothing_is_written",
        ),
        "the key's version is the version of the code under it",
    ),
    Mutant(
        "deploy: the init container swallows every failure",
        "deploy/kro/ray-service.yaml",
        '[ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]' + _CPU_INIT_TAIL,
        '[ "$rc" -eq 0 ] || true' + _CPU_INIT_TAIL,
        ("tests/deploy/test_deploy_kro_rgd.py::test_the_init_container_tolerates_a_miss_and_nothing_else",),
        "a pod whose model pull failed for a reason other than a miss does not start",
    ),
    Mutant(
        "deploy: the init container runs a loader release whatever its digest",
        "deploy/kro/ray-service.yaml",
        'sys.exit(0 if want and got == want else "model-prefetch: the loader release " + os.environ["MODEL_CACHE_LOADER_KEY"] + " has sha256 " + got + ", not the pinned modelCacheLoaderSha256 " + (want or "(unset)"))\' "$loader" || exit 1\n                            rc=0\n                            PYTHONPATH="$loader" python -m model_cache_loader pull --fallback error --quiet || rc=$?\n                            [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]'
        + _CPU_INIT_TAIL,
        'sys.exit(0)\' "$loader" || exit 1\n                            rc=0\n                            PYTHONPATH="$loader" python -m model_cache_loader pull --fallback error --quiet || rc=$?\n                            [ "$rc" -eq 0 ] || [ "$rc" -eq 3 ]'
        + _CPU_INIT_TAIL,
        (
            "tests/deploy/test_deploy_rendered_serve.py::test_the_rendered_rayservice_serves_from_the_cache_and_from_the_hub",
        ),
        "code from the bucket runs in every pod: only the release the instance pinned by sha256",
    ),
    Mutant(
        "deploy: the pods' boundary admits the whole bucket",
        "template.yaml",
        'Sid: BoundaryReadCacheAndLoaderReleases\n            Effect: Allow\n            Action: [s3:GetObject, s3:GetObjectVersion]\n            Resource:\n              - !Sub ["arn:${AWS::Partition}:s3:::${Bucket}/${CachePrefix}/*"',
        'Sid: BoundaryReadCacheAndLoaderReleases\n            Effect: Allow\n            Action: [s3:GetObject, s3:GetObjectVersion]\n            Resource:\n              - !Sub ["arn:${AWS::Partition}:s3:::${Bucket}/*"',
        (
            "tests/security/test_security_template.py::test_the_boundary_refuses_what_an_instance_names_outside_the_cache",
        ),
        "an instance that names another prefix of the bucket reads nothing there",
    ),
    Mutant(
        "deploy: the role has no permissions boundary",
        "deploy/kro/ray-service.yaml",
        "          permissionsBoundary: arn:aws:iam::${schema.spec.awsAccountId}:policy/${schema.spec.permissionsBoundaryName}\n",
        "",
        ("tests/deploy/test_deploy_kro_rgd.py::test_the_role_is_named_per_cluster_and_bounded",),
        "whatever an instance names, its role reads no more than the stack's boundary",
    ),
    Mutant(
        "deploy: role names shared across clusters",
        "deploy/kro/ray-service.yaml",
        "          name: ${schema.spec.clusterName}-${schema.metadata.namespace}-${schema.spec.name}-mc",
        "          name: ${schema.metadata.namespace}-${schema.spec.name}-mc",
        ("tests/deploy/test_deploy_kro_rgd.py::test_the_role_is_named_per_cluster_and_bounded",),
        "two clusters in one account never fight over one role",
    ),
    Mutant(
        "deploy: the role trusts Pod Identity from any account",
        "deploy/kro/ray-service.yaml",
        '                      "aws:SourceAccount": "${schema.spec.awsAccountId}",\n',
        "",
        ("tests/deploy/test_deploy_kro_rgd.py::test_trust_policy_lets_eks_pod_identity_assume_and_tag",),
        "the read role is assumed by Pod Identity of its own account only",
    ),
    Mutant(
        "deploy: the account id pattern admits a wildcard",
        "deploy/kro/ray-service.yaml",
        'awsAccountId: string | default="" pattern="^$|^[0-9]{12}$"',
        'awsAccountId: string | default="" pattern="^$|^[0-9*]{1,12}$"',
        ("tests/deploy/test_deploy_kro_rgd.py::test_the_instance_schema_refuses_an_account_that_is_not_one",),
        "the trust policy's account is an account",
    ),
    Mutant(
        "deploy: the upstream RayService schema admits unknown spec fields",
        "tests/deploy/schemas/RayService.json",
        '  "spec": {\n   "additionalProperties": false,',
        '  "spec": {\n   "additionalProperties": true,',
        ("tests/deploy/test_deploy_upstream_schemas.py::test_an_unknown_field_is_refused",),
        "a field KubeRay does not define fails the tests, not the cluster",
    ),
    Mutant(
        "deploy: the runtime image's torch is not the tested one",
        "containers/ray-serve/Dockerfile",
        "ARG TORCH_VERSION=2.13.0",
        "ARG TORCH_VERSION=2.12.0",
        ("tests/deploy/test_ray_runtime.py::test_the_image_is_the_tested_ray_with_the_tested_torch_and_loader",),
        "the image runs the torch the tests ran",
    ),
    Mutant(
        "deploy: the stock-image pods install a transformers the tests did not run",
        "deploy/kro/ray-service.yaml",
        'pip: {packages: [torch==2.13.0, transformers==5.24.0, accelerate==1.16.0, boto3==1.44.8, huggingface_hub==2.4.0, filelock==4.3.1], pip_install_options: [--extra-index-url, https://download.pytorch.org/whl/cpu, --disable-pip-version-check, --no-cache-dir]}" : ""}\n                  py_modules',
        'pip: {packages: [torch==2.13.0, transformers>=5.24.0, accelerate==1.16.0, boto3==1.44.8, huggingface_hub==2.4.0, filelock==4.3.1], pip_install_options: [--extra-index-url, https://download.pytorch.org/whl/cpu, --disable-pip-version-check, --no-cache-dir]}" : ""}\n                  py_modules',
        ("tests/deploy/test_ray_runtime.py::test_the_rgd_stock_pip_list_is_the_app_requirements",),
        "a replica on the stock image installs exactly the tested versions",
    ),
    Mutant(
        "peers: our hash object not written",
        f"{CORE}/pipeline/publish.py",
        "    if plan.write_hash_file:\n        put_once(",
        "    if False:\n        put_once(",
        (
            "tests/pipeline/test_published_snapshot_peers.py::test_ray_cloud_filesystem_downloads_our_snapshot_into_a_cache_huggingface_hub_reads",
        ),
        "Ray's CloudFileSystem finds the commit it names the snapshot by",
    ),
    # --- issue 23: the paths taken when something goes wrong ---------------------------------------
    Mutant(
        "issue23: the Hub fallback downloads the branch, not the commit S3 resolved",
        f"{LOADER}/fallback.py",
        "revision=manifest.commit,  # the commit S3 resolved, never the branch",
        "revision=revision,",
        (
            "tests/loader/test_loader_fallback_integrity.py::test_the_fallback_fetches_the_commit_s3_resolved_never_the_branch",
        ),
        "pods that fell back serve the commit the S3 pods serve",
    ),
    Mutant(
        "issue23: the Hub fallback installs without comparing the manifest's sha256",
        f"{LOADER}/fallback.py",
        "        if size != entry.size or digest != entry.sha256:",
        "        if size != entry.size:",
        (
            "tests/loader/test_loader_fallback_integrity.py::test_a_corrupt_byte_from_the_hub_fallback_is_never_installed",
        ),
        "a byte the Hub corrupted is never installed under the manifest's blob name",
    ),
    Mutant(
        "issue23: a blob of the right size is trusted without a verified marker",
        f"{LOADER}/hfcache.py",
        "            if not trust_size and not self.verified(entry, accept):\n                return False",
        "            if False:\n                return False",
        (
            "tests/loader/test_loader_fallback_integrity.py::test_a_blob_of_the_right_size_is_not_trusted_without_a_check",
        ),
        "size alone is not proof: a blob counts as complete only when it was verified",
    ),
    Mutant(
        "issue23: a marker is believed after its blob was rewritten",
        f"{LOADER}/hfcache.py",
        "    return check in DIGEST_CHECKS and check in accept and stat.st_size == size and text == _marker_text(check, stat)",
        "    return check in DIGEST_CHECKS and check in accept and stat.st_size == size",
        ("tests/loader/test_loader_pull.py::test_a_blob_rewritten_since_it_was_verified_is_checked_again",),
        "the marker holds only for the very file (inode, mtime) that passed the check",
    ),
    Mutant(
        "issue23: the Hub fallback has no deadline",
        f"{LOADER}/fallback.py",
        "        worker.join(deadline)",
        "        worker.join()",
        ("tests/loader/test_loader_fallback_integrity.py::test_a_hub_that_never_answers_ends_at_the_deadline",),
        "a Hub that accepts and never answers cannot hold a pod in Init forever",
    ),
    Mutant(
        "issue23: the Hub fallback (manifest files) holds the node lock across the Hub",
        f"{LOADER}/fallback.py",
        "    return within_deadline(work, deadline=deadline, what=label)",
        "    with cache.locked():\n        return within_deadline(work, deadline=deadline, what=label)",
        ("tests/loader/test_loader_fallback_integrity.py::test_a_hung_fallback_does_not_hold_the_node_lock",),
        "another pod's S3 hit never queues behind a Hub download",
    ),
    Mutant(
        "issue23: the Hub fallback (no manifest) holds the node lock across the Hub",
        f"{LOADER}/fallback.py",
        '    return within_deadline(work, deadline=deadline, what=f"{repo_id}@{revision}")',
        '    with cache.locked():\n        return within_deadline(work, deadline=deadline, what=f"{repo_id}@{revision}")',
        ("tests/loader/test_loader_fallback_integrity.py::test_a_hung_fallback_does_not_hold_the_node_lock",),
        "another pod's S3 hit never queues behind a Hub snapshot download",
    ),
    Mutant(
        "issue23: the fallback keeps what the failed S3 attempt allocated",
        f"{LOADER}/api.py",
        "            for entry in manifest.files:\n                self.cache.discard(entry.blob_name)",
        "            for entry in manifest.files[:0]:\n                self.cache.discard(entry.blob_name)",
        (
            "tests/loader/test_loader_fallback_integrity.py::test_the_fallback_frees_what_the_failed_s3_attempt_allocated",
        ),
        "a volume sized for the model once can finish a fallback after a partial S3 download",
    ),
    Mutant(
        "issue23: a bucket URI is taken for a bucket name",
        f"{LOADER}/api.py",
        '    if "=" not in value:\n        return layout.validate_bucket(value)',
        '    if "=" not in value:\n        return value',
        ("tests/loader/test_loader_fallback_integrity.py::test_bad_setup_is_exit_2_naming_the_fix_never_a_fallback",),
        "MODEL_CACHE_BUCKET=s3://name is exit 2, never a silent Hub fallback",
    ),
    Mutant(
        "issue23: a cache directory that cannot be made is not checked up front",
        f"{LOADER}/api.py",
        "        cache_dir=usable_cache_dir(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()),",
        "        cache_dir=(Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()),",
        ("tests/loader/test_loader_fallback_integrity.py::test_bad_setup_is_exit_2_naming_the_fix_never_a_fallback",),
        "a cache directory that cannot be created is exit 2 naming HF_HUB_CACHE, before the Hub is asked",
    ),
    Mutant(
        "issue23: memory stream hands out a file's last tensor before comparing its digest",
        f"{LOADER}/memory.py",
        "                    if state.handed == len(state.specs):\n"
        "                        # Every byte of the file is hashed now: compare before the last tensor leaves,\n"
        "                        # so a consumer that stops at the last tensor it expects never gets it unchecked.\n"
        "                        self._finish(state)\n",
        "",
        (
            "tests/loader/test_loader_memory_failures.py::test_a_consumer_that_stops_at_the_last_tensor_still_gets_integrity_error",
        ),
        "no tensor leaves unchecked, the last one included",
    ),
    Mutant(
        "issue23: memory_limit ignored when packing small tensors",
        f"{LOADER}/memory.py",
        "        over_budget = memory_limit is not None and pack_cost + tensor_cost(spec) > memory_limit",
        "        over_budget = False",
        (
            "tests/loader/test_loader_memory_failures.py::test_memory_limit_bounds_the_bytes_held_when_small_tensors_are_packed",
        ),
        "a packed read is never larger than memory_limit",
    ),
    Mutant(
        "issue23: per-tensor overhead not counted against memory_limit",
        f"{LOADER}/memory.py",
        "    return spec.end - spec.begin + TENSOR_OVERHEAD",
        "    return spec.end - spec.begin",
        ("tests/loader/test_loader_memory_failures.py::test_many_tiny_tensors_are_held_a_few_at_a_time",),
        "100k tiny tensors are held a few at a time, not all at once",
    ),
    Mutant(
        "issue23: memory stream loads every safetensors file, not the index's shards",
        f"{LOADER}/memory.py",
        "    if index is not None:\n        return _shards_of(index, read(index), by_path, label)",
        "    if False:\n        return _shards_of(index, read(index), by_path, label)",
        ("tests/loader/test_loader_memory_failures.py::test_a_consolidated_copy_beside_the_shards_is_not_loaded",),
        "a consolidated copy beside the shards is not loaded twice",
    ),
    Mutant(
        "issue23: memory stream header decoded as any JSON encoding",
        f"{LOADER}/memory.py",
        '        text = bytes(raw[8 : 8 + length]).decode("utf-8")',
        "        text = bytes(raw[8 : 8 + length]).decode(json.detect_encoding(bytes(raw[8 : 8 + length])))",
        ("tests/loader/test_loader_memory_failures.py::test_a_header_is_accepted_exactly_when_safetensors_accepts_it",),
        "headers safetensors rejects (UTF-16) are rejected",
    ),
    Mutant(
        "issue23: a dimension torch cannot hold is accepted on an empty tensor",
        f"{LOADER}/memory.py",
        "        if dim > MAX_DIMENSION or count > MAX_ELEMENTS:",
        "        if count > MAX_ELEMENTS:",
        ("tests/loader/test_loader_memory_failures.py::test_an_empty_tensor_torch_cannot_shape_is_an_integrity_error",),
        "a shape torch cannot hold is an IntegrityError, never torch's TypeError",
    ),
    Mutant(
        "issue23: Ctrl-C during a loader pull lets the pool fetch every queued part",
        f"{LOADER}/transfer.py",
        "left is what a kill leaves: journalled parts, resumable, no blob renamed.\n"
        "                        self._stop(futures)\n                        raise",
        "left is what a kill leaves: journalled parts, resumable, no blob renamed.\n                        raise",
        ("tests/reliability/test_interrupt.py::test_ctrl_c_stops_a_loader_pull_within_about_one_part",),
        "Ctrl-C stops model-cache-loader pull within about one part",
    ),
    Mutant(
        "issue23: Ctrl-C during a sync lets the pool copy every queued part",
        f"{CORE}/pipeline/hub_to_s3.py",
        "            stop.set()\n            for future in futures:\n                future.cancel()\n            raise",
        "            raise",
        ("tests/reliability/test_interrupt.py::test_ctrl_c_stops_a_sync_within_about_one_part",),
        "Ctrl-C stops model-cache sync within about one part",
    ),
    Mutant(
        "issue23: doctor reports HeadBucket's 404 as a generic failure",
        f"{CORE}/operations/doctor.py",
        '        if _code(exc) in ("404", "NotFound", "NoSuchBucket"):',
        '        if _code(exc) in ("NoSuchBucket",):',
        ("tests/cli/test_cli.py::test_every_command_reports_a_missing_bucket_with_the_same_exit_code",),
        "a missing bucket is the same exit code in every command",
    ),
    Mutant(
        "issue23: --bucket takes a URI",
        f"{CORE}/cli/common.py",
        "        return ids.validate_bucket(text)",
        "        return text",
        ("tests/cli/test_cli.py::test_a_bucket_given_as_a_uri_is_a_usage_error",),
        "--bucket s3://name is a usage error naming the bucket, not an S3 error",
    ),
    Mutant(
        "issue23: gc's mark counts for the claims' seven days, not its lease",
        f"{CORE}/pipeline/claims.py",
        '        if item["LastModified"] >= (oldest_lease if name == layout.GC_MARKER else oldest_claim):',
        '        if item["LastModified"] >= oldest_claim:',
        ("tests/operations/test_gc_lease.py::test_a_killed_gcs_mark_blocks_runs_only_for_its_lease",),
        "a killed gc blocks a commit for minutes, not days",
    ),
    Mutant(
        "issue23: gc deletes on after its lease could have lapsed",
        f"{CORE}/pipeline/claims.py",
        "        if elapsed > GC_LEASE_SECONDS / 2:",
        "        if False:",
        ("tests/operations/test_gc_lease.py::test_a_gc_that_cannot_renew_its_lease_in_time_stops_deleting",),
        "a gc that could not renew in time stops deleting before a run could take the snapshot",
    ),
    Mutant(
        "issue23: gc does not renew its lease between delete batches",
        f"{CORE}/operations/gc.py",
        "        if renew is not None:\n            renew()",
        "        if False:\n            renew()",
        ("tests/operations/test_gc_lease.py::test_gc_renews_its_lease_before_each_batch_and_stops_when_it_cannot",),
        "gc's mark stays in force while it deletes",
    ),
    Mutant(
        "issue23: the repo quota checks only the request's selection at Plan",
        f"{CORE}/pipeline/prepare.py",
        '        policy.check_union(repo_id, revision, (held or {}).get("files", []), every_file)',
        "        policy.check_union(repo_id, revision, [], every_file)",
        ("tests/security/test_governance.py::test_narrow_requests_cannot_add_up_past_the_repo_quota",),
        "narrow requests cannot add up past the per-repo quota",
    ),
    Mutant(
        "issue23: Publish writes a union over the repo quota",
        f"{CORE}/pipeline/publish.py",
        '        policy.check_union(manifest["repo_id"], manifest["revision"], merged["files"], [])',
        "        pass",
        ("tests/security/test_governance.py::test_concurrent_narrow_requests_cannot_publish_past_the_repo_quota",),
        "concurrent narrow requests cannot publish past the per-repo quota",
    ),
    Mutant(
        "issue23: the in-flight ledger is written without a condition",
        f"{CORE}/pipeline/inflight.py",
        'put_bytes(self.s3, self.bucket, self.key, body, "application/json", if_match=etag, create=etag is None)',
        'put_bytes(self.s3, self.bucket, self.key, body, "application/json")',
        ("tests/security/test_governance.py::test_the_limit_is_exact_under_concurrent_request_lambdas",),
        "two request Lambdas never take the last slot twice",
    ),
    Mutant(
        "issue23: a start the listing does not show yet frees its slot",
        f"{CORE}/pipeline/inflight.py",
        "if slot.name in listed or (_age(slot, now) < LISTING_GRACE_SECONDS and not self.ended(slot.name))",
        "if slot.name in listed",
        ("tests/security/test_governance.py::test_a_start_the_listing_does_not_show_yet_still_holds_its_slot",),
        "ListExecutions' lag cannot let a request past the limit",
    ),
    Mutant(
        "issue23: one sender may hold every slot",
        f"{CORE}/pipeline/inflight.py",
        "            if sender and held >= share:",
        "            if False:",
        ("tests/security/test_governance.py::test_one_sender_cannot_hold_every_slot",),
        "one sender's flood cannot starve the others",
    ),
    Mutant(
        "issue23: a request refused for capacity goes back to the queue as a failure",
        f"{CORE}/pipeline/request_message.py",
        "    except TooManyExecutions:\n        if not queue_url:\n            raise",
        "    except TooManyExecutions:\n        raise",
        (
            "tests/security/test_governance.py::test_a_request_beyond_the_limit_is_deferred_never_sent_to_the_dead_letter_queue",
        ),
        "saturation never sends a valid request to the dead-letter queue",
    ),
    Mutant(
        "issue23: a deferred request loses its sender",
        f"{CORE}/pipeline/request_message.py",
        "            return self.attributes.get(SENDER_ATTRIBUTE) or self.sender_id, int(count) if count.isdigit() else 0",
        "            return self.sender_id, int(count) if count.isdigit() else 0",
        (
            "tests/security/test_governance.py::test_a_request_beyond_the_limit_is_deferred_never_sent_to_the_dead_letter_queue",
        ),
        "a deferred request starts as the sender who asked, not as the request Lambda",
    ),
    Mutant(
        "issue23: the deferral attributes are believed from any sender",
        f"{CORE}/pipeline/request_message.py",
        "        if own_principal and self.sender_id and principal(self.sender_id) == own_principal:",
        "        if self.attributes:",
        ("tests/security/test_governance.py::test_a_sender_cannot_forge_the_deferral_attributes",),
        "no sender can pass itself off as another through the deferral attributes",
    ),
    Mutant(
        "issue23: the deferral delay is fixed, not jittered",
        f"{CORE}/pipeline/request_message.py",
        "    return (rng or random.Random()).randint(DEFER_FLOOR_SECONDS, ceiling)  # noqa: S311 - jitter, not a secret",
        "    return ceiling",
        ("tests/security/test_governance.py::test_the_deferral_delay_is_full_jitter_under_a_doubling_ceiling",),
        "deferred requests spread out instead of returning together",
    ),
    Mutant(
        "issue23: the queue policy refuses the request Lambda's own deferrals",
        "template.yaml",
        "              - ArnNotLike:\n                  aws:PrincipalArn: !GetAtt RequestFunctionRole.Arn\n                StringNotEquals:",
        "              - StringNotEquals:",
        (
            "tests/security/test_roles_under_aws_rules.py::test_the_request_lambda_may_defer_to_its_queue_and_no_further",
        ),
        "the request Lambda can send a deferred request back under the queue policy",
    ),
    # --- issue 24: one CLI contract across model-cache and model-cache-loader -------------------
    Mutant(
        "issue24: the loader falls back to the Hub on a wrong setup without being asked",
        f"{LOADER}/api.py",
        '            if not isinstance(exc, S3UnavailableError) and self.fallback != "always":',
        "            if False:",
        ("tests/cli/test_cli_contract.py::test_the_loader_falls_back_on_a_wrong_setup_only_when_asked",),
        "a wrong bucket or no credentials is an error, not a silent Hub download",
    ),
    Mutant(
        "issue24: the loader reports an S3 outage as a wrong setup",
        f"{LOADER}/transfer.py",
        '    return S3UnavailableError(\n        f"S3 unreachable reading',
        '    return AccessError(\n        f"S3 unreachable reading',
        ("tests/cli/test_cli_contract.py::test_every_failure_class_has_one_exit_code_in_both_clis",),
        "S3 unavailable is exit 7 in both CLIs",
    ),
    Mutant(
        "issue24: model-cache's integrity failure keeps its own exit code",
        f"{CORE}/contract/errors.py",
        '    as the loader\'s IntegrityError (docs/reference/cli.md, the table both CLIs share)."""\n\n    exit_code = 4',
        '    as the loader\'s IntegrityError (docs/reference/cli.md, the table both CLIs share)."""\n\n    exit_code = 6',
        ("tests/cli/test_cli_contract.py::test_every_failure_class_has_one_exit_code_in_both_clis",),
        "integrity is exit 4 in both CLIs",
    ),
    Mutant(
        "issue24: errors under --json are plain text",
        f"{CORE}/cli/common.py",
        "    if as_json:",
        "    if False:",
        ("tests/cli/test_cli_contract.py::test_errors_under_json_are_json",),
        "a --json caller can parse the failure",
    ),
    Mutant(
        "issue24: model-cache ignores MODEL_CACHE_BUCKET",
        f"{CORE}/cli/common.py",
        "        default=from_env,\n        required=from_env is None,",
        "        default=None,\n        required=True,",
        ("tests/cli/test_cli_contract.py::test_model_cache_reads_the_bucket_and_prefix_from_the_environment",),
        "both CLIs read the same environment",
    ),
    Mutant(
        "issue24: model-cache ignores AWS_REGION",
        f"{CORE}/cli/common.py",
        '    if os.environ.get("AWS_REGION") and not os.environ.get("AWS_DEFAULT_REGION"):',
        "    if False:",
        ("tests/cli/test_cli_contract.py::test_aws_region_alone_is_enough",),
        "AWS_REGION alone is a region",
    ),
    Mutant(
        "issue24: the loader prints third-party INFO logs by default",
        f"{LOADER}/cli.py",
        "        logging.getLogger(name).setLevel(logging.INFO if verbose else logging.WARNING)",
        "        logging.getLogger(name).setLevel(logging.INFO)",
        ("tests/cli/test_cli_contract.py::test_a_pull_off_a_terminal_shows_no_third_party_logs_and_no_progress",),
        "botocore's credential lines are not in an init container's log",
    ),
    Mutant(
        "issue24: a closed pipe ends model-cache with a traceback",
        f"{CORE}/cli/main.py",
        "    except BrokenPipeError:",
        "    except ZeroDivisionError:",
        ("tests/cli/test_cli_contract.py::test_a_closed_pipe_ends_model_cache_quietly",),
        "`model-cache ls | head` ends quietly",
    ),
    Mutant(
        "issue24: a scheduled refresh of a gated model without a token fails every night",
        f"{CORE}/pipeline/prepare.py",
        "    if snapshot.gated and token is None and requested_by == REFRESH_REQUESTER:",
        "    if False:",
        (
            "tests/security/test_gated_prefix.py::test_a_scheduled_refresh_skips_a_gated_model_on_a_stack_without_a_token",
        ),
        "a stack without a token does not page every night for a gated tracked model",
    ),
    Mutant(
        "issue24: a team's request for a gated repo is skipped instead of refused",
        f"{CORE}/pipeline/prepare.py",
        "    if snapshot.gated and token is None and requested_by == REFRESH_REQUESTER:",
        "    if snapshot.gated and token is None:",
        (
            "tests/security/test_gated_prefix.py::test_a_scheduled_refresh_skips_a_gated_model_on_a_stack_without_a_token",
        ),
        "only the schedule's runs are skipped; a team still gets GatedRepo",
    ),
    # --- issue 24, item 1: a short guided deploy, the Fargate copier optional ---------------------
    Mutant(
        "issue24: a huge file on a stack without the copier goes to a Fargate task that does not exist",
        f"{CORE}/pipeline/plan.py",
        "            if not options.copier:",
        "            if False:",
        (
            "tests/pipeline/test_state_machine.py::test_a_stack_without_the_copier_refuses_a_huge_file_at_plan_naming_the_parameter",
        ),
        "without the copier, Plan refuses the file naming CopierImageUri",
    ),
    Mutant(
        "issue24: the state machine never tells Plan the stack has no copier",
        "statemachine/model_cache.asl.json",
        """            "copier.$": "States.StringToJson('${CopierConfigured}')",\n""",
        "",
        (
            "tests/pipeline/test_state_machine.py::test_a_stack_without_the_copier_refuses_a_huge_file_at_plan_naming_the_parameter",
        ),
        "the template's HasCopier reaches Plan through the ASL",
    ),
    Mutant(
        "issue24: a tuning knob is a guided-deploy question again",
        "template.yaml",
        "Parameters:\n  ExistingBucketName:\n",
        "Parameters:\n  LogLevel:\n    Type: String\n    Default: INFO\n  ExistingBucketName:\n",
        ("tests/deploy/test_guided_deploy.py",),
        "at most 15 questions, each described and grouped",
    ),
    Mutant(
        "issue24: the copier's task definition is created on a stack without the copier",
        "template.yaml",
        "  CopierTaskDefinition:\n    Type: AWS::ECS::TaskDefinition\n    Condition: HasCopier\n",
        "  CopierTaskDefinition:\n    Type: AWS::ECS::TaskDefinition\n",
        ("tests/deploy/test_guided_deploy.py::test_the_fargate_copier_is_optional_and_its_network_required_with_it",),
        "the stack deploys without an image, VPC or subnets",
    ),
    # --- issue 24, item 3: the loader's init-container image ---------------------------------------
    Mutant(
        "issue24: the init image installs a Hub client the suite never ran",
        "containers/loader-init/requirements.txt",
        "huggingface_hub==2.4.0",
        "huggingface_hub==2.3.0",
        (
            "tests/deploy/test_loader_init_image.py::test_the_image_installs_the_tested_versions_of_the_loader_and_its_extras",
        ),
        "the image runs what the tests ran",
    ),
    Mutant(
        "issue24: the init image hides the loader's exit code behind a shell",
        "containers/loader-init/Dockerfile",
        'ENTRYPOINT ["python", "-m", "model_cache_loader", "pull"]',
        'ENTRYPOINT ["sh", "-c", "python -m model_cache_loader pull \\"$@\\"; exit 0", "--"]',
        ("tests/deploy/test_loader_init_image.py",),
        "the container's exit code is the loader's",
    ),
    # --- issue 25: the loader's sha256 keeps pace with its download -------------------------------
    Mutant(
        "issue25: sha256 blobs get one wave of parts, hashed after the last byte",
        f"{LOADER}/transfer.py",
        "        waves = HASH_WAVES if in_order else 1",
        "        waves = 1",
        ("tests/loader/test_loader_pull.py::test_sha256_blobs_get_parts_in_waves_queued_in_turn",),
        "the hash of a wave overlaps the next wave's download",
    ),
    Mutant(
        "issue25: blobs are queued one after another",
        f"{LOADER}/transfer.py",
        "            tasks = _interleaved(queues) if INTERLEAVE_BLOBS else [task for queue in queues for task in queue]",
        "            tasks = [task for queue in queues for task in queue]",
        ("tests/loader/test_loader_pull.py::test_a_pull_queues_the_blobs_parts_in_turn",),
        "every blob's hash frontier moves from the first wave",
    ),
    Mutant(
        "issue25: the receiving threads start the writeback themselves",
        f"{LOADER}/transfer.py",
        "        self._writeback.put(job.fd, start, end - start)\n",
        "        start_writeback(job.fd, start, end - start)\n",
        (
            "tests/loader/test_loader_pull.py::"
            "test_the_receiving_threads_never_wait_on_the_disk_and_every_writeback_starts_before_the_fsync",
        ),
        "a receiving thread never waits on the disk; the check is not held by writeback",
    ),
    Mutant(
        "issue25: the blobs fsynced while their writeback is still queued",
        f"{LOADER}/transfer.py",
        "            self._writeback.finish()  # every part's writeback started, before any fsync waits for it\n",
        "",
        (
            "tests/loader/test_loader_pull.py::"
            "test_the_receiving_threads_never_wait_on_the_disk_and_every_writeback_starts_before_the_fsync",
        ),
        "every part's writeback is started before the fsync, which then waits for little",
    ),
    Mutant(
        "issue25: the default check takes the CRC for an unpinned read",
        f"{LOADER}/transfer.py",
        '        verify = "crc64nvme" if pinned else "sha256"',
        '        verify = "crc64nvme"',
        (f"{AUTO_TESTS}::test_a_flipped_bit_is_caught_by_the_chosen_check_and_nothing_kept",),
        "a file that may have been replaced since the pipeline checked it is checked by sha256",
    ),
    Mutant(
        "issue25: S3's overwritable null version taken for a pin",
        f"{LOADER}/manifest.py",
        '    return version_id if version_id and version_id != "null" else None',
        "    return version_id or None",
        (f"{AUTO_TESTS}::test_the_default_check_is_crc64nvme_only_for_a_read_pinned_to_the_checked_version",),
        "only a version whose bytes cannot change lets the CRC stand in for sha256",
    ),
    Mutant(
        "issue25: to memory, a replica's read taken for pinned",
        f"{LOADER}/memory.py",
        "pinned=self.own_bucket and entry.version_id is not None)",
        "pinned=entry.version_id is not None)",
        (f"{AUTO_TESTS}::test_to_memory_the_default_check_follows_the_pin_too",),
        "a replica, read at its current versions, is checked by sha256 to memory too",
    ),
    Mutant(
        "issue25: asked for sha256, a CRC-only marker trusted",
        f"{LOADER}/api.py",
        '        return ("sha256",) if self.verify == "sha256" else DIGEST_CHECKS',
        "        return DIGEST_CHECKS",
        (f"{AUTO_TESTS}::test_asked_for_sha256_a_blob_checked_only_by_its_crc_is_hashed_again_not_fetched",),
        "--verify sha256 means every blob's sha256 was compared",
    ),
)


# --- the offline world authorizes like AWS (issue 22): each rule broken on its own ----------------------
WORLD_TESTS = ("tests/security/test_authz_world.py",)
ROLE_TESTS = ("tests/security/test_roles_under_aws_rules.py",)
WORLD = DEVTOOLS
WORLD_MUTANTS: tuple[Mutant, ...] = (
    Mutant(
        "world: a missing key is 404 to anyone",
        f"{WORLD}/s3_authz.py",
        'if status.startswith("404") and _bucket(call.bucket) is not None:',
        'if False and status.startswith("404") and _bucket(call.bucket) is not None:',
        WORLD_TESTS,
        "S3 answers a missing key 403 to a caller without s3:ListBucket (GetObject API reference)",
    ),
    Mutant(
        "world: a read by version id needs only GetObject",
        f"{WORLD}/s3_authz.py",
        '        return [Needed("s3:GetObjectVersion" if versioned else "s3:GetObject", call.object_arn)]\n',
        '        return [Needed("s3:GetObject", call.object_arn)]\n',
        WORLD_TESTS,
        "GetObject/HeadObject with versionId need s3:GetObjectVersion",
    ),
    Mutant(
        "world: SSE-KMS bodies need no kms:Decrypt",
        f"{WORLD}/s3_authz.py",
        "            if kms_key:\n                needed = _kms(",
        "            if False:\n                needed = _kms(",
        WORLD_TESTS,
        "reading an SSE-KMS object under a customer managed key needs kms:Decrypt",
    ),
    Mutant(
        "world: a permissions boundary is ignored",
        f"{WORLD}/iam_policy.py",
        "    if identity_allows and not boundary_allows:",
        "    if False:",
        WORLD_TESTS,
        "a boundary limits what identity policies grant",
    ),
    Mutant(
        "world: an explicit Deny does not win",
        f"{WORLD}/iam_policy.py",
        '        denied = matching(policies, request, "Deny", resource_account)',
        "        denied: list[str] = []",
        WORLD_TESTS,
        "an explicit Deny in any policy overrides every Allow",
    ),
    Mutant(
        "world: a prefix-bound ListBucket makes a missing key 404",
        f"{WORLD}/s3_authz.py",
        '            needed = Needed("s3:ListBucket", call.bucket_arn)',
        '            needed = Needed("s3:ListBucket", call.bucket_arn, {"s3:prefix": call.key})',
        WORLD_TESTS,
        "the decided reading: the read carries no s3:prefix, so a prefix-conditioned ListBucket does not count",
    ),
    Mutant(
        "world: the request queue's policy is not evaluated",
        f"{WORLD}/s3_authz.py",
        "            resource_policy = queue_policy(needed.resource)",
        "            resource_policy = None",
        ("tests/security/test_roles_under_aws_rules.py::test_only_tagged_or_listed_senders_may_request_a_model",),
        "SendMessage needs the queue policy's consent: only listed or tagged senders",
    ),
    Mutant(
        "authz: the kro pods may decrypt with any KMS key",
        "deploy/kro/ray-service.yaml",
        '"Resource": "\' + schema.spec.modelCacheKmsKeyArn + \'", "Condition"',
        '"Resource": "*", "Condition"',
        (
            "tests/deploy/test_deploy_kro_rgd.py::test_the_pods_may_decrypt_with_the_caches_key_only_when_named_and_only_through_s3",
        ),
        "an instance's pods decrypt with the cache's own key only, and only through S3",
    ),
    Mutant(
        "authz: every 403 on a pipeline read is taken for a miss",
        f"{CORE}/adapters/s3.py",
        '    return not any(item.get("Key") == key for item in listed.get("Contents", []))',
        "    return True",
        ROLE_TESTS,
        "a denial stays a denial: only a listing that lacks the key makes a 403 a miss",
    ),
    Mutant(
        "authz: every 403 on a loader read is taken for a miss",
        f"{LOADER}/api.py",
        '    return not any(item.get("Key") == key for item in listed.get("Contents", []))',
        "    return True",
        ROLE_TESTS,
        "a pod refused the key's bytes (no kms:Decrypt) exits 5, not 3 (a miss would start a Hub fallback)",
    ),
    Mutant(
        "authz: the write protection admits no operator",
        "template.yaml",
        "                - aws:PrincipalArn: !Ref OperatorPrincipalArns",
        "                - aws:PrincipalArn: arn:aws:iam::000000000000:role/nobody",
        ROLE_TESTS,
        "operators named in OperatorPrincipalArns run sync, sync --force, gc and publish-loader",
    ),
    Mutant(
        "authz: the loader release is not write-protected",
        "template.yaml",
        '              - !Sub "${CacheBucket.Arn}/model-cache-loader/*"\n            Condition:',
        "            Condition:",
        ROLE_TESTS,
        "code every pod runs is written only by the pipeline and the operators",
    ),
    Mutant(
        "retry: a Lambda timeout (Lambda.Unknown) fails publish",
        "statemachine/model_cache.asl.json",
        '"FunctionName": "${PublishFunctionArn}",\n        "Payload": {\n          "bucket.$": "$.plan.bucket",\n          "plan_key.$": "$.plan.plan_key"\n        }\n      },\n      "TimeoutSeconds": 300,\n      "Retry": [\n        {\n          "ErrorEquals": [\n            "Lambda.ServiceException",\n            "Lambda.Unknown",',
        '"FunctionName": "${PublishFunctionArn}",\n        "Payload": {\n          "bucket.$": "$.plan.bucket",\n          "plan_key.$": "$.plan.plan_key"\n        }\n      },\n      "TimeoutSeconds": 300,\n      "Retry": [\n        {\n          "ErrorEquals": [\n            "Lambda.ServiceException",',
        ("tests/pipeline/test_state_machine.py::test_a_lambda_timeout_is_reported_as_lambda_unknown_and_retried",),
        "Step Functions reports a timeout or out-of-memory end as Lambda.Unknown; the Retry must name it",
    ),
)


# --- least privilege, proved one way: every S3 and KMS grant of every role is needed by a test ---------
# Generated from the policies rendered out of template.yaml (model_cache_devtools.stack_iam.grants):
# each entry takes one action away from one Allow statement of one role (or of the pods' policy and
# boundary) in the offline world, and the tests that run the pipeline and the loader under those roles
# must then fail. Only S3 and KMS are enforced offline, so only their grants are entries.
GRANT_TESTS = (
    "tests/security/test_roles_under_aws_rules.py",
    "tests/pipeline/test_state_machine.py",
    "tests/operations/test_refresh_state_machine.py",
)


def grant_mutants() -> tuple[Mutant, ...]:
    from model_cache_devtools import stack_iam

    # Every optional statement rendered: a customer KMS key, a gated prefix, operators.
    iam = stack_iam.render_stack_iam(
        REPO_ROOT / "template.yaml",
        stack_name="mutants",
        bucket="model-cache-mutants",
        parameters={
            **stack_iam.SAMPLE_PARAMETERS,
            "GatedPrefix": "gated-models",
            "KmsKeyArn": stack_iam.SAMPLE_KMS_KEY_ARN,
        },
        resources=stack_iam.resource_values("mutants", "mutants"),
    )
    return tuple(
        Mutant(
            f"grant: {grant.owner} without {grant.action} ({grant.sid})",
            "",
            "",
            "",
            GRANT_TESTS,
            "least privilege: no grant is there that no test needs",
            env=((stack_iam.WITHOUT_GRANT_ENV, grant.spec),),
        )
        for grant in stack_iam.grants(iam)
    )


def tracked_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    return [path for path in listed.split("\0") if path and (REPO_ROOT / path).is_file()]


def scratch_copy(files: list[str], into: Path) -> None:
    for path in files:
        target = into / path
        target.parent.mkdir(parents=True, exist_ok=True)
        source = REPO_ROOT / path
        if source.is_symlink():
            target.symlink_to(os.readlink(source))
        else:
            shutil.copy2(source, target)
    # The template tests run the linters from .venv-tools (checkov, cfn-lint): the copy uses this tree's.
    tools = REPO_ROOT / ".venv-tools"
    if tools.is_dir() and not (into / ".venv-tools").exists():
        (into / ".venv-tools").symlink_to(tools)


def apply(mutant: Mutant, tree: Path) -> str | None:
    """Apply the replacement in `tree`; None when done, else why it could not be."""
    if mutant.env and not mutant.old:
        return None  # the change is the environment of the test run
    target = tree / mutant.path
    text = target.read_text()
    count = text.count(mutant.old)
    if count != 1:
        return f"the guarded text occurs {count} times in {mutant.path}: update the entry"
    target.write_text(text.replace(mutant.old, mutant.new))
    return None


def run_tests(
    tree: Path, tests: tuple[str, ...], *, first_failure: bool, extra_env: tuple[tuple[str, str], ...] = ()
) -> tuple[int, str]:
    env = {
        **os.environ,
        **dict(extra_env),
        "PYTHONPATH": os.pathsep.join(
            [str(tree / "layers/core"), str(tree / "loader/src"), str(tree / "devtools/src")]
        ),
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:randomly", f"--timeout={PYTEST_TIMEOUT_SECONDS}"]
    command += ["-x"] if first_failure else []
    completed = subprocess.run([*command, *tests], cwd=tree, env=env, capture_output=True, text=True)
    return completed.returncode, completed.stdout + completed.stderr


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", default="", help="run the entries whose name contains this text")
    parser.add_argument("--exclude", default=None, help="leave out the entries whose name contains this text")
    parser.add_argument("--list", action="store_true", help="print the entries and stop")
    args = parser.parse_args(argv)
    chosen = [
        mutant
        for mutant in (*MUTANTS, *WORLD_MUTANTS, *grant_mutants())
        if args.only in mutant.name and (args.exclude is None or args.exclude not in mutant.name)
    ]
    if args.list:
        for mutant in chosen:
            print(f"{mutant.name}  ({mutant.path}): {mutant.guards}")
        return 0
    files = tracked_files()
    scratch = Path(tempfile.mkdtemp(prefix="model-cache-mutants-"))
    try:
        baseline = scratch / "baseline"
        scratch_copy(files, baseline)
        union = tuple(dict.fromkeys(test for mutant in chosen for test in mutant.tests))
        print(f"baseline: {len(union)} test selections, unmutated ...", flush=True)
        code, output = run_tests(baseline, union, first_failure=False)
        if code != 0:
            print("\n".join(output.splitlines()[-40:]))
            print("baseline FAILED: the entries' tests must pass before any mutant means anything")
            return 2
        rows: list[tuple[str, str, str, float]] = []
        for number, mutant in enumerate(chosen, 1):
            tree = scratch / f"mutant-{number:02d}"
            scratch_copy(files, tree)
            started = time.monotonic()
            problem = apply(mutant, tree)
            if problem is not None:
                verdict = f"error: {problem}"
            else:
                code, _ = run_tests(tree, mutant.tests, first_failure=True, extra_env=mutant.env)
                verdict = {0: "SURVIVED", 1: "killed"}.get(code, f"error: pytest exit {code}")
            seconds = time.monotonic() - started
            shown_tests = ", ".join(test.replace("tests/", "").split("::")[-1] for test in mutant.tests)
            rows.append((mutant.name, shown_tests, verdict, seconds))
            print(f"[{number:2d}/{len(chosen)}] {verdict:8} {mutant.name} ({seconds:.0f} s)", flush=True)
            shutil.rmtree(tree, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    print()
    print("| mutation | tests run | result |")
    print("| --- | --- | --- |")
    for name, tests, verdict, _ in rows:
        print(f"| {name} | {tests} | {verdict} |")
    killed = sum(1 for row in rows if row[2] == "killed")
    print(f"\n{killed} of {len(rows)} mutants killed")
    return 0 if killed == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
