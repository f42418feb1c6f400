"""Logging for both programs: one line per event, human-readable or JSON.

`setup_logging(level, "text")` writes `time LEVEL logger: message` lines, as before;
`"json"` writes one JSON object per line (`time`, `level`, `logger`, `message`, and the
event's structured fields such as `request_id`, `method`, `route`, `status`,
`duration_ms`). Messages never carry secrets: callers log route patterns and key
hashes, never paths, keys or tokens.
"""

import json
import logging
import sys
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
TEXT_FORMAT_WORKER = "%(asctime)s %(levelname)s %(name)s (worker %(worker)s): %(message)s"

# The id of the HTTP request being handled (rig), attached to every line logged meanwhile.
request_id_var: ContextVar[str | None] = ContextVar("request_id", default=None)

# Attributes every LogRecord has; anything else was passed with `extra=` and is a field.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def log_format(value: str) -> str:
    """Validate a log format name (`text` or `json`); used as an option's type."""
    value = value.strip().lower()
    if value not in LOG_FORMATS:
        raise ValueError(f"log format must be one of {', '.join(LOG_FORMATS)}, not {value!r}")
    return value


def log_level(value: str) -> str:
    """Validate a log level name (any case); used as an option's type."""
    level = value.strip().upper()
    if level not in LOG_LEVELS:
        raise ValueError(f"must be one of {', '.join(LOG_LEVELS)}, not {value!r}")
    return level


class RequestIdFilter(logging.Filter):
    """Adds `request_id` to records logged while a request is handled."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "request_id", None) is None:
            request_id = request_id_var.get()
            if request_id is not None:
                record.request_id = request_id
        return True


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message`, and `[request_id]` when there is one; an agent
    worker's lines name it: `time LEVEL logger (worker 2): message`."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._worker = logging.Formatter(TEXT_FORMAT_WORKER)

    def formatMessage(self, record: logging.LogRecord) -> str:
        if getattr(record, "worker", None) is not None:
            line = self._worker.formatMessage(record)
        else:
            line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        if request_id and f"[{request_id}]" not in line:
            line += f" [{request_id}]"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name, value in record.__dict__.items():
            if name not in _STANDARD and not name.startswith("_"):
                entry[name] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        return json.dumps(entry, default=str, ensure_ascii=False)


def setup_logging(level: str, fmt: str = "text") -> None:
    """Configure the root logger for a program (replacing any earlier handler)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format(fmt) == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter())
    handler.addFilter(RequestIdFilter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
