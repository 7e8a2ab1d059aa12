"""Repo folders for the Hub double: a tiny real causal LM, synthetic big repos, the fixture hub.

Everything here is generated locally and deterministically (same arguments -> byte-identical
files); nothing is ever downloaded from any hub. The folders follow the Hub double's repo-folder
convention (docs/contributing/devtools.md): `ROOT/<org>/<name>/...` is repo `org/name`, `ROOT/<name>/...` is a
no-org repo, every regular file is served at its relative path, and the `.hub-*.json` control
files at a repo root declare virtual (synthetic) files, gating tokens and refs.

tokenizers, safetensors and numpy are imported only by `write_tiny_model`, so the rest of this
module (and the Lambda layer that ships the package) does not need them; torch and transformers
are not needed at all (the tests prove transformers loads and runs what is written).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from model_cache.contract.errors import InvalidRequest
from model_cache.contract.ids import validate_repo_id, validate_repo_path

# Fixture repo ids every test can rely on (built by `build_fixture_hub`; documented in docs/contributing/devtools.md).
TINY_MODEL = "tiny-org/tiny-llm"
NESTED = "test-org/nested"
GATED = "test-org/gated"
GATED_TOKEN = "hf_fixture_gated_token_0123456789"  # noqa: S105 - a test-only token, valid nowhere else
MULTI_FORMAT = "test-org/multi-format"
BIG = "test-org/big"
NO_ORG = "solo-model"
BIN_ONLY = "test-org/bin-only"

FIXTURE_REPOS: dict[str, str] = {
    TINY_MODEL: "the tiny real Llama model in 2 safetensors shards + index; transformers loads and runs it",
    NESTED: "nested paths, dotfiles, a unicode name, a 3 MiB LFS weight and an 11 MiB synthetic file LFS by size",
    GATED: f"a gated repo: needs `Authorization: Bearer {GATED_TOKEN}`",
    MULTI_FORMAT: "the same weights in six formats, to test the duplicate-weight-format default",
    BIG: "a 48 MiB synthetic model.safetensors (seed 1): several copy units at 8 MiB parts / 16 MiB units",
    NO_ORG: "a repo id without an org",
    BIN_ONLY: "only pytorch_model.bin: the duplicate-format default must keep it",
}

SYNTHETIC_CONTROL_FILE = ".hub-synthetic.json"
GATED_CONTROL_FILE = ".hub-gated.json"
REFS_CONTROL_FILE = ".hub-refs.json"

MIB = 1024 * 1024
NESTED_UNICODE_PATH = "docs/r\u00e9sum\u00e9-caf\u00e9.txt"  # NFC, ASCII-free but safe as a key and a file name
NESTED_LFS_WEIGHT_PATH = "sub/dir/weights.safetensors"
NESTED_LFS_WEIGHT_SIZE = 3 * MIB
NESTED_LARGE_FILE_PATH = "data/large-corpus.jsonl"
NESTED_LARGE_FILE_SIZE = 11 * MIB
NESTED_LARGE_FILE_SEED = 7
BIG_WEIGHT_SIZE = 48 * MIB
BIG_WEIGHT_SEED = 1

# What a freshly created Hub repo carries: the LFS patterns of huggingface_hub's repo template.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in (
        "*.7z",
        "*.arrow",
        "*.bin",
        "*.bz2",
        "*.ckpt",
        "*.ftz",
        "*.gz",
        "*.h5",
        "*.joblib",
        "*.lfs.*",
        "*.mlmodel",
        "*.model",
        "*.msgpack",
        "*.npy",
        "*.npz",
        "*.onnx",
        "*.ot",
        "*.parquet",
        "*.pb",
        "*.pickle",
        "*.pkl",
        "*.pt",
        "*.pth",
        "*.rar",
        "*.safetensors",
        "saved_model/**/*",
        "*.tar.*",
        "*.tar",
        "*.tflite",
        "*.tgz",
        "*.wasm",
        "*.xz",
        "*.zip",
        "*.zst",
        "*tfevents*",
    )
)

# The corpus the tiny tokenizer is trained on: plain English about this project, enough for a few
# hundred BPE merges. Changing it changes every tiny-model byte (and the fixture commit ids).
_CORPUS = (
    "The model cache mirrors repositories from the Hugging Face Hub into an S3 bucket at pinned commits.",
    "Every file is copied byte for byte and verified against its sha256 before the manifest is published.",
    "Ray Serve pods read the manifest, pull the weights from the bucket with parallel ranged requests,",
    "and lay them out like the Hugging Face cache, so the model loads in seconds instead of minutes.",
    "When the bucket has no copy, the loader falls back to the Hub and may ask for the model to be cached.",
    "The quick brown fox jumps over the lazy dog. A tiny model says hello to the world and then stops.",
    "Once upon a time there was a small language model that lived in a folder on a laptop.",
    "It had two layers, four heads and a vocabulary of a few hundred tokens, and it liked to generate text.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000. Punctuation: , . ; : ! ? ' \" ( ) [ ] { } - _ / \\ @ # % & *",
)

BOS_TOKEN = "<s>"  # noqa: S105 - a tokenizer special token, not a secret
EOS_TOKEN = "</s>"  # noqa: S105 - a tokenizer special token, not a secret
PAD_TOKEN = "<pad>"  # noqa: S105 - a tokenizer special token, not a secret
UNK_TOKEN = "<unk>"  # noqa: S105 - a tokenizer special token, not a secret
_SPECIAL_TOKENS = (UNK_TOKEN, BOS_TOKEN, EOS_TOKEN, PAD_TOKEN)
_ATTENTION_HEADS = 4
_KEY_VALUE_HEADS = 2
# Written into config.json as a real save_pretrained would; fixed, so the bytes (and the fixture
# commit ids) do not change with the installed transformers.
WRITTEN_BY_TRANSFORMERS_VERSION = "5.24.0"


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def repo_dir(root: Path, repo_id: str) -> Path:
    """The folder under `root` that the Hub double serves as `repo_id` ('org/name' or 'name')."""
    validate_repo_id(repo_id)
    return root.joinpath(*repo_id.split("/"))


def _check_repo_path(path: str) -> None:
    """A ValueError (like every other bad argument here) when `path` is not a safe repo file path."""
    try:
        validate_repo_path(path)
    except InvalidRequest as error:
        raise ValueError(str(error)) from None


def deterministic_bytes(size: int, seed: int) -> bytes:
    """`size` pseudo-random bytes, the same for the same (size, seed) on every machine."""
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    return random.Random(seed).randbytes(size)


def _write_json(path: Path, data: Any) -> None:
    # Sorted keys, fixed indent and a final newline: byte-stable, and how the Hub's own tools write JSON.
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8")


def _write_files(dest: Path, files: Mapping[str, bytes]) -> None:
    for relative_path, content in files.items():
        _check_repo_path(relative_path)
        target = dest / relative_path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content)


def _model_card(title: str, body: str, *, tags: list[str], pipeline_tag: str | None = "text-generation") -> bytes:
    front_matter = ["---", "license: apache-2.0", "library_name: transformers"]
    if pipeline_tag:
        front_matter.append(f"pipeline_tag: {pipeline_tag}")
    front_matter.append("tags:")
    front_matter.extend(f"- {tag}" for tag in tags)
    front_matter.append("---")
    return ("\n".join(front_matter) + f"\n\n# {title}\n\n{body}\n").encode()


# ---------------------------------------------------------------------------------------------
# The tiny real model
# ---------------------------------------------------------------------------------------------


def _train_tokenizer(vocab_size: int) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(_SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(list(_CORPUS), trainer)
    return tokenizer


def _shard_names(shards: int) -> list[str]:
    if shards == 1:
        return ["model.safetensors"]
    return [f"model-{index:05d}-of-{shards:05d}.safetensors" for index in range(1, shards + 1)]


def _split_into_shards(sizes: Mapping[str, int], shards: int) -> list[list[str]]:
    """Tensor names in `shards` consecutive groups of roughly equal bytes (name order, as save_pretrained)."""
    names = sorted(sizes)
    if shards > len(names):
        raise ValueError(f"shards={shards} but the model has only {len(names)} tensors")
    total = sum(sizes.values())
    groups: list[list[str]] = [[] for _ in range(shards)]
    written = 0
    for position, name in enumerate(names):
        remaining_names = len(names) - position
        index = min(shards - 1, written * shards // total)
        # Leave at least one tensor for every later shard.
        index = max(index, shards - remaining_names)
        groups[index].append(name)
        written += sizes[name]
    # A group can stay empty when one tensor dominates; move a neighbour's last tensor into it.
    for index in range(shards):
        if not groups[index]:
            donor = max(range(shards), key=lambda i: len(groups[i]))
            groups[index].append(groups[donor].pop())
            groups[index].sort()
    return groups


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for dimension in shape:
        count *= dimension
    return count


def _llama_config(
    *, vocab_size: int, hidden_size: int, num_layers: int, max_position_embeddings: int, token_ids: Mapping[str, int]
) -> dict[str, Any]:
    """config.json of a LlamaForCausalLM, written by hand so that generating a model needs neither
    torch nor transformers (importing them costs seconds); the tests load it with transformers."""
    return {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": token_ids[BOS_TOKEN],
        "dtype": "float32",
        "eos_token_id": token_ids[EOS_TOKEN],
        "head_dim": hidden_size // _ATTENTION_HEADS,
        "hidden_act": "silu",
        "hidden_size": hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": hidden_size * 2,
        "max_position_embeddings": max_position_embeddings,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": _ATTENTION_HEADS,
        "num_hidden_layers": num_layers,
        "num_key_value_heads": _KEY_VALUE_HEADS,
        "pad_token_id": token_ids[PAD_TOKEN],
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_parameters": {"rope_theta": 10000.0, "rope_type": "default"},
        "tie_word_embeddings": False,
        "transformers_version": WRITTEN_BY_TRANSFORMERS_VERSION,
        "use_cache": True,
        "vocab_size": vocab_size,
    }


def _llama_parameter_shapes(config: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """The state-dict names and shapes of transformers' LlamaForCausalLM for `config`."""
    hidden, intermediate = config["hidden_size"], config["intermediate_size"]
    head_dim, vocab = config["head_dim"], config["vocab_size"]
    query_width = config["num_attention_heads"] * head_dim
    key_value_width = config["num_key_value_heads"] * head_dim
    shapes: dict[str, tuple[int, ...]] = {
        "model.embed_tokens.weight": (vocab, hidden),
        "model.norm.weight": (hidden,),
        "lm_head.weight": (vocab, hidden),
    }
    for layer in range(config["num_hidden_layers"]):
        prefix = f"model.layers.{layer}."
        shapes |= {
            f"{prefix}input_layernorm.weight": (hidden,),
            f"{prefix}post_attention_layernorm.weight": (hidden,),
            f"{prefix}self_attn.q_proj.weight": (query_width, hidden),
            f"{prefix}self_attn.k_proj.weight": (key_value_width, hidden),
            f"{prefix}self_attn.v_proj.weight": (key_value_width, hidden),
            f"{prefix}self_attn.o_proj.weight": (hidden, query_width),
            f"{prefix}mlp.gate_proj.weight": (intermediate, hidden),
            f"{prefix}mlp.up_proj.weight": (intermediate, hidden),
            f"{prefix}mlp.down_proj.weight": (hidden, intermediate),
        }
    return shapes


def write_tiny_model(
    dest: Path,
    *,
    seed: int = 0,
    shards: int = 1,
    hidden_size: int = 64,
    num_layers: int = 2,
    vocab_size: int = 512,
    max_position_embeddings: int = 256,
) -> Path:
    """Write a tiny real Llama causal LM repo into `dest` and return `dest`.

    transformers loads it with `AutoModelForCausalLM.from_pretrained(dest)` and
    `AutoTokenizer.from_pretrained(dest)` and generates from it on CPU in milliseconds. The
    weights are random (seeded), so the text is gibberish, but every byte is deterministic:
    the same arguments give byte-identical files.

    Files: config.json, generation_config.json, model.safetensors (or `shards` files
    model-0000N-of-0000M.safetensors plus model.safetensors.index.json), tokenizer.json,
    tokenizer_config.json, special_tokens_map.json, README.md and .gitattributes.
    """
    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    if hidden_size < 2 * _ATTENTION_HEADS or hidden_size % (2 * _ATTENTION_HEADS):
        raise ValueError(
            f"hidden_size must be a multiple of {2 * _ATTENTION_HEADS} (even-sized heads), got {hidden_size}"
        )
    if num_layers < 1:
        raise ValueError(f"num_layers must be >= 1, got {num_layers}")
    if vocab_size < 256 + len(_SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must cover the 256 byte-level symbols and the special tokens, got {vocab_size}")

    import numpy as np
    from safetensors.numpy import save_file

    dest.mkdir(parents=True, exist_ok=True)
    tokenizer = _train_tokenizer(vocab_size)
    token_ids = {token: tokenizer.token_to_id(token) for token in _SPECIAL_TOKENS}
    # The trained vocabulary may be smaller than asked for when the corpus runs out of merges.
    actual_vocab_size = tokenizer.get_vocab_size()

    config = _llama_config(
        vocab_size=actual_vocab_size,
        hidden_size=hidden_size,
        num_layers=num_layers,
        max_position_embeddings=max_position_embeddings,
        token_ids=token_ids,
    )
    shapes = _llama_parameter_shapes(config)
    # Weights come from seeded bytes, in name order, so they depend only on `seed` and the shapes:
    # no torch or numpy RNG whose stream could change between versions. Uniform in [-0.05, 0.05).
    raw = np.frombuffer(deterministic_bytes(4 * sum(_numel(shape) for shape in shapes.values()), seed), "<u4")
    values = ((raw / np.float64(2**32) - 0.5) * 0.1).astype("<f4")
    tensors: dict[str, Any] = {}
    offset = 0
    for name in sorted(shapes):
        count = _numel(shapes[name])
        if name.endswith("norm.weight"):
            tensors[name] = np.ones(shapes[name], dtype="<f4")
        else:
            tensors[name] = values[offset : offset + count].reshape(shapes[name])
        offset += count

    sizes = {name: int(tensor.nbytes) for name, tensor in tensors.items()}
    shard_files = _shard_names(shards)
    groups = _split_into_shards(sizes, shards)
    weight_map: dict[str, str] = {}
    for shard_file, names in zip(shard_files, groups, strict=True):
        # metadata format "pt": what transformers' PyTorch loader expects (numpy arrays are stored identically).
        save_file({name: tensors[name] for name in names}, str(dest / shard_file), metadata={"format": "pt"})
        weight_map.update(dict.fromkeys(names, shard_file))
    if shards > 1:
        index = {"metadata": {"total_size": sum(sizes.values())}, "weight_map": dict(sorted(weight_map.items()))}
        _write_json(dest / "model.safetensors.index.json", index)

    _write_json(dest / "config.json", config)
    _write_json(
        dest / "generation_config.json",
        {
            "_from_model_config": True,
            "bos_token_id": token_ids[BOS_TOKEN],
            "eos_token_id": token_ids[EOS_TOKEN],
            "pad_token_id": token_ids[PAD_TOKEN],
            "transformers_version": WRITTEN_BY_TRANSFORMERS_VERSION,
        },
    )

    (dest / "tokenizer.json").write_text(tokenizer.to_str(pretty=True) + "\n", encoding="utf-8")
    special_tokens = {"bos_token": BOS_TOKEN, "eos_token": EOS_TOKEN, "pad_token": PAD_TOKEN, "unk_token": UNK_TOKEN}
    _write_json(
        dest / "tokenizer_config.json",
        {
            **special_tokens,
            "add_bos_token": False,
            "add_eos_token": False,
            "clean_up_tokenization_spaces": False,
            "model_max_length": max_position_embeddings,
            "tokenizer_class": "PreTrainedTokenizerFast",
        },
    )
    _write_json(dest / "special_tokens_map.json", special_tokens)

    (dest / "README.md").write_bytes(
        _model_card(
            "tiny-llm",
            f"A tiny random-weight Llama causal LM ({sum(sizes.values())} bytes of float32 weights, "
            f"{num_layers} layers, hidden size {hidden_size}, {actual_vocab_size}-token byte-level BPE "
            f"vocabulary, seed {seed}) generated locally by `model_cache_devtools.modelgen` for tests and "
            "the demo. Its output is gibberish by design.",
            tags=["llama", "tiny", "test-fixture"],
        )
    )
    (dest / ".gitattributes").write_text(GITATTRIBUTES, encoding="utf-8")
    return dest


# ---------------------------------------------------------------------------------------------
# Synthetic repos (big virtual files, no disk)
# ---------------------------------------------------------------------------------------------


def write_synthetic_repo(
    dest: Path,
    files: Mapping[str, tuple[int, int]],
    *,
    small_files: Mapping[str, bytes] | None = None,
) -> Path:
    """Declare virtual files `path -> (size, seed)` in `.hub-synthetic.json` and write `small_files` for real.

    The Hub double generates each virtual file's bytes on the fly from (size, seed), so a
    multi-GiB model costs no disk. A path may not be both virtual and real.
    """
    small_files = dict(small_files or {})
    overlap = sorted(set(files) & set(small_files))
    if overlap:
        raise ValueError(f"paths declared both synthetic and real: {overlap}")
    declared: dict[str, dict[str, int]] = {}
    for path, spec in files.items():
        _check_repo_path(path)
        if path.startswith(".hub-") and "/" not in path:
            raise ValueError(f"{path!r} is a reserved control-file name (.hub-*) at the repo root")
        size, seed = spec
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise ValueError(f"synthetic file {path!r}: size must be an int >= 0, got {size!r}")
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ValueError(f"synthetic file {path!r}: seed must be an int, got {seed!r}")
        declared[path] = {"size": size, "seed": seed}
    for path in small_files:
        _check_repo_path(path)
    dest.mkdir(parents=True, exist_ok=True)
    _write_files(dest, small_files)
    _write_json(dest / SYNTHETIC_CONTROL_FILE, {"files": dict(sorted(declared.items()))})
    return dest


def write_gated(dest: Path, tokens: list[str]) -> None:
    """Make the repo in `dest` gated: the Hub double then requires one of `tokens` as a bearer token."""
    if not tokens:
        raise ValueError("a gated repo needs at least one token")
    _write_json(dest / GATED_CONTROL_FILE, {"tokens": list(tokens)})


def write_refs(dest: Path, *, branches: list[str], tags: list[str] | None = None) -> None:
    """Declare the branches and tags the Hub double resolves for the repo in `dest`."""
    _write_json(dest / REFS_CONTROL_FILE, {"branches": list(branches), "tags": list(tags or [])})


def _tiny_safetensors(seed: int, count: int = 256) -> bytes:
    """A small valid safetensors file holding one float32 vector (for repos that only need the format)."""
    values = deterministic_bytes(count * 4, seed)
    header = json.dumps(
        {
            "__metadata__": {"format": "pt"},
            "weight": {"dtype": "F32", "shape": [count], "data_offsets": [0, count * 4]},
        },
        separators=(",", ":"),
    ).encode()
    header += b" " * (-len(header) % 8)  # the format pads the header to 8 bytes with spaces
    return len(header).to_bytes(8, "little") + header + values


def _small_config(model_type: str = "llama") -> bytes:
    return (json.dumps({"architectures": ["LlamaForCausalLM"], "model_type": model_type}, indent=2) + "\n").encode()


# ---------------------------------------------------------------------------------------------
# The fixture hub
# ---------------------------------------------------------------------------------------------


def build_fixture_hub(root: Path) -> None:
    """Write the standard fixture repos (module constants, docs/contributing/devtools.md) under `root`.

    Deterministic, so their commit ids are stable across runs; a few seconds (the tiny model
    imports torch). Existing repo folders under `root` are not touched but must not clash.
    """
    root.mkdir(parents=True, exist_ok=True)
    write_tiny_model(repo_dir(root, TINY_MODEL), seed=0, shards=2)

    nested = repo_dir(root, NESTED)
    _write_files(
        nested,
        {
            ".gitattributes": GITATTRIBUTES.encode(),
            "README.md": _model_card("nested", "Nested paths and odd names for fidelity tests.", tags=["test-fixture"]),
            "config.json": _small_config(),
            "sub/dir/file.txt": b"a file two folders deep\n",
            "sub/dir/data.json": b'{"answer": 42, "nested": {"list": [1, 2, 3]}}\n',
            "sub/other.txt": b"one folder deep\n",
            "sub/.hidden": b"a dotfile inside a folder\n",
            NESTED_UNICODE_PATH: "caf\u00e9 cr\u00e8me br\u00fbl\u00e9e \u2014 unicode content too\n".encode(),
            "empty.txt": b"",
            NESTED_LFS_WEIGHT_PATH: deterministic_bytes(NESTED_LFS_WEIGHT_SIZE, seed=3),
        },
    )
    write_synthetic_repo(nested, {NESTED_LARGE_FILE_PATH: (NESTED_LARGE_FILE_SIZE, NESTED_LARGE_FILE_SEED)})

    gated = repo_dir(root, GATED)
    _write_files(
        gated,
        {
            ".gitattributes": GITATTRIBUTES.encode(),
            "README.md": _model_card("gated", "You need to accept the conditions to access it.", tags=["gated"]),
            "config.json": _small_config(),
            "model.safetensors": _tiny_safetensors(seed=11),
        },
    )
    write_gated(gated, [GATED_TOKEN])

    # One weight set, six formats: the request default keeps only model.safetensors (docs/architecture.md 3.3).
    _write_files(
        repo_dir(root, MULTI_FORMAT),
        {
            ".gitattributes": GITATTRIBUTES.encode(),
            "README.md": _model_card("multi-format", "The same weights in every format.", tags=["test-fixture"]),
            "config.json": _small_config(),
            "generation_config.json": b'{\n  "bos_token_id": 1,\n  "eos_token_id": 2\n}\n',
            "tokenizer.json": b'{"version": "1.0", "model": {"type": "BPE", "vocab": {}, "merges": []}}\n',
            "model.safetensors": _tiny_safetensors(seed=21),
            "pytorch_model.bin": deterministic_bytes(64 * 1024, seed=22),
            "model.onnx": deterministic_bytes(64 * 1024, seed=23),
            "flax_model.msgpack": deterministic_bytes(64 * 1024, seed=24),
            "tf_model.h5": deterministic_bytes(64 * 1024, seed=25),
        },
    )

    write_synthetic_repo(
        repo_dir(root, BIG),
        {"model.safetensors": (BIG_WEIGHT_SIZE, BIG_WEIGHT_SEED)},
        small_files={".gitattributes": GITATTRIBUTES.encode(), "config.json": _small_config()},
    )

    _write_files(
        repo_dir(root, NO_ORG),
        {
            ".gitattributes": GITATTRIBUTES.encode(),
            "README.md": _model_card("solo-model", "A repo id without an org, like gpt2.", tags=["test-fixture"]),
            "config.json": _small_config(),
            "model.safetensors": _tiny_safetensors(seed=41),
        },
    )

    _write_files(
        repo_dir(root, BIN_ONLY),
        {
            ".gitattributes": GITATTRIBUTES.encode(),
            "config.json": _small_config(),
            "pytorch_model.bin": deterministic_bytes(64 * 1024, seed=51),
        },
    )
