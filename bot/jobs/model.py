"""The job model: a validated request (`ImageRequest`), where it came from (`Origin`), and `Job`.

A job's request is stored as JSON (`encode_request` / `decode_request`) so that a restart can
run it again exactly as it was admitted: the resolved description sent to the images API, the
user's options, how to deliver, and for edits and variations the Telegram file id of the source
picture (downloaded again on resume, never stored). Pure: no I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from datetime import datetime
from typing import Any

from bot.capabilities import ImageDescription, ModelCaps, caps_for
from bot.prompt import ImageOptions
from bot.store import JobRecord

KINDS = ("generate", "edit", "variation")
_VERSION = 1


class BadJob(ValueError):
    """A stored request cannot be read back (written by another version, or damaged)."""


@dataclass(frozen=True)
class ImageRequest:
    """One validated generation to run: what to ask for and how to deliver it."""

    description: ImageDescription
    caps: ModelCaps
    options: ImageOptions
    as_file: bool
    kind: str = "generate"  # or "edit", "variation"
    source_file_id: str | None = None  # where the picture to edit or vary is on Telegram
    source_size: int | None = None  # its size, when Telegram told us


@dataclass(frozen=True)
class Origin:
    """Who asked, in which chat and forum topic, the message to answer, in which language."""

    user_id: int
    chat_id: int
    chat_type: str  # Telegram's chat type: private, group, supergroup, channel
    thread_id: int | None
    message_id: int
    lang: str

    @property
    def in_group(self) -> bool:
        """Return whether the request came from a group or supergroup."""
        return self.chat_type in ("group", "supergroup")


@dataclass(frozen=True)
class Job:
    """An admitted request as the worker runs it; `resumed` when a restart picked it up."""

    id: int
    origin: Origin
    request: ImageRequest
    created_at: datetime
    resumed: bool = False


def encode_request(request: ImageRequest) -> str:
    """Return the request as the JSON a job keeps (the caps are rebuilt from the model)."""
    description = {f.name: getattr(request.description, f.name) for f in fields(ImageDescription)}
    description["extra"] = dict(request.description.extra)  # a read-only mapping
    return json.dumps(
        {
            "v": _VERSION,
            "kind": request.kind,
            "description": description,
            "options": asdict(request.options),
            "as_file": request.as_file,
            "source_file_id": request.source_file_id,
            "source_size": request.source_size,
        },
        ensure_ascii=False,
        separators=(",", ":"),
    )


def decode_request(text: str, *, aliases: Mapping[str, str]) -> ImageRequest:
    """Read a request written by `encode_request`; raise `BadJob` when it cannot be used."""
    try:
        raw = json.loads(text)
        if not isinstance(raw, dict) or raw.get("v") != _VERSION:
            raise BadJob("unknown request format")
        kind = raw["kind"]
        if kind not in KINDS:
            raise BadJob(f"unknown kind {kind!r}")
        description = ImageDescription(**_known(ImageDescription, raw["description"]))
        options = ImageOptions(**_known(ImageOptions, raw["options"]))
        source = raw.get("source_file_id")
        size = raw.get("source_size")
        if kind != "generate" and not isinstance(source, str):
            raise BadJob("an edit or variation without its source picture")
    except (ValueError, KeyError, TypeError) as exc:
        raise BadJob(str(exc)) from exc
    return ImageRequest(
        description=description,
        caps=caps_for(description.model, aliases),
        options=options,
        as_file=bool(raw.get("as_file")),
        kind=kind,
        source_file_id=source if isinstance(source, str) else None,
        source_size=size if isinstance(size, int) else None,
    )


def _known(cls: type[Any], values: object) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise BadJob(f"{cls.__name__} is not an object")
    names = {f.name for f in fields(cls)}
    return {key: value for key, value in values.items() if key in names}


def job_from_record(record: JobRecord, *, aliases: Mapping[str, str], resumed: bool) -> Job:
    """Return the job a stored record describes (raises `BadJob`)."""
    origin = Origin(
        user_id=record.user_id,
        chat_id=record.chat_id,
        chat_type=record.chat_type,
        thread_id=record.thread_id,
        message_id=record.message_id,
        lang=record.lang,
    )
    return Job(
        id=record.id,
        origin=origin,
        request=decode_request(record.request, aliases=aliases),
        created_at=record.created_at,
        resumed=resumed,
    )
