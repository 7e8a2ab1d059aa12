"""`make scale`: the real planner on the shapes of the largest public models, every figure held to its AWS limit.

Nothing is transferred: each listing (file counts and sizes of the real repo, from its
model.safetensors.index.json, shard sizes evened out) goes through the real `make_plan`, the real
`model_cache.pipeline.limits` and the real Plan task result (`steps.planned_result`), and the state machine's
concurrencies are read from statemachine/model_cache.asl.json and the template. Durations come from
the stated rates (`limits.SLOW` / `limits.FAST`), never from this machine. The figures land in
bench/results/scale.json and docs/explanation/performance.md; tests/scale holds every one to its limit.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from bench.common import ROOT, measure_and_record
from model_cache.adapters.hubapi import HubFile, Snapshot
from model_cache.contract.selection import select_paths
from model_cache.pipeline import limits, steps, work_files
from model_cache.pipeline.plan import S3_MAX_PARTS, GiB, MiB, Plan, PlanOptions

NAME = "scale"
GB = 10**9
ASL_PATH = ROOT / "statemachine" / "model_cache.asl.json"
TEMPLATE_PATH = ROOT / "template.yaml"
BEFORE_UNIT_SIZE = 4 * GiB  # the default unit size before CompleteFiles, when Finalize read split files back

SMALL_GET_S = 0.03  # one small JSON GET (a unit's or completion's record), as Finalize reads them 16 at a time
COPY_FUNCTION_MEMORY_GB = 2.0  # template Settings CopyFunctionMemory, for Lambda GB-s
FARGATE_VCPU = 2  # template Settings CopierCpu 2048
FARGATE_MEMORY_GB = 8  # template Settings CopierMemory 8192

# us-east-1 list prices, USD.
LAMBDA_GB_S = 0.0000133334  # arm64
LAMBDA_PER_REQUEST = 0.20 / 1e6
FARGATE_VCPU_S = 0.04048 / 3600
FARGATE_GB_S = 0.004445 / 3600
S3_PUT = 0.005 / 1000
S3_GET = 0.0004 / 1000
SFN_TRANSITION = 0.025 / 1000
S3_GB_MONTH = 0.023
NAT_PER_GB = 0.045  # only the Fargate copier runs in the VPC; the Lambdas reach the Hub without a NAT


@dataclass(frozen=True)
class Shape:
    name: str
    description: str
    files: tuple[tuple[str, int], ...]
    exclude: tuple[str, ...] = ()


def _shards(prefix: str, count: int, total: int, suffix: str = "safetensors") -> list[tuple[str, int]]:
    """`count` shards named as transformers names them, `total` bytes evened out over them."""
    each = total // count
    sizes = [each] * (count - 1) + [total - each * (count - 1)]
    return [(f"{prefix}-{i:05d}-of-{count:05d}.{suffix}", size) for i, size in enumerate(sizes, start=1)]


_CONFIGS = [
    (".gitattributes", 1_519),
    ("README.md", 12_000),
    ("config.json", 1_000),
    ("generation_config.json", 180),
    ("model.safetensors.index.json", 60_000),
    ("tokenizer.json", 9_085_000),
    ("tokenizer_config.json", 50_000),
]

SHAPES: tuple[Shape, ...] = (
    Shape(
        "mistral-7b",
        "Mistral-7B-Instruct-v0.3: 3 shards (4.9-5.0 GB) for transformers; consolidated.safetensors excluded",
        (
            *_CONFIGS,
            ("model-00001-of-00003.safetensors", 4_949_453_792),
            ("model-00002-of-00003.safetensors", 4_999_819_336),
            ("model-00003-of-00003.safetensors", 4_546_807_800),
            ("consolidated.safetensors", 14_496_078_512),
            ("tokenizer.model.v3", 587_404),
            ("params.json", 202),
        ),
        exclude=("consolidated.safetensors",),
    ),
    Shape(
        "llama-3-70b",
        "Meta-Llama-3-70B-Instruct: 30 shards, 141.1 GB",
        tuple(_CONFIGS + _shards("model", 30, 141_107_412_992)),
    ),
    Shape(
        "mixtral-8x22b",
        "Mixtral-8x22B-v0.1: 59 shards, 281.2 GB",
        tuple(_CONFIGS + _shards("model", 59, 281_241_000_000)),
    ),
    Shape("deepseek-v3", "DeepSeek-V3: 163 shards, 688.6 GB", tuple(_CONFIGS + _shards("model", 163, 688_586_727_753))),
    Shape(
        "llama-3.1-405b",
        "Meta-Llama-3.1-405B-Instruct: 191 shards, 811.7 GB",
        tuple(_CONFIGS + _shards("model", 191, 811_706_941_440)),
    ),
    Shape(
        "wide-2000",
        "a 2,000-file repo: 1,990 small files (4 KB-4 MB) beside 10 shards of 2 GB",
        tuple(
            [(f"assets/part-{i:04d}.dat", 4_000 + (i * 2_011) % 4_000_000) for i in range(1_990)]
            + _shards("model", 10, 20 * GB)
        ),
    ),
    Shape("single-60gb", "one 60 GB file (a GGUF export)", (("model.gguf", 60 * GB),)),
)


def snapshot_of(shape: Shape, scale: int = 1) -> Snapshot:
    """The listing as the Hub would declare it, sizes divided by `scale`; oids derived from path and size."""
    files = []
    for path, size in shape.files:
        scaled = max(1, size // scale)
        digest = hashlib.sha256(f"{path}:{scaled}".encode()).hexdigest()
        lfs = scaled > 10 * MiB or path.endswith((".safetensors", ".gguf", ".bin"))
        files.append(HubFile(path=path, size=scaled, git_oid=digest[:40], lfs_sha256=digest if lfs else None))
    commit = hashlib.sha1(shape.name.encode(), usedforsecurity=False).hexdigest()
    return Snapshot(
        repo_id=f"scale/{shape.name}",
        revision="main",
        commit=commit,
        endpoint="https://huggingface.co",
        files=tuple(files),
    )


def plan_of(shape: Shape, options: PlanOptions | None = None, scale: int = 1) -> Plan:
    snapshot = snapshot_of(shape, scale)
    chosen = set(select_paths([f.path for f in snapshot.files], [], list(shape.exclude)))
    selected = [f for f in snapshot.files if f.path in chosen]
    return limits.make_run_plan(
        snapshot, selected, bucket="scale-model-bucket", prefix="models", options=options, plan_id=f"scale-{shape.name}"
    )


@dataclass
class Deployment:
    """What the model reads from the deployed definitions: Map concurrencies and the function sizes."""

    copy_concurrency: int
    complete_concurrency: int
    refresh_concurrency: int
    fargate_timeout_s: int
    copy_unit_reserved: int
    finalize_reserved: int
    asl: dict[str, Any] = field(repr=False)

    @classmethod
    def load(cls) -> Deployment:
        asl = json.loads(ASL_PATH.read_text())
        states = asl["States"]
        template = load_template()
        resources = template["Resources"]
        return cls(
            copy_concurrency=states["CopyUnits"]["MaxConcurrency"],
            complete_concurrency=states["CompleteFiles"]["MaxConcurrency"],
            refresh_concurrency=states["RefreshEachModel"]["MaxConcurrency"],
            fargate_timeout_s=states["CopyUnits"]["ItemProcessor"]["States"]["CopyUnitOnFargate"]["TimeoutSeconds"],
            copy_unit_reserved=int(template["Mappings"]["Settings"]["Stack"]["CopyUnitConcurrency"]),
            finalize_reserved=int(resources["FinalizeFunction"]["Properties"]["ReservedConcurrentExecutions"]),
            asl=asl,
        )


def load_template() -> dict[str, Any]:
    """template.yaml as the project's other readers of it read it (cfn-lint's decoder, tags resolved)."""
    from cfnlint.decode import decode

    template, problems = decode(str(TEMPLATE_PATH))
    if template is None:
        raise RuntimeError(f"cannot read {TEMPLATE_PATH}: {problems}")
    return dict(template)


def parent_history_events(asl: dict[str, Any], with_retries: bool) -> int:
    """Events of the parent execution on the success path (children keep their own histories):
    2 per Pass/Choice/Succeed, 5 per Task, 6 per Distributed Map; each retry adds 3 (failed, scheduled, started)."""
    path = [
        "Refresh?",
        "Plan",
        "AlreadyPublished?",
        "CopyUnits",
        "AnyFilesToComplete?",
        "CompleteFiles",
        "Finalize",
        "Publish",
        "CleanUpAfterSuccess",
        "Published",
    ]
    per_type = {"Pass": 2, "Choice": 2, "Succeed": 2, "Task": 5, "Map": 6}
    events = 2  # ExecutionStarted, ExecutionSucceeded
    for name in path:
        state = asl["States"][name]
        events += per_type[state["Type"]]
        if with_retries and state["Type"] == "Task":
            events += 3 * sum(retrier.get("MaxAttempts", 3) for retrier in state.get("Retry", []))
    return events


def child_history_events(asl: dict[str, Any]) -> int:
    """The most events one copy-unit child execution can have: Choice + Task with every retry spent."""
    task = asl["States"]["CopyUnits"]["ItemProcessor"]["States"]["CopyUnitOnLambda"]
    return 2 + 2 + 5 + 3 * sum(retrier.get("MaxAttempts", 3) for retrier in task.get("Retry", []))


def model(
    shape: Shape, deployment: Deployment | None = None, options: PlanOptions | None = None, scale: int = 1
) -> dict[str, Any]:
    """Every figure of one shape: the plan's shape, each task's worst case, wall time, payloads, events,
    request rates and cost, each limit with its headroom (limit / figure)."""
    deployment = deployment or Deployment.load()
    plan = plan_of(shape, options, scale)
    split = limits.split_paths(plan)
    multipart = [planned for planned in plan.files if planned.multipart]
    figures: dict[str, Any] = {
        "shape": shape.name,
        "description": shape.description,
        "files": len(plan.files),
        "bytes": plan.total_bytes,
        "largest_file": max(planned.size for planned in plan.files),
        "units": {
            "lambda": sum(1 for unit in plan.units if unit.runner == "lambda"),
            "fargate": sum(1 for unit in plan.units if unit.runner == "fargate"),
            "total": len(plan.units),
        },
        "largest_unit_bytes": max(unit.bytes for unit in plan.units),
        "multipart_files": len(multipart),
        "split_files": len(split),
        "max_parts_per_upload": max((planned.part_count for planned in multipart), default=1),
        "part_sizes": sorted({planned.part_size for planned in multipart}),
        "breaches": limits.breaches(plan),
    }
    for rates in (limits.SLOW, limits.FAST):
        units = [limits.unit_work(plan, unit, rates) for unit in plan.units]
        completions = [limits.completion_work(planned, planned.path in split, rates) for planned in multipart]
        lambda_units = [work for work in units if work.runner == "lambda"]
        fargate_units = [work for work in units if work.runner == "fargate"]
        worst_lambda = max(lambda_units, key=lambda work: work.seconds, default=None)
        worst_fargate = max(fargate_units, key=lambda work: work.seconds, default=None)
        worst_completion = max(completions, key=lambda work: work.seconds, default=None)
        timing = limits.wall_time(plan, rates)
        records = len(plan.units) + len(multipart)
        finalize_s = math.ceil(records / 16) * SMALL_GET_S
        figures[rates.name] = {
            "copy_unit_lambda": _work(worst_lambda),
            "copy_unit_fargate": _work(worst_fargate),
            "complete_file": _work(worst_completion),
            "finalize": {"records_read": records, "read_back_bytes": 0, "seconds": round(finalize_s, 1)},
            "finalize_before": _finalize_before(shape, options, scale, rates),
            "copy_wall_s": round(timing.copy_s, 1),
            "complete_wall_s": round(timing.complete_s, 1),
            "wall_s": round(timing.total_s + finalize_s, 1),
            "cost_usd": _cost(plan, units, completions),
        }
    items = steps.unit_items(plan)
    completions_json = work_files.completion_items(plan)
    figures["payload"] = {
        "plan_result_bytes": len(json.dumps(steps.planned_result(plan, items))),
        "largest_map_item_bytes": max(len(json.dumps(item)) for item in items + completions_json),
        "units_json_bytes": len(json.dumps(items)),
        "completions_json_bytes": len(json.dumps(completions_json)),
    }
    figures["history"] = {
        "parent_events": parent_history_events(deployment.asl, with_retries=False),
        "parent_events_every_retry": parent_history_events(deployment.asl, with_retries=True),
        "child_events_every_retry": child_history_events(deployment.asl),
    }
    figures["requests_per_s"] = _request_rates(plan, deployment, split)
    figures["headroom"] = _headroom(figures, deployment)
    return figures


def _work(work: limits.TaskWork | None) -> dict[str, Any] | None:
    if work is None:
        return None
    return {
        "label": work.label,
        "streamed_bytes": work.streamed_bytes,
        "read_back_bytes": work.read_back_bytes,
        "requests": work.requests,
        "seconds": round(work.seconds, 1),
        "limit_s": work.limit_s,
    }


def _finalize_before(shape: Shape, options: PlanOptions | None, scale: int, rates: limits.Rates) -> dict[str, Any]:
    """The one Finalize invocation before CompleteFiles: it completed every upload and read back, one
    after another, every file split across units of the then-default 4 GiB."""
    before_options = PlanOptions(
        **{**(options or PlanOptions()).to_json(), "unit_size": BEFORE_UNIT_SIZE // scale, "layout": "split"}
    )
    before = plan_of(shape, before_options, scale)
    read_back = sum(before.file(path).size for path in limits.split_paths(before))
    seconds = read_back / (rates.read_back * limits.MB)
    completes = sum(1 for planned in before.files if planned.multipart)
    return {
        "read_back_bytes": read_back,
        "completes": completes,
        "seconds": round(seconds, 1),
        "limit_s": limits.LAMBDA_TIMEOUT_S,
    }


def _cost(plan: Plan, units: list[limits.TaskWork], completions: list[limits.TaskWork]) -> dict[str, float]:
    lambda_s = sum(work.seconds for work in units if work.runner == "lambda") + sum(
        work.seconds for work in completions
    )
    fargate_s = sum(work.seconds + limits.FARGATE_START_S for work in units if work.runner == "fargate")
    fargate_bytes = sum(unit.bytes for unit in plan.units if unit.runner == "fargate")
    puts = sum(work.requests for work in units) // 2 + 2 * len(completions) + len(plan.files) + 8
    gets = sum(work.requests for work in completions) + len(plan.units) + len(completions)
    transitions = 12 + 3 * len(plan.units) + 3 * len(completions)
    figures = {
        "lambda": lambda_s * COPY_FUNCTION_MEMORY_GB * LAMBDA_GB_S
        + (len(units) + len(completions) + 6) * LAMBDA_PER_REQUEST,
        "fargate": fargate_s * (FARGATE_VCPU * FARGATE_VCPU_S + FARGATE_MEMORY_GB * FARGATE_GB_S),
        "nat": fargate_bytes / GB * NAT_PER_GB,
        "s3_requests": puts * S3_PUT + gets * S3_GET,
        "step_functions": transitions * SFN_TRANSITION,
    }
    figures["one_run"] = sum(figures.values())
    figures["storage_per_month"] = plan.total_bytes / GB * S3_GB_MONTH
    return {key: round(value, 4) for key, value in figures.items()}


def _request_rates(plan: Plan, deployment: Deployment, split: set[str]) -> dict[str, float]:
    """Peak requests per second on the snapshot's prefix: every copy slot uploading parts at the FAST rate,
    then every completion slot reading back in 16 MiB ranges."""
    part = min((planned.part_size for planned in plan.files if planned.multipart), default=16 * MiB)
    lambda_units = sum(1 for unit in plan.units if unit.runner == "lambda")
    busy = min(deployment.copy_concurrency, max(1, lambda_units))
    puts = busy * limits.FAST.lambda_unit * limits.MB / part
    readers = min(deployment.complete_concurrency, len(split))
    gets = readers * limits.FAST.read_back * limits.MB / (16 * MiB)
    return {"put": round(puts, 1), "get": round(gets, 1)}


def _headroom(figures: dict[str, Any], deployment: Deployment) -> dict[str, float]:
    """limit / figure for every limit the shape meets, at the SLOW rates (the larger, the safer)."""
    slow = figures["slow"]
    ratios: dict[str, float] = {}

    def ratio(name: str, limit: float, figure: float | None) -> None:
        if figure:
            ratios[name] = round(limit / figure, 1)

    ratio("lambda_900s_copy_unit", limits.LAMBDA_TIMEOUT_S, (slow["copy_unit_lambda"] or {}).get("seconds"))
    ratio("lambda_900s_complete_file", limits.LAMBDA_TIMEOUT_S, (slow["complete_file"] or {}).get("seconds"))
    ratio("lambda_900s_finalize", limits.LAMBDA_TIMEOUT_S, max(slow["finalize"]["seconds"], SMALL_GET_S))
    ratio("fargate_task_timeout", deployment.fargate_timeout_s, (slow["copy_unit_fargate"] or {}).get("seconds"))
    ratio("lambda_memory_10240mb", limits.LAMBDA_MAX_MEMORY_MB, COPY_FUNCTION_MEMORY_GB * 1024)
    ratio("sfn_payload_256kib", limits.SFN_MAX_PAYLOAD_BYTES, figures["payload"]["plan_result_bytes"])
    ratio("map_item_256kib", limits.DISTRIBUTED_MAP_MAX_ITEM_BYTES, figures["payload"]["largest_map_item_bytes"])
    ratio("history_25000_parent", limits.SFN_MAX_HISTORY_EVENTS, figures["history"]["parent_events_every_retry"])
    ratio("history_25000_child", limits.SFN_MAX_HISTORY_EVENTS, figures["history"]["child_events_every_retry"])
    ratio(
        "map_concurrency_10000",
        limits.DISTRIBUTED_MAP_MAX_CONCURRENCY,
        deployment.copy_concurrency * deployment.refresh_concurrency,
    )
    ratio("units_10000", limits.MAX_UNITS, figures["units"]["total"])
    ratio("parts_10000", S3_MAX_PARTS, figures["max_parts_per_upload"])
    ratio("s3_put_3500_per_prefix", limits.S3_PUT_PER_PREFIX_PER_S, figures["requests_per_s"]["put"])
    ratio("s3_get_5500_per_prefix", limits.S3_GET_PER_PREFIX_PER_S, figures["requests_per_s"]["get"])
    ratio("fargate_16_vcpu", limits.FARGATE_MAX_VCPU, FARGATE_VCPU)
    return ratios


def run() -> dict[str, Any]:
    deployment = Deployment.load()
    return {
        "rates": {rates.name: rates.__dict__ for rates in (limits.SLOW, limits.FAST)},
        "headroom_required": limits.HEADROOM,
        "copy_slots": deployment.copy_concurrency,
        "complete_slots": deployment.complete_concurrency,
        "shapes": [model(shape, deployment) for shape in SHAPES],
    }


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(cell) for cell in cells) + " |"


def _gb(value: int) -> str:
    return f"{value / GB:,.1f}"


def _markdown(figures: dict[str, Any]) -> str:
    slow, fast = figures["rates"]["slow"], figures["rates"]["fast"]
    lines = [
        "<!-- scale:begin -->",
        "## At the scale of the largest public models (`make scale`)",
        "",
        "The real planner and limits on each repo's listing (no bytes moved); durations at the stated rates, "
        f"slow / fast: Lambda unit {slow['lambda_unit']:g} / {fast['lambda_unit']:g} MB/s, Fargate "
        f"{slow['fargate_unit']:g} / {fast['fargate_unit']:g} MB/s, one Hub connection {slow['hub_connection']:g} / "
        f"{fast['hub_connection']:g} MB/s, read-back {slow['read_back']:g} / {fast['read_back']:g} MB/s, one S3 copy "
        f"request {slow['s3_copy_request']:g} / {fast['s3_copy_request']:g} MB/s. Every time limit must hold "
        f"{figures['headroom_required']:g}x over at the slow rates, or the plan is refused.",
        "",
        _row(
            "shape",
            "GB",
            "files",
            "units (λ/Fargate)",
            "split files",
            "worst λ unit s",
            "worst completion s (read back GB)",
            "Finalize now",
            "Finalize before (read back GB, s)",
            "wall s slow / fast",
            "run $",
            "storage $/month",
        ),
        "| --- |" + " ---: |" * 11,
    ]
    for shape in figures["shapes"]:
        s, f = shape["slow"], shape["fast"]
        unit = (s["copy_unit_lambda"] or {}).get("seconds", 0)
        completion = s["complete_file"] or {"seconds": 0, "read_back_bytes": 0}
        before = s["finalize_before"]
        lines.append(
            _row(
                shape["shape"],
                _gb(shape["bytes"]),
                f"{shape['files']:,}",
                f"{shape['units']['lambda']}/{shape['units']['fargate']}",
                shape["split_files"],
                f"{unit:,.0f}",
                f"{completion['seconds']:,.0f} ({_gb(completion['read_back_bytes'])})",
                f"{s['finalize']['records_read']} records, 0 B, {s['finalize']['seconds']} s",
                f"{_gb(before['read_back_bytes'])}, {before['seconds']:,.0f}",
                f"{s['wall_s']:,.0f} / {f['wall_s']:,.0f}",
                f"{s['cost_usd']['one_run']:.2f}",
                f"{s['cost_usd']['storage_per_month']:.2f}",
            )
        )
    lines += [
        "",
        "Each task's worst case at the slow rates (bytes streamed from the Hub, bytes read back from S3, S3 and Hub "
        "requests), the payloads and history events against Step Functions' limits, and the peak request rates on "
        f"the snapshot's prefix (copy Map {figures['copy_slots']} slots, completion Map {figures['complete_slots']}):",
        "",
        _row(
            "shape",
            "λ unit: GB streamed, requests, s",
            "Fargate unit: GB, s",
            "completion: GB read back, requests, s",
            "Plan result / largest item B",
            "parent events (every retry)",
            "child events",
            "PUT/s, GET/s",
        ),
        "| --- |" + " ---: |" * 7,
    ]
    for shape in figures["shapes"]:
        s = shape["slow"]
        unit, fargate, completion = s["copy_unit_lambda"], s["copy_unit_fargate"], s["complete_file"]
        history, payload, rates = shape["history"], shape["payload"], shape["requests_per_s"]
        lines.append(
            _row(
                shape["shape"],
                f"{_gb(unit['streamed_bytes'])}, {unit['requests']}, {unit['seconds']:,.0f}" if unit else "-",
                f"{_gb(fargate['streamed_bytes'])}, {fargate['seconds']:,.0f}" if fargate else "-",
                f"{_gb(completion['read_back_bytes'])}, {completion['requests']}, {completion['seconds']:,.0f}"
                if completion
                else "-",
                f"{payload['plan_result_bytes']:,} / {payload['largest_map_item_bytes']}",
                f"{history['parent_events']} ({history['parent_events_every_retry']})",
                history["child_events_every_retry"],
                f"{rates['put']:,.0f}, {rates['get']:,.0f}",
            )
        )
    lines += ["", "Headroom (limit / figure, slow rates) of every limit each shape meets:", ""]
    names = list(figures["shapes"][0]["headroom"])
    lines.append("| limit | " + " | ".join(shape["shape"] for shape in figures["shapes"]) + " |")
    lines.append("| --- |" + " ---: |" * len(figures["shapes"]))
    for name in names:
        cells = [str(shape["headroom"].get(name, "-")) for shape in figures["shapes"]]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "<!-- scale:end -->"]
    return "\n".join(lines)


def main() -> None:
    measure_and_record(NAME, run, _markdown)


if __name__ == "__main__":
    main()
