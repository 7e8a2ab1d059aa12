"""The S3 layout (docs/architecture.md 3.1), the rules for the names in it, and the Hugging Face cache names.

The one owner of this contract: the core package (`model_cache.contract.layout`, `model_cache.contract.ids`)
imports these, so the pipeline that writes the keys and the loader that reads them cannot drift. The rules
answer with the problem in words (`..._problem`, None when the name is fine); each side raises its own
error with it: `UsageError` here, the pipeline's `InvalidRequest` (a state-machine error name) there.
"""

from __future__ import annotations

import re
import unicodedata

from model_cache_loader.errors import UsageError

DEFAULT_PREFIX = "models"
DEFAULT_REVISION = "main"
HASH_FILE = "hash"
# S3's limit on a key's length, in UTF-8 bytes.
MAX_KEY_BYTES = 1024

# The Hub's own rule: an optional namespace, a name; letters, digits, '-', '_', '.';
# no leading/trailing '-' or '.', no '--' or '..'; at most 96 characters.
_NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
_REPO_ID_RE = re.compile(rf"^(?:{_NAME}/)?{_NAME}$")
_COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
# Branch and tag names as git allows them, minus anything that could escape a key or a URL.
_REVISION_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,254}$")
MAX_REPO_ID_LENGTH = 96


def repo_id_problem(repo_id: object) -> str | None:
    """Why `repo_id` is not a Hub model id, or None when it is one."""
    if not isinstance(repo_id, str):
        return f"repo_id must be a string, got {type(repo_id).__name__}"
    if not repo_id:
        return "repo_id is empty"
    if len(repo_id) > MAX_REPO_ID_LENGTH:
        return f"repo_id is {len(repo_id)} characters long; the Hub allows at most {MAX_REPO_ID_LENGTH}"
    if not repo_id.isascii():
        return f"repo_id {repo_id!a} has non-ASCII characters; Hub ids are ASCII only"
    if "--" in repo_id or ".." in repo_id or not _REPO_ID_RE.fullmatch(repo_id):
        return (
            f"repo_id {repo_id!r} is not a Hub model id: expected 'org/name' or 'name' with letters, "
            "digits, '-', '_' or '.', not starting or ending with '-' or '.', and no '--' or '..'"
        )
    return None


def revision_problem(revision: object) -> str | None:
    """Why `revision` is not a branch, tag or commit id, or None when it is one."""
    if not isinstance(revision, str):
        return f"revision must be a string, got {type(revision).__name__}"
    if not revision:
        return "revision is empty"
    if (
        not _REVISION_RE.fullmatch(revision)
        or ".." in revision
        or "//" in revision
        or revision.endswith(("/", ".", ".lock"))
        or "@{" in revision
    ):
        return (
            f"revision {revision!r} is not a valid branch, tag or commit id "
            "(letters, digits, '.', '_', '-', '+', '/'; no '..', '//' or trailing '/')"
        )
    return None


def repo_path_problem(path: str) -> str | None:
    """Why `path` is not a safe relative POSIX path inside a repo (the words after the path), or None.

    Refused: absolute paths, '..' or '.' segments, empty segments, backslashes, NUL and other control
    characters, more than S3's 1024 key bytes, and non-NFC unicode (two spellings of one name could
    collide on disk)."""
    if not path:
        return "is empty"
    if len(path.encode("utf-8")) > MAX_KEY_BYTES:
        return f"is longer than S3's {MAX_KEY_BYTES}-byte key limit"
    if path.startswith("/"):
        return "is absolute"
    if "\\" in path:
        return "contains a backslash"
    if "\x00" in path:
        return "contains a NUL"
    if any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in path):
        return "contains a control character"
    segments = path.split("/")
    if any(segment == "" for segment in segments):
        return "has an empty segment"
    if any(segment in (".", "..") for segment in segments):
        return "has a '.' or '..' segment"
    if unicodedata.normalize("NFC", path) != path:
        return "is not in Unicode NFC form"
    return None


def validate_repo_id(repo_id: str) -> str:
    problem = repo_id_problem(repo_id)
    if problem:
        raise UsageError(problem)
    return repo_id


def validate_revision(revision: str) -> str:
    problem = revision_problem(revision)
    if problem:
        raise UsageError(problem)
    return revision


def is_commit_id(revision: str) -> bool:
    return bool(_COMMIT_RE.fullmatch(revision))


def parse_repo_ref(text: str, default_revision: str = DEFAULT_REVISION) -> tuple[str, str]:
    """'org/name@rev' -> ('org/name', 'rev'); 'org/name' -> ('org/name', default_revision)."""
    repo_id, sep, revision = text.strip().partition("@")
    validate_repo_id(repo_id)
    return repo_id, validate_revision(revision if sep else default_revision)


def repo_slug(repo_id: str) -> str:
    """'org/name' -> 'org--name'; 'gpt2' -> 'gpt2'."""
    return repo_id.replace("/", "--")


def repo_id_from_slug(slug: str) -> str:
    return slug.replace("--", "/", 1)


def _base(prefix: str) -> str:
    prefix = prefix.strip("/")
    return f"{prefix}/" if prefix else ""


def cache_base(prefix: str) -> str:
    """The folder every repo of a cache lives under: 'models/' (or '' for a cache at the bucket's root)."""
    return _base(prefix)


def repo_prefix(prefix: str, repo_id: str) -> str:
    return f"{_base(prefix)}{repo_slug(repo_id)}/"


def snapshots_folder(prefix: str, repo_id: str) -> str:
    """The folder of all of a repo's snapshots: `{repo}/snapshots/`."""
    return f"{repo_prefix(prefix, repo_id)}snapshots/"


def manifests_folder(prefix: str, repo_id: str) -> str:
    """The folder of all of a repo's manifests: `{repo}/manifests/`."""
    return f"{repo_prefix(prefix, repo_id)}manifests/"


def refs_folder(prefix: str, repo_id: str) -> str:
    """The folder of all of a repo's refs: `{repo}/refs/`."""
    return f"{repo_prefix(prefix, repo_id)}refs/"


def snapshot_prefix(prefix: str, repo_id: str, commit: str) -> str:
    return f"{snapshots_folder(prefix, repo_id)}{commit}/"


def file_key(prefix: str, repo_id: str, commit: str, path: str) -> str:
    return f"{snapshot_prefix(prefix, repo_id, commit)}{path}"


def hash_key(prefix: str, repo_id: str, commit: str) -> str:
    return f"{snapshot_prefix(prefix, repo_id, commit)}{HASH_FILE}"


def manifest_key(prefix: str, repo_id: str, commit: str) -> str:
    return f"{manifests_folder(prefix, repo_id)}{commit}.json"


def ref_key(prefix: str, repo_id: str, revision: str) -> str:
    return f"{refs_folder(prefix, repo_id)}{revision}"


def root_manifest_key(prefix: str, repo_id: str) -> str:
    return f"{repo_prefix(prefix, repo_id)}manifest.json"


def hf_repo_folder(repo_id: str) -> str:
    """The Hugging Face cache folder name of a model repo: 'models--org--name'."""
    return "models--" + repo_id.replace("/", "--")


# S3's general purpose bucket naming rules (Amazon S3 User Guide, "General purpose bucket naming
# rules"): 3-63 characters, lowercase letters, digits, dots and hyphens, starting and ending with a
# letter or digit. Checked at the edge: botocore turns a bad name into a parameter error that reads
# like "S3 unreachable", which the fallback then took for a miss.
_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
BUCKET_RULE = "3-63 lowercase letters, digits, '.' or '-', starting and ending with a letter or digit"


def bucket_problem(bucket: object) -> str | None:
    """Why `bucket` is not an S3 general purpose bucket name, or None when it is one (the pipeline's rule too)."""
    if isinstance(bucket, str) and _BUCKET_RE.match(bucket):
        return None
    return f"{bucket!r} is not an S3 bucket name ({BUCKET_RULE})"


def validate_bucket(bucket: str, *, source: str = "MODEL_CACHE_BUCKET") -> str:
    """`bucket` if it is an S3 bucket name, else UsageError naming the fix."""
    if bucket_problem(bucket) is None:
        return bucket
    if "://" in bucket or "/" in bucket:
        name = bucket.split("://", 1)[-1].split("/", 1)[0]
        raise UsageError(
            f"{source} is {bucket!r}: give the bucket's name, not a URI or path (e.g. {name!r}); "
            "the prefix is MODEL_CACHE_PREFIX"
        )
    raise UsageError(f"{source} is {bucket!r}, which is not an S3 bucket name ({BUCKET_RULE})")
