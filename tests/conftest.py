"""Shared fixtures: the offline world every test runs in.

- AWS: moto's real HTTP server on 127.0.0.1, reached by boto3 through AWS_ENDPOINT_URL with fake
  credentials. One server per session; tests isolate themselves with fresh bucket/queue names.
- The Hugging Face Hub: our Hub double (model_cache_devtools.hub), reached by huggingface_hub
  through HF_ENDPOINT.
- A real LambdaContext dataclass for handler tests, and sample events from events/.

Nothing here may reach the internet: non-loopback connections are refused for every test, and
tests marked `unit` get no sockets at all.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import boto3
import pytest
from pytest_socket import disable_socket, socket_allow_hosts

REPO_ROOT = Path(__file__).resolve().parent.parent
EVENTS_DIR = REPO_ROOT / "events"
SCHEMA_PATH = REPO_ROOT / "schemas" / "manifest.schema.json"
REGION = "us-east-1"
AUTHORIZER: Any = None  # the session moto server's s3_authz.Authorizer
LOOPBACK = ["127.0.0.1", "localhost", "::1"]

# Set before any test module imports boto3 clients or huggingface_hub constants, so that nothing
# can ever talk to real AWS or the real Hub, whatever a test forgets.
os.environ.update(
    {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "POWERTOOLS_SERVICE_NAME": "model-cache-test",
        "POWERTOOLS_METRICS_NAMESPACE": "ModelCacheTest",
        "POWERTOOLS_TRACE_DISABLED": "true",
    }
)
os.environ.pop("AWS_PROFILE", None)
os.environ.pop("HF_TOKEN", None)
os.environ["HF_ENDPOINT"] = "http://127.0.0.1:9"  # until a test starts the Hub double: a closed port
# A throwaway HF home for the whole session, so no test reads or writes the user's real cache or token.
_SESSION_HF_HOME = tempfile.mkdtemp(prefix="model-cache-test-hf-home-")
os.environ["HF_HOME"] = _SESSION_HF_HOME
os.environ["HF_HUB_CACHE"] = os.path.join(_SESSION_HF_HOME, "hub")


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if AUTHORIZER is not None:
        counts = AUTHORIZER.counts
        terminalreporter.write_line(
            f"S3 authorization (AWS's rules): {counts['authorized']} authorizations granted, "
            f"{counts['refused']} refused in this run"
        )
        # Every refusal, to read what the world refused and to whom (the last 2,000 are kept).
        dump = os.environ.get("MODEL_CACHE_WORLD_REFUSALS")
        if dump:
            lines = [f"{r.principal_arn}\t{r.action}\t{r.resource}\t{r.reason}" for r in AUTHORIZER.refusals]
            Path(dump).write_text("\n".join(lines) + "\n")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("unit"):
        disable_socket(allow_unix_socket=True)
    else:
        socket_allow_hosts(LOOPBACK, allow_unix_socket=True)


# ---------------------------------------------------------------------------------------------
# AWS: moto server
# ---------------------------------------------------------------------------------------------


@dataclass
class MotoEndpoint:
    url: str
    host: str
    port: int

    def reset(self) -> None:
        """Forget every resource (moto's reset API). Tests normally use fresh names instead."""
        import urllib.request

        urllib.request.urlopen(urllib.request.Request(f"{self.url}/moto-api/reset", method="POST"))  # noqa: S310

    def configure(self, config: dict[str, Any]) -> None:
        """Set moto's runtime config, e.g. {"stepfunctions": {"execute_state_machine": True}}."""
        import urllib.request

        request = urllib.request.Request(f"{self.url}/moto-api/config", data=json.dumps(config).encode(), method="POST")  # noqa: S310 (our own loopback moto server)
        urllib.request.urlopen(request)  # noqa: S310 (our own loopback moto server)


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoEndpoint]:
    """moto's real HTTP server on a free loopback port; AWS_ENDPOINT_URL points every boto3 client at it."""
    from moto.server import ThreadedMotoServer

    from model_cache_devtools import moto_ranges, s3_authz

    # S3's cost model for ranged GETs (O(range)), as the benchmarks measure against; the answers
    # themselves are stock moto's (tests/world/test_moto_ranges.py).
    moto_ranges.install()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    # S3's and IAM's authorization (docs/architecture.md 4): tests set the world up as the deployer; the
    # pipeline's code runs as the template's roles (model_cache_devtools.s3_authz).
    global AUTHORIZER
    AUTHORIZER = s3_authz.enforce(server)
    host, port = server.get_host_and_port()
    endpoint = MotoEndpoint(url=f"http://{host}:{port}", host=host, port=port)
    previous = os.environ.get("AWS_ENDPOINT_URL")
    os.environ["AWS_ENDPOINT_URL"] = endpoint.url
    try:
        yield endpoint
    finally:
        if previous is None:
            os.environ.pop("AWS_ENDPOINT_URL", None)
        else:
            os.environ["AWS_ENDPOINT_URL"] = previous
        server.stop()


@pytest.fixture
def aws(moto_server: MotoEndpoint, monkeypatch: pytest.MonkeyPatch) -> MotoEndpoint:
    """Per-test view of the moto server, with AWS_ENDPOINT_URL set for code that builds its own clients."""
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    return moto_server


@pytest.fixture
def s3(aws: MotoEndpoint) -> Any:
    return boto3.client("s3", region_name=REGION, endpoint_url=aws.url)


@pytest.fixture
def sqs(aws: MotoEndpoint) -> Any:
    return boto3.client("sqs", region_name=REGION, endpoint_url=aws.url)


@pytest.fixture
def sfn(aws: MotoEndpoint) -> Any:
    return boto3.client("stepfunctions", region_name=REGION, endpoint_url=aws.url)


def client_as(principal: Any, service: str = "s3") -> Any:
    """A boto3 client signing with a registered principal's role-session keys (model_cache_devtools.s3_authz)."""
    keys = principal.credentials()
    return boto3.client(
        service,
        region_name=REGION,
        endpoint_url=os.environ["AWS_ENDPOINT_URL"],
        aws_access_key_id=keys["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=keys["AWS_SECRET_ACCESS_KEY"],
        aws_session_token=keys["AWS_SESSION_TOKEN"],
    )


def unique_name(stem: str) -> str:
    return f"{stem}-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def bucket(s3: Any) -> str:
    """A fresh, versioned, empty bucket in the moto server."""
    name = unique_name("model-cache-test")
    s3.create_bucket(Bucket=name)
    s3.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    return name


@contextmanager
def local_ray_serve(**init_options: Any) -> Iterator[str]:
    """A local Ray (2 CPUs, no dashboard) with Serve's HTTP proxy on a free loopback port; yields its URL.

    Its processes inherit os.environ as it is now, as a pod's Ray inherits the container's variables.
    Ray gets its own short temp dir: /tmp/ray is shared with anyone else running Ray on this machine,
    and its socket paths must stay short.
    """
    import shutil
    import socket

    import ray
    from ray import serve

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    ray_temp = tempfile.mkdtemp(prefix="ray-", dir="/tmp")
    ray.init(
        num_cpus=2,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir=ray_temp,
        log_to_driver=False,
        **init_options,
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": port})
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]
        ray.shutdown()
        shutil.rmtree(ray_temp, ignore_errors=True)


@pytest.fixture(scope="session")
def loader_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The loader's wheel, built from loader/ as `make loader-wheel` builds it (into a temp dir)."""
    import subprocess

    out = tmp_path_factory.mktemp("loader-wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out),
         str(REPO_ROOT / "loader")],
        check=True,
        capture_output=True,
    )  # fmt: skip
    (wheel,) = out.glob("model_cache_loader-*-py3-none-any.whl")
    return wheel


@pytest.fixture
def s3_proxy(aws: MotoEndpoint) -> Iterator[Any]:
    """An S3Proxy (model_cache_devtools.s3proxy) in front of the session's moto server: no latency, no
    bandwidth cap, no faults, an empty request log; stopped after the test.

    AWS_ENDPOINT_URL still names moto: build a client with `endpoint_url=s3_proxy.url`, or
    `monkeypatch.setenv("AWS_ENDPOINT_URL", s3_proxy.url)` to route code that builds its own clients.
    """
    from model_cache_devtools.s3proxy import S3Proxy

    with S3Proxy(aws.url) as proxy:
        yield proxy


def incomplete_uploads(s3: Any, bucket_name: str) -> list[dict[str, Any]]:
    """Every multipart upload still open in the bucket (a clean failure leaves none)."""
    return list(s3.list_multipart_uploads(Bucket=bucket_name).get("Uploads", []))


def all_keys(s3: Any, bucket_name: str, prefix: str = "") -> list[str]:
    keys: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket_name, Prefix=prefix):
        keys.extend(obj["Key"] for obj in page.get("Contents", []))
    return keys


_PUBLISHED_KEY = re.compile(
    r"(?:^|/)(?:manifests/[0-9a-f]{40}\.json|manifest\.json|refs/.+|snapshots/[0-9a-f]{40}/hash)$"
)
_SNAPSHOT_KEY = re.compile(r"^(?:.+/)?(?P<repo>[^/]+)/snapshots/(?P<commit>[0-9a-f]{40})/(?P<path>.+)$")


def failed_clean_problems(s3: Any, bucket_name: str, hub_url: str | None = None, prefix: str = "") -> list[str]:
    """What makes a failure not clean (docs/architecture.md 3.1): a manifest, ref or hash file published, an
    upload left open, or an object under snapshots/ whose bytes are not the Hub's file.

    A failed run deletes only objects it wrote that failed verification; verified files it wrote stay
    (another run may have adopted them) for the next run to adopt or gc to remove. Each one is fetched
    from the Hub double (`hub_url`, default HF_ENDPOINT) and compared byte for byte.
    """
    import hashlib

    import httpx2

    uploads = incomplete_uploads(s3, bucket_name)
    problems = [f"upload left open: {upload['Key']}" for upload in uploads if upload["Key"].startswith(prefix)]
    hub_url = (hub_url or os.environ.get("HF_ENDPOINT", "")).rstrip("/")
    for key in all_keys(s3, bucket_name, prefix):
        if _PUBLISHED_KEY.search(key):
            problems.append(f"published after a failure: {key}")
            continue
        match = _SNAPSHOT_KEY.match(key)
        if match is None:
            continue
        stored = s3.get_object(Bucket=bucket_name, Key=key)["Body"].read()
        repo_id = match["repo"].replace("--", "/", 1)
        response = httpx2.get(f"{hub_url}/{repo_id}/resolve/{match['commit']}/{match['path']}", follow_redirects=True)
        if response.status_code != 200 or hashlib.sha256(response.content).digest() != hashlib.sha256(stored).digest():
            problems.append(f"unverified bytes left at {key} ({len(stored)} B, Hub {response.status_code})")
    return problems


# ---------------------------------------------------------------------------------------------
# The Hugging Face Hub double
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def hub_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of repos the Hub double serves: the tiny real model and small fixture repos."""
    from model_cache_devtools import modelgen

    root = tmp_path_factory.mktemp("hub")
    modelgen.build_fixture_hub(root)
    return root


@contextmanager
def running_hub(root: Path) -> Iterator[Any]:
    """The Hub double serving `root` on a free loopback port, stopped on exit."""
    from model_cache_devtools.hub import HubServer

    server = HubServer(root, host="127.0.0.1", port=0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def hub_server(hub_root: Path) -> Iterator[Any]:
    """The Hub double on a free loopback port, for the whole session."""
    with running_hub(hub_root) as server:
        yield server


@pytest.fixture
def hub(hub_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The Hub double with HF_ENDPOINT pointing at it and no faults left over from other tests.

    huggingface_hub reads HF_ENDPOINT once, when it is first imported (constants.ENDPOINT and
    HUGGINGFACE_CO_URL_TEMPLATE), so the constants are patched too: calls that pass no `endpoint=`
    (hf_hub_download, snapshot_download, HfApi(), transformers' from_pretrained) reach the double.
    """
    from huggingface_hub import constants

    monkeypatch.setenv("HF_ENDPOINT", hub_server.url)
    monkeypatch.setattr(constants, "ENDPOINT", hub_server.url)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", hub_server.url + "/{repo_id}/resolve/{revision}/{filename}"
    )
    hub_server.faults.clear()
    hub_server.requests.clear()
    try:
        yield hub_server
    finally:
        hub_server.faults.clear()


@pytest.fixture
def hf_endpoint(hub: Any) -> str:
    """The Hub double's URL (the `hub` fixture already points huggingface_hub at it)."""
    return str(hub.url)


@pytest.fixture
def hf_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty, private Hugging Face cache for this test, in the environment and in
    huggingface_hub's import-time constants (it reads HF_HUB_CACHE/HF_HOME only once)."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-cache"
    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


# ---------------------------------------------------------------------------------------------
# Lambda
# ---------------------------------------------------------------------------------------------


@dataclass
class LambdaContext:
    """The attributes Powertools and our handlers read from the real Lambda context object."""

    function_name: str = "model-cache-test"
    function_version: str = "$LATEST"
    memory_limit_in_mb: int = 1024
    invoked_function_arn: str = "arn:aws:lambda:us-east-1:123456789012:function:model-cache-test"
    aws_request_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    log_group_name: str = "/aws/lambda/model-cache-test"
    log_stream_name: str = "2026/11/30/[$LATEST]test"
    remaining_millis: int = 900_000

    def get_remaining_time_in_millis(self) -> int:
        return self.remaining_millis


@pytest.fixture
def lambda_context() -> LambdaContext:
    return LambdaContext()


def load_event(name: str) -> Any:
    """A sample event from events/ (the same files `sam local invoke -e` takes)."""
    return json.loads((EVENTS_DIR / name).read_text())


@pytest.fixture
def manifest_schema() -> dict[str, Any]:
    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
    return schema


def shared_test_module(name: str, relative_path: str) -> ModuleType:
    """A helper module of one test area (tests/pipeline/sfn_harness.py, tests/loader/loader_seed.py),
    imported once under its own name, so that area's tests and every other area share one copy."""
    module = sys.modules.get(name)
    if module is None:
        spec = importlib.util.spec_from_file_location(name, REPO_ROOT / relative_path)
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return module


def seed_snapshot(s3: Any, bucket: str, repo_id: str, files: dict[str, bytes], **options: Any) -> Any:
    """Publish `files` as a snapshot in the contract's order (tests/loader/loader_seed.py)."""
    return shared_test_module("loader_seed", "tests/loader/loader_seed.py").seed_snapshot(
        s3, bucket, repo_id, files, **options
    )


@pytest.fixture
def request_handler(aws: MotoEndpoint, sfn: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[ModuleType, str]:
    """functions/request/app.py wired (STATE_MACHINE_ARN) to a fresh, non-executing state machine in moto."""
    from model_cache_devtools.local_pipeline import load_handler_module

    arn = sfn.create_state_machine(
        name=unique_name("request-target"),
        definition=json.dumps({"StartAt": "Done", "States": {"Done": {"Type": "Pass", "End": True}}}),
        roleArn="arn:aws:iam::123456789012:role/model-cache-test",
    )["stateMachineArn"]
    monkeypatch.setenv("STATE_MACHINE_ARN", arn)
    return load_handler_module("request"), arn


@pytest.fixture(scope="session")
def fault_hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A Hub double serving the reliability tests' FAULT_REPO (tests/reliability/reliability_support.py), warmed."""
    from model_cache_devtools.hub import HubServer

    support = shared_test_module("reliability_support", "tests/reliability/reliability_support.py")
    with HubServer(support.build_fault_hub(tmp_path_factory.mktemp("fault-hub"))) as server:
        server.warm()
        yield server


@pytest.fixture
def fault_hub_endpoint(fault_hub: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """`fault_hub` as HF_ENDPOINT, with no faults and an empty request log; faults cleared afterwards."""
    monkeypatch.setenv("HF_ENDPOINT", fault_hub.url)
    fault_hub.faults.clear()
    fault_hub.requests.clear()
    try:
        yield fault_hub
    finally:
        fault_hub.faults.clear()


@pytest.fixture
def hub_retries(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Short Hub backoffs and read timeout for every HubReader the test builds; the asked delays are recorded
    (`reliability_support.fast_hub_retries`)."""
    support = shared_test_module("reliability_support", "tests/reliability/reliability_support.py")
    return support.fast_hub_retries(monkeypatch)
