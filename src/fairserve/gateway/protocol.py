"""Parsing and validating OpenAI-compatible request bodies; prompt-token estimates.

Prompt tokens are estimated without a tokenizer: a text of ``c`` characters
counts ``ceil(c / 4)`` tokens (OpenAI's rule of thumb for English; real
tokenizers give 0.7x-1.5x of it), and each chat message adds 3 tokens for its
role and separators, plus 3 for the reply's priming. When the client sends
token ids (``prompt: [1, 2, 3]`` on ``/v1/completions``) their count is exact.
The gateway and the simulated engine use the same estimate, so they agree.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from enum import Enum
from typing import Any

import orjson

from fairserve.gateway.errors import APIError, bad_request

CHARS_PER_TOKEN = 4
MAX_CHOICES = 128  # n: as OpenAI's API caps it
MAX_PROMPTS = 256  # prompts in one batched completion request
CHAT_TOKENS_PER_MESSAGE = 3
CHAT_REPLY_PRIMING_TOKENS = 3
#: Nesting of arrays and objects accepted in a body (``limits.max_json_depth``).
MAX_JSON_DEPTH = 64
#: Integer fields are at most this (vLLM's and most engines' int32 fields).
MAX_INT = 2**31 - 1
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
_LONG_INTEGER = re.compile(rb"\d{19}")
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool", "function"})


class Endpoint(Enum):
    """The two generation endpoints."""

    CHAT = "chat"
    COMPLETIONS = "completions"

    @property
    def path(self) -> str:
        """The URL path of the endpoint."""
        return "/v1/chat/completions" if self is Endpoint.CHAT else "/v1/completions"


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    """What the gateway and the engine need of a validated request body.

    ``max_tokens`` is None when the client did not set it. ``text`` is the
    prompt text (the last user message for chat), used by the simulated
    engine's echo output and as a predictor feature.
    """

    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_tokens: int | None
    prompt_tokens: int
    text: str
    ignore_eos: bool | None
    n: int = 1  # choices asked for per prompt (the backend decides whether it serves n > 1)
    prompts: int = 1  # prompts in a batched completion request (each gets n choices)

    @property
    def sequences(self) -> int:
        """Sequences the engine generates for this request: prompts times n."""
        return self.n * self.prompts


def estimate_tokens(text: str) -> int:
    """Tokens of ``text`` by the chars/4 rule (at least 1 for a non-empty text)."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The body as a JSON object, or a 400.

    Refused as well (they would fail later, after admission): nesting deeper
    than ``max_depth``, ``NaN``/``Infinity`` and numbers beyond a double, and
    strings with a lone UTF-16 surrogate (they cannot be encoded to UTF-8).
    """
    if not raw:
        raise bad_request("the request body is empty; send a JSON object")
    body = _fast_json(raw)
    if body is not None:
        if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(body) > max_depth:
            raise _too_deep(max_depth)
        return body
    try:
        text = raw.decode("utf-8")  # strict: JSON bodies are UTF-8 (RFC 8259), no surrogates
        body = json.loads(text, parse_float=_finite_float, parse_constant=_no_constant)
    except RecursionError:
        raise _too_deep(max_depth) from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise bad_request(f"the request body is not valid JSON: {exc}") from None
    if not isinstance(body, dict):
        raise bad_request("the request body must be a JSON object")
    # Cheap upper bound first: a body with few brackets cannot be deeply nested.
    if raw.count(b"[") + raw.count(b"{") > max_depth and _depth(body) > max_depth:
        raise _too_deep(max_depth)
    if _SURROGATE_ESCAPE.search(text) is not None:
        _check_surrogates(body)
    return body


def _fast_json(raw: bytes) -> dict[str, Any] | None:
    """The body read by orjson where that reads it as the checks below would, else None.

    orjson refuses what :func:`parse_json` refuses (invalid UTF-8, lone
    surrogates, NaN, numbers beyond a double, nesting past 1024); an integer
    too long for 64 bits it reads as a float, so such bodies go to the
    stdlib decoder, which keeps them exact.
    """
    if _LONG_INTEGER.search(raw) is not None:
        return None
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None  # the stdlib path says what is wrong
    return body if isinstance(body, dict) else None


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise bad_request(f"the number {text[:32]} is out of range")
    return value


def _no_constant(name: str) -> float:
    raise bad_request(f"the request body contains {name}, which is not valid JSON")


def _too_deep(max_depth: int) -> APIError:
    return bad_request(f"the request body is nested more than {max_depth} levels deep")


def _depth(value: Any) -> int:
    """Nesting depth of arrays and objects, without recursion (the body may be hostile)."""
    deepest = 0
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        children = item.values() if isinstance(item, dict) else item
        deepest = max(deepest, depth)
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return deepest


def _check_surrogates(body: dict[str, Any]) -> None:
    try:
        json.dumps(body, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise bad_request(
            "the request body has a lone UTF-16 surrogate escape (\\ud800-\\udfff) in a string; "
            "send valid Unicode"
        ) from None


def _opt_int(body: dict[str, Any], key: str, minimum: int) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise bad_request(f"{key} must be an integer >= {minimum}", param=key)
    if value < minimum:
        raise bad_request(f"{key} must be >= {minimum}, got {value}", param=key)
    if value > MAX_INT:
        raise bad_request(f"{key} must be <= {MAX_INT}", param=key)
    return value


def _opt_bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise bad_request(f"{key} must be a boolean", param=key)
    return value


def _content_text(content: Any, where: str) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if not isinstance(part, dict) or not isinstance(part.get("type"), str):
                raise bad_request(f"{where}[{i}] must be an object with a type", param=where)
            if part["type"] == "text":
                if not isinstance(part.get("text"), str):
                    raise bad_request(f"{where}[{i}].text must be a string", param=where)
                parts.append(part["text"])
        return "".join(parts)
    raise bad_request(f"{where} must be a string or a list of content parts", param=where)


def _chat_prompt(body: dict[str, Any]) -> tuple[int, str]:
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise bad_request("messages must be a non-empty list", param="messages")
    tokens = CHAT_REPLY_PRIMING_TOKENS
    last_user = ""
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            raise bad_request(f"messages[{i}] must be an object", param="messages")
        role = msg.get("role")
        if role not in _ROLES:
            raise bad_request(
                f"messages[{i}].role must be one of {', '.join(sorted(_ROLES))}",
                param="messages",
            )
        text = _content_text(msg.get("content"), f"messages[{i}].content")
        tokens += estimate_tokens(text) + CHAT_TOKENS_PER_MESSAGE
        if role == "user":
            last_user = text
    return tokens, last_user


def _token_ids(prompt: Any) -> bool:
    return (
        isinstance(prompt, list)
        and bool(prompt)
        and all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in prompt)
    )


def _one_prompt(prompt: Any, where: str) -> tuple[int, str] | None:
    """(tokens, text) of one prompt: a string or a list of token ids; None otherwise."""
    if isinstance(prompt, str):
        if not prompt:
            raise bad_request(f"{where} must not be empty", param="prompt")
        return estimate_tokens(prompt), prompt
    if _token_ids(prompt):
        return len(prompt), " ".join(str(t) for t in prompt[:64])
    return None


def _completion_prompt(body: dict[str, Any]) -> tuple[int, str, int]:
    """(tokens, text, prompts): one prompt, or a batch of them (each one choice per ``n``)."""
    prompt = body.get("prompt")
    one = _one_prompt(prompt, "prompt")
    if one is not None:
        return (*one, 1)
    if isinstance(prompt, list) and prompt:
        if len(prompt) > MAX_PROMPTS:
            raise bad_request(f"a batch holds at most {MAX_PROMPTS} prompts, got {len(prompt)}",
                              param="prompt")  # fmt: skip
        parts = [_one_prompt(p, f"prompt[{i}]") for i, p in enumerate(prompt)]
        if all(part is not None for part in parts):
            tokens = sum(part[0] for part in parts if part is not None)
            return tokens, parts[0][1] if parts[0] is not None else "", len(parts)
    raise bad_request("prompt must be a non-empty string or a list of token ids", param="prompt")


def parse_request(
    endpoint: Endpoint, raw: bytes, max_json_depth: int = MAX_JSON_DEPTH
) -> ParsedRequest:
    """Validate an OpenAI-compatible body; raise a 400 ``APIError`` naming the field."""
    body = parse_json(raw, max_json_depth)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model must be a non-empty string", param="model")
    stream = _opt_bool(body, "stream") or False
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not stream:
            raise bad_request("stream_options is only allowed with stream: true",
                              param="stream_options")  # fmt: skip
        if not isinstance(options, dict):
            raise bad_request("stream_options must be an object", param="stream_options")
        include_usage = _opt_bool(options, "include_usage") or False
    n = _opt_int(body, "n", 1) or 1
    if n > MAX_CHOICES:
        raise bad_request(f"n must be <= {MAX_CHOICES}, got {n}", param="n")
    max_tokens = _opt_int(body, "max_tokens", 1)
    if endpoint is Endpoint.CHAT:
        max_completion = _opt_int(body, "max_completion_tokens", 1)
        if max_completion is not None:
            max_tokens = max_completion if max_tokens is None else min(max_tokens, max_completion)
        prompt_tokens, text = _chat_prompt(body)
        prompts = 1
    else:
        prompt_tokens, text, prompts = _completion_prompt(body)
    _opt_int(body, "priority", -(2**31))
    return ParsedRequest(
        endpoint=endpoint,
        body=body,
        model=model,
        stream=stream,
        include_usage=include_usage,
        max_tokens=max_tokens,
        prompt_tokens=max(1, prompt_tokens),
        text=text,
        ignore_eos=_opt_bool(body, "ignore_eos"),
        n=n,
        prompts=prompts,
    )


def not_found_model(model: str, known: list[str]) -> APIError:
    """404 for a model this server does not serve (as OpenAI and vLLM answer)."""
    return APIError(
        404,
        f"The model {model!r} does not exist; available: {', '.join(known)}",
        param="model",
        code="model_not_found",
    )
