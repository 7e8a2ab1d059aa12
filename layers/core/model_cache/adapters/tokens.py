"""Where the Hugging Face token comes from, in this order:

1. a Secrets Manager secret named by `HF_TOKEN_SECRET_ARN` (or `HF_TOKEN_SECRET_NAME`), read
   through Powertools parameters (cached for `HF_TOKEN_CACHE_SECONDS`, default 300, so a warm
   Lambda does not call Secrets Manager on every unit);
2. the `HF_TOKEN` environment variable (CLI, local runs, the copier as a local process);
3. none: public repos only.

The token is handed to the core functions as an argument. It is never logged, never put in an
event, a state machine input/output or an exception message.
"""

from __future__ import annotations

import json
import os

from model_cache.contract.errors import AccessDenied

SECRET_ENV_VARS = ("HF_TOKEN_SECRET_ARN", "HF_TOKEN_SECRET_NAME")
DEFAULT_CACHE_SECONDS = 300
# Keys accepted when the secret is a JSON object rather than the bare token string.
_JSON_TOKEN_KEYS = ("HF_TOKEN", "hf_token", "token")


class TokenUnavailable(AccessDenied):
    """The configured token secret exists in configuration but cannot be read or is empty."""


def hub_token() -> str | None:
    """The Hub token, or None when none is configured."""
    secret_id = next((os.environ[name] for name in SECRET_ENV_VARS if os.environ.get(name)), None)
    if secret_id:
        return _token_from_secret(secret_id)
    token = os.environ.get("HF_TOKEN", "").strip()
    return token or None


def _token_from_secret(secret_id: str) -> str:
    # Imported here so the CLI and the copier do not need Powertools unless a secret is configured.
    from aws_lambda_powertools.utilities import parameters

    max_age = int(os.environ.get("HF_TOKEN_CACHE_SECONDS", str(DEFAULT_CACHE_SECONDS)))
    try:
        raw = parameters.get_secret(secret_id, max_age=max_age)
    except parameters.exceptions.GetParameterError as exc:
        # The Powertools message carries only the AWS error, never the secret value.
        raise TokenUnavailable(f"cannot read the Hub token secret {secret_id}: {exc}") from None
    value = raw.decode() if isinstance(raw, bytes) else str(raw)
    token = _extract_token(value, secret_id)
    if not token:
        raise TokenUnavailable(f"the Hub token secret {secret_id} is empty")
    return token


def _extract_token(value: str, secret_id: str) -> str:
    text = value.strip()
    if not text.startswith("{"):
        return text
    try:
        decoded = json.loads(text)
    except json.JSONDecodeError:
        raise TokenUnavailable(f"the Hub token secret {secret_id} looks like JSON but does not parse") from None
    if isinstance(decoded, dict):
        for key in _JSON_TOKEN_KEYS:
            candidate = decoded.get(key)
            if isinstance(candidate, str) and candidate.strip():
                return candidate.strip()
    raise TokenUnavailable(
        f"the Hub token secret {secret_id} is a JSON object without a string field {' / '.join(_JSON_TOKEN_KEYS)}"
    )
