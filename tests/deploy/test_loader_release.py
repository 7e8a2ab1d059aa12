"""`model-cache publish-loader`: the loader's wheel into the cache bucket, for pods with no package index.

Against moto's S3 server, with the wheel built from loader/ as `make loader-wheel` builds it.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Any

import pytest

from model_cache.cli import main as cli
from model_cache.contract import errors
from model_cache.operations.loader_release import disk_request, publish_loader, release_keys, wheel_files_digest

pytestmark = pytest.mark.integration


def rezip(wheel: Path, target: Path, *, change: dict[str, bytes] | None = None, drop: str | None = None) -> Path:
    """A copy of `wheel` with other timestamps (a rebuild of the same source), `change`d or with `drop` left out."""
    with zipfile.ZipFile(wheel) as source, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as copy:
        for info in source.infolist():
            if info.filename == drop:
                continue
            data = (change or {}).get(info.filename, source.read(info.filename))
            copy.writestr(zipfile.ZipInfo(info.filename, date_time=(2030, 1, 2, 3, 4, 6)), data)
    return target


def test_the_release_is_written_under_both_names_and_unpacks_as_a_py_module(
    s3: Any, bucket: str, loader_wheel: Path
) -> None:
    # GIVEN the built wheel  WHEN it is published
    release = publish_loader(s3, bucket, loader_wheel)

    # THEN the .whl and the .zip hold the wheel's bytes, under the version's keys
    assert release.written
    assert (release.wheel_key, release.zip_key) == release_keys(release.version)
    for key in (release.wheel_key, release.zip_key):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == loader_wheel.read_bytes()
    assert release.py_modules_uri == f"s3://{bucket}/{release.zip_key}"
    # AND its top level is the package and its dist-info: Ray unpacks a remote zip with more than one
    # top-level entry as it is, so model_cache_loader/ lands on PYTHONPATH
    with zipfile.ZipFile(io.BytesIO(loader_wheel.read_bytes())) as archive:
        top = {name.split("/", 1)[0] for name in archive.namelist()}
    assert top == {"model_cache_loader", f"model_cache_loader-{release.version}.dist-info"}


def test_publishing_a_rebuild_of_the_same_version_is_a_no_op(
    s3: Any, bucket: str, loader_wheel: Path, tmp_path: Path
) -> None:
    # GIVEN a published release and a rebuild whose zip differs only in timestamps
    publish_loader(s3, bucket, loader_wheel)
    before = {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in release_keys("0.1.0")}
    rebuild = rezip(loader_wheel, tmp_path / loader_wheel.name)
    assert rebuild.read_bytes() != loader_wheel.read_bytes()

    # WHEN it is published again  THEN nothing is written and what pods pinned stays byte for byte
    assert not publish_loader(s3, bucket, rebuild).written
    assert {key: s3.head_object(Bucket=bucket, Key=key)["ETag"] for key in before} == before


def test_a_version_is_never_replaced_by_other_code(s3: Any, bucket: str, loader_wheel: Path, tmp_path: Path) -> None:
    # GIVEN a published release and another build of the same version with a changed module
    publish_loader(s3, bucket, loader_wheel)
    original = loader_wheel.read_bytes()
    other = rezip(loader_wheel, tmp_path / loader_wheel.name, change={"model_cache_loader/api.py": b"raise SystemExit"})

    # WHEN it is published  THEN it is refused, naming the key and the fix, and the release is untouched
    with pytest.raises(errors.IntegrityError, match=r"already holds model-cache-loader 0\.1\.0 with other files"):
        publish_loader(s3, bucket, other)
    for key in release_keys("0.1.0"):
        assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == original


@pytest.mark.parametrize(
    ("name", "mutate", "message"),
    [
        ("model-cache-loader-0.1.0.tar.gz", None, "is not a loader wheel"),
        ("other_pkg-0.1.0-py3-none-any.whl", None, "is not a loader wheel"),
        ("model_cache_loader-0.2.0-py3-none-any.whl", None, "lacks model_cache_loader-0.2.0.dist-info/METADATA"),
        ("model_cache_loader-0.1.0-py3-none-any.whl", "drop-schema", "lacks model_cache_loader/manifest.schema.json"),
        ("model_cache_loader-0.1.0-py3-none-any.whl", "not-zip", "is not a zip archive"),
    ],
)
def test_a_file_that_is_not_this_loader_wheel_is_refused_and_nothing_is_written(
    s3: Any, bucket: str, loader_wheel: Path, tmp_path: Path, name: str, mutate: str | None, message: str
) -> None:
    # GIVEN a misnamed, incomplete or broken wheel
    target = tmp_path / name
    if mutate == "drop-schema":
        rezip(loader_wheel, target, drop="model_cache_loader/manifest.schema.json")
    elif mutate == "not-zip":
        target.write_bytes(b"not a zip")
    else:
        target.write_bytes(loader_wheel.read_bytes())
    # WHEN it is published  THEN a clear error names the problem and the bucket stays empty
    with pytest.raises(errors.InvalidRequest, match=message):
        publish_loader(s3, bucket, target)
    assert s3.list_objects_v2(Bucket=bucket).get("KeyCount") == 0


def test_the_cli_prints_the_py_modules_uri(
    s3: Any, bucket: str, loader_wheel: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the wheel  WHEN `model-cache publish-loader` runs twice
    assert cli.main(["publish-loader", str(loader_wheel), "--bucket", bucket]) == 0
    first = capsys.readouterr()
    assert cli.main(["publish-loader", str(loader_wheel), "--bucket", bucket]) == 0
    second = capsys.readouterr()
    # THEN stdout is the URI the RGD's py_modules names, and stderr says what happened
    uri = f"s3://{bucket}/model-cache-loader/0.1.0/model_cache_loader-0.1.0-py3-none-any.zip"
    assert first.out.strip() == second.out.strip() == uri
    assert "0.1.0 published" in first.err
    assert "already published, same files" in second.err
    # AND a missing wheel is an error that names it, with the usage exit code
    assert cli.main(["publish-loader", str(loader_wheel.with_name("missing.whl")), "--bucket", bucket]) == 2
    assert "cannot read the loader wheel" in capsys.readouterr().err


def test_files_digest_ignores_timestamps_but_not_content(loader_wheel: Path, tmp_path: Path) -> None:
    same = rezip(loader_wheel, tmp_path / "same.whl")
    other = rezip(loader_wheel, tmp_path / "other.whl", change={"model_cache_loader/__init__.py": b"x = 1\n"})
    assert wheel_files_digest(same.read_bytes()) == wheel_files_digest(loader_wheel.read_bytes())
    assert wheel_files_digest(other.read_bytes()) != wheel_files_digest(loader_wheel.read_bytes())


@pytest.mark.parametrize(
    ("total", "quantity"),
    [(0, "1Gi"), (900_000_000, "2Gi"), (977_000_000, "3Gi"), (2**30, "3Gi"), (14 * 10**9, "16Gi")],
)
def test_the_disk_request_covers_the_snapshot_with_headroom(total: int, quantity: str) -> None:
    assert disk_request(total) == quantity
    assert int(quantity.removesuffix("Gi")) * 2**30 >= total * 1.1 + 2**30


def test_a_negative_size_is_refused() -> None:
    with pytest.raises(errors.InvalidRequest, match="cannot be negative"):
        disk_request(-1)
