"""Read a `text/event-stream` body incrementally into events (pure: bytes in, events out).

    decoder = SSEDecoder(max_event_bytes=64 * 1024 * 1024)
    async for chunk in response.aiter_bytes():
        for event in decoder.feed(chunk):
            ...

Follows the WHATWG "event stream interpretation": lines end in CR LF, LF or CR; a blank line
dispatches the event; `data:` lines are joined with LF; `:` lines are comments; one space after
the colon is dropped; an event cut off by the end of the stream is discarded. Works on bytes, so
a picture's megabytes of base64 on one line are never decoded to text here; a line or an event
over `max_event_bytes` raises `SSETooLarge` before it is held in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["SSEDecoder", "SSETooLarge", "ServerSentEvent"]


def _copy(buffer: bytearray, start: int, end: int) -> bytes:
    """Return `buffer[start:end]` as bytes in one copy (a bytearray slice would make two)."""
    with memoryview(buffer) as view:
        return bytes(view[start:end])


class SSETooLarge(ValueError):
    """One event of the stream is over the decoder's `max_event_bytes`."""


@dataclass(frozen=True)
class ServerSentEvent:
    """One dispatched event: its `event:` name (None when not given), data and id."""

    event: str | None
    data: bytes
    id: str | None = None

    def __repr__(self) -> str:
        return f"ServerSentEvent(event={self.event!r}, <{len(self.data)} bytes>, id={self.id!r})"


class SSEDecoder:
    """Turn chunks of an event stream into `ServerSentEvent`s as their blank line arrives."""

    def __init__(self, *, max_event_bytes: int) -> None:
        self._max = max_event_bytes
        self._buffer = bytearray()
        self._scan_from = 0  # where the next line end may be (the buffer before has none)
        self._event: str | None = None
        self._data: list[bytes] = []
        self._data_size = 0
        self._id: str | None = None

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Take the next bytes of the stream; return the events they complete, in order."""
        buffer = self._buffer
        buffer += chunk
        events: list[ServerSentEvent] = []
        start, pos = 0, self._scan_from
        # bytearray.find (memchr) instead of a regex: a picture's line is megabytes of base64,
        # and each find result is kept until passed, so every byte is scanned about once.
        cr, lf = buffer.find(b"\r", pos), buffer.find(b"\n", pos)
        while True:
            if 0 <= cr < pos:
                cr = buffer.find(b"\r", pos)
            if 0 <= lf < pos:
                lf = buffer.find(b"\n", pos)
            if lf < 0 and cr < 0:
                break
            if lf < 0 or 0 <= cr < lf:
                if cr + 1 == len(buffer):
                    break  # a CR at the end of the chunk may be the first half of CR LF
                end, pos = cr, cr + (2 if buffer[cr + 1] == 0x0A else 1)
            else:
                end, pos = lf, lf + 1
            self._line(_copy(buffer, start, end), events)
            start = pos
        del buffer[:start]
        self._scan_from = len(buffer) - (1 if buffer.endswith(b"\r") else 0)
        if len(buffer) + self._data_size > self._max:
            raise SSETooLarge(f"an event of the stream is over {self._max} bytes")
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of the stream: a complete last line is read; an undispatched event is dropped."""
        events: list[ServerSentEvent] = []
        if self._buffer:
            self._line(bytes(self._buffer.rstrip(b"\r")), events)
            self._buffer.clear()
        self._scan_from = 0
        self._reset()
        return events

    def _line(self, line: bytes, events: list[ServerSentEvent]) -> None:
        if not line:
            if self._data:
                events.append(ServerSentEvent(self._event, b"\n".join(self._data), self._id))
            self._reset()
            return
        if line.startswith(b":"):
            return
        name, colon, value = line.partition(b":")
        if colon and value.startswith(b" "):
            value = value[1:]
        if name == b"data":
            self._data.append(value)
            self._data_size += len(value) + 1
            if self._data_size > self._max:
                raise SSETooLarge(f"an event of the stream is over {self._max} bytes")
        elif name == b"event":
            self._event = value.decode("utf-8", "replace")
        elif name == b"id" and b"\0" not in value:
            self._id = value.decode("utf-8", "replace")
        # `retry` and unknown fields are ignored, as the standard says.

    def _reset(self) -> None:
        self._event = None
        self._data = []
        self._data_size = 0
