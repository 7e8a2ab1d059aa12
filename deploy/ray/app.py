"""Ray Serve text generation: `TextGenerator`, served by the kro RayService (deploy/kro/ray-service.yaml).

The model comes through the loader package (model_cache_loader): from the S3 model cache when
USE_MODEL_CACHE=true and the bucket holds it, from the pod's local Hugging Face cache when it is
already there, from the Hub otherwise. transformers then loads the local snapshot directory, so
it makes no Hub call of its own.

Environment (set by the RGD's serveConfigV2):
  MODEL_ID            Hugging Face repo id, optionally `@revision` (default microsoft/DialoGPT-medium)
  MAX_LENGTH          max_length for generate(), prompt included (default "100")
  USE_MODEL_CACHE, MODEL_CACHE_BUCKET, MODEL_CACHE_PREFIX, AWS_REGION
                      read by the loader; HF_TOKEN (from a Secret) for gated models, only in pods
                      without the cache role (useModelCache: false)

POST {"prompt": "..."} answers with the generated text and how the model got here; a bad request
or a failed generation answers {"error": "..."} with a 4xx/5xx status.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any

from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

log = logging.getLogger("ray.serve.text_generation")

DEFAULT_MODEL_ID = "microsoft/DialoGPT-medium"
DEFAULT_MAX_LENGTH = "100"
# The loader's names for where the bytes came from -> what this API reports.
MODEL_SOURCES = {"s3": "s3-cache", "local": "local", "hub": "hub"}
TEMPERATURE = 0.7


class ConfigurationError(ValueError):
    """A pod variable is set to something the app cannot use."""


def max_length_from_env() -> int:
    raw = os.environ.get("MAX_LENGTH", DEFAULT_MAX_LENGTH).strip()
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"MAX_LENGTH must be a positive integer, got {raw!r}") from None
    if value < 2:
        raise ConfigurationError(f"MAX_LENGTH must be at least 2 (prompt plus one new token), got {value}")
    return value


@dataclass
class LoadedModel:
    tokenizer: Any
    model: Any
    model_id: str
    commit: str
    source: str
    gpu_available: bool
    device_used: str
    pull_seconds: float
    load_seconds: float


@dataclass(frozen=True)
class Snapshot:
    path: str
    source: str
    commit: str
    bytes_downloaded: int
    reason: str | None


def cache_enabled() -> bool:
    return os.environ.get("USE_MODEL_CACHE", "true").strip().lower() not in ("false", "0", "no", "off")


def fetch_snapshot(model_id: str) -> Snapshot:
    """The model's local snapshot: through the loader when the cache is on; with the cache off,
    straight from the Hub with huggingface_hub, so a cluster without the loader package still serves."""
    if not cache_enabled():
        from huggingface_hub import snapshot_download

        repo_id, _, revision = model_id.partition("@")
        path = snapshot_download(repo_id, revision=revision or None)
        commit = os.path.basename(os.path.normpath(path))
        return Snapshot(path=path, source="hub", commit=commit, bytes_downloaded=0, reason="USE_MODEL_CACHE=false")
    from model_cache_loader import pull

    pulled = pull(model_id)
    return Snapshot(
        path=str(pulled.path),
        source=pulled.source,
        commit=pulled.commit,
        bytes_downloaded=pulled.bytes_downloaded,
        reason=pulled.reason,
    )


def load_model(model_id: str) -> LoadedModel:
    """Resolve `model_id` through the loader, then load it with transformers for this pod's hardware."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.monotonic()
    pulled = fetch_snapshot(model_id)
    pull_seconds = time.monotonic() - started
    source = MODEL_SOURCES.get(pulled.source, pulled.source)
    log.info(
        "model %s@%s from %s (%d bytes in %.2fs)%s",
        model_id,
        pulled.commit,
        source,
        pulled.bytes_downloaded,
        pull_seconds,
        f": {pulled.reason}" if pulled.reason else "",
    )

    gpu_available = torch.cuda.is_available()
    model: Any
    if gpu_available:
        # Half precision halves GPU memory; device_map="auto" (accelerate) places the layers.
        model = AutoModelForCausalLM.from_pretrained(
            pulled.path, dtype=torch.float16, device_map="auto", use_safetensors=True
        )
    else:
        # CPUs have no fast float16 kernels for most ops.
        # use_safetensors: never unpickle a .bin checkpoint, whatever the snapshot holds.
        model = AutoModelForCausalLM.from_pretrained(pulled.path, dtype=torch.float32, use_safetensors=True)
    model.eval()
    tokenizer = AutoTokenizer.from_pretrained(pulled.path)
    if tokenizer.pad_token is None:
        # Causal LMs often ship without a pad token; generate() needs one.
        tokenizer.pad_token = tokenizer.eos_token
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id

    return LoadedModel(
        tokenizer=tokenizer,
        model=model,
        model_id=model_id,
        commit=pulled.commit,
        source=source,
        gpu_available=gpu_available,
        device_used="cuda" if gpu_available else "cpu",
        pull_seconds=pull_seconds,
        load_seconds=time.monotonic() - started,
    )


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


@serve.deployment
class TextGenerator:
    def __init__(self) -> None:
        self.model_id = os.environ.get("MODEL_ID", "").strip() or DEFAULT_MODEL_ID
        self.max_length = max_length_from_env()
        self.loaded = load_model(self.model_id)

    async def __call__(self, request: Request) -> JSONResponse:
        if request.method != "POST":
            return error_response(405, 'use POST with a JSON body {"prompt": "..."}')
        try:
            payload = json.loads(await request.body())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            return error_response(400, f"request body is not valid JSON: {exc}")
        if not isinstance(payload, dict):
            return error_response(400, f'expected a JSON object {{"prompt": "..."}}, got {type(payload).__name__}')
        prompt = payload.get("prompt")
        if not isinstance(prompt, str) or not prompt.strip():
            return error_response(400, 'missing "prompt": send a JSON object {"prompt": "<non-empty text>"}')

        try:
            # generate() is blocking; a worker thread keeps the replica's event loop (and health checks) responsive.
            return JSONResponse(await asyncio.to_thread(self.generate, prompt))
        except PromptTooLongError as exc:
            return error_response(413, str(exc))
        except Exception as exc:
            log.exception("generation failed for a %d-character prompt", len(prompt))
            return error_response(500, f"generation failed: {type(exc).__name__}: {exc}")

    def generate(self, prompt: str) -> dict[str, Any]:
        import torch

        loaded = self.loaded
        inputs = loaded.tokenizer(prompt, return_tensors="pt").to(loaded.model.device)
        prompt_tokens = int(inputs["input_ids"].shape[-1])
        if prompt_tokens >= self.max_length:
            raise PromptTooLongError(
                f"the prompt is {prompt_tokens} tokens; MAX_LENGTH is {self.max_length}, so nothing would be generated"
            )
        started = time.monotonic()
        with torch.no_grad():
            outputs = loaded.model.generate(
                **inputs,
                max_length=self.max_length,
                min_new_tokens=1,
                do_sample=True,
                temperature=TEMPERATURE,
                pad_token_id=loaded.tokenizer.pad_token_id,
            )
        inference_seconds = time.monotonic() - started
        new_tokens = outputs[0][prompt_tokens:]
        text = loaded.tokenizer.decode(new_tokens, skip_special_tokens=True)
        return {
            # The seed's field: clients written for it read "response"; the rest are new beside it.
            "response": text,
            "prompt": prompt,
            "generated_text": text,
            "generated_tokens": int(new_tokens.shape[-1]),
            "inference_time_seconds": round(inference_seconds, 4),
            "device_used": loaded.device_used,
            "gpu_available": loaded.gpu_available,
            "model_device": str(loaded.model.device),
            "model_id": loaded.model_id,
            "model_commit": loaded.commit,
            "model_source": loaded.source,
            "load_seconds": round(loaded.load_seconds, 4),
        }


class PromptTooLongError(ValueError):
    """The prompt alone reaches MAX_LENGTH."""


# serve.deployment's return type hides .bind() from mypy.
deployment = TextGenerator.bind()  # type: ignore[attr-defined]
