"""Request bodies of the images API: JSON for generations, form fields for edits (pure)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from urllib.parse import urlsplit, urlunsplit

from bot.capabilities import ImageDescription, ModelCaps

__all__ = [
    "RESERVED_FIELDS",
    "build_generation_body",
    "common_fields",
    "endpoint_url",
    "form",
    "merge_extra",
]

# `stream` and `partial_images` are the client's to set (STREAM_PREVIEWS): an answer it did not
# ask to stream would otherwise be a stream.
RESERVED_FIELDS = frozenset({"prompt", "model", "n", "stream", "partial_images"})


_Fields = dict[str, object]
_Files = dict[str, tuple[str, bytes, str]]


def _accepted(value: object, accepted: tuple[str, ...] | None) -> bool:
    return value is not None and (accepted is None or bool(accepted))


def common_fields(description: ImageDescription, caps: ModelCaps) -> _Fields:
    fields: _Fields = {"prompt": description.prompt, "model": description.model}
    fields["n"] = 1 if caps.one_per_request else description.n
    if description.size is not None:
        fields["size"] = description.size
    if _accepted(description.quality, caps.qualities):
        fields["quality"] = description.quality
    if _accepted(description.background, caps.backgrounds):
        fields["background"] = description.background
    if description.output_format is not None and (caps.gpt_image or not caps.known):
        fields["output_format"] = description.output_format
    if caps.response_format:
        fields["response_format"] = "b64_json"
    return fields


def merge_extra(fields: _Fields, extra: Mapping[str, object]) -> _Fields:
    # The operator's extra fields win over everything except what the request is about.
    merged = dict(fields)
    merged.update({key: value for key, value in extra.items() if key not in RESERVED_FIELDS})
    return merged


def build_generation_body(description: ImageDescription, caps: ModelCaps) -> dict[str, object]:
    """Return the JSON body of one generation request (n=1 when the model fans out)."""
    fields = common_fields(description, caps)
    if _accepted(description.style, caps.styles):
        fields["style"] = description.style
    return merge_extra(fields, description.extra)


def _form_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value)


def form(fields: Mapping[str, object]) -> dict[str, str]:
    return {key: _form_value(value) for key, value in fields.items() if value is not None}


def endpoint_url(base_url: str, endpoint: str) -> str:
    """Return the URL of one images endpoint (`generations`, `edits`, `variations`).

    The path is joined before the base URL's query, which is kept: Azure-style fronts want
    `…/deployments/<name>/images/generations?api-version=…`.
    """
    try:
        parts = urlsplit(base_url)
    except ValueError:  # malformed (config refuses these); the client reports the send failure
        return f"{base_url.rstrip('/')}/images/{endpoint}"
    path = f"{parts.path.rstrip('/')}/images/{endpoint}"
    return urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))
