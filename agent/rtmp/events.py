"""Events returned by :class:`ServerSession` and :class:`ClientSession`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .message import Message

__all__ = [
    "ClientConnected",
    "ConnectRequested",
    "Event",
    "MediaReceived",
    "PublishEnded",
    "PublishRefused",
    "PublishRequested",
    "PublishStarted",
    "ServerClosed",
    "StatusReceived",
]


class Event:
    """Base class of every session event."""

    __slots__ = ()


# ----------------------------------------------------------------- server side (ingest)


@dataclass(slots=True)
class ConnectRequested(Event):
    """The client sent ``connect`` (already answered with NetConnection.Connect.Success)."""

    app: str
    tc_url: str | None
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PublishRequested(Event):
    """The client sent ``publish``; answer with ``accept_publish``/``reject_publish``.

    ``stream_name`` is the raw name as sent, possibly with a ``?query`` suffix.
    """

    stream_name: str
    publish_type: str


@dataclass(slots=True)
class MediaReceived(Event):
    """Audio, video or data (``@setDataFrame``/``onMetaData``) from the publisher."""

    message: Message


@dataclass(slots=True)
class PublishEnded(Event):
    """The publisher stopped: ``FCUnpublish``, ``deleteStream`` or ``closeStream``."""

    reason: str = ""


# ----------------------------------------------------------------- client side (relay)


@dataclass(slots=True)
class ClientConnected(Event):
    """The destination answered ``connect`` with ``_result``."""

    properties: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class PublishStarted(Event):
    """The destination answered ``publish`` with NetStream.Publish.Start."""

    stream_id: int


@dataclass(slots=True)
class PublishRefused(Event):
    """The destination refused the connection, the stream or the publish."""

    code: str
    description: str


@dataclass(slots=True)
class StatusReceived(Event):
    """Any other ``onStatus`` from the destination (e.g. NetStream.Unpublish.Success)."""

    level: str
    code: str
    description: str


@dataclass(slots=True)
class ServerClosed(Event):
    """The destination asked to close the connection (``close`` command or error status)."""

    reason: str = ""
