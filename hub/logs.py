"""Structured logging: one event per line, as ``key=value`` text or as JSON.

Every line has ``timestamp`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``, then
the event's fields: ``node_id``, ``child_id`` and ``token`` (the child's fencing token)
first whenever the event concerns them, then any other ``extra=`` field. An exception
goes into the ``exception`` field (traceback included) of the same line: newlines inside
values are escaped, so a line is always one event.

Fields reach a record two ways:

* explicitly, ``log.warning(..., extra=fields(child_id=..., token=...))``;
* from the task's *log context* (:func:`bind`): the Hub binds ``node_id`` for every task it
  starts, the supervisor binds ``child_id`` and ``token`` in each child's task, so lines
  logged there (a worker's own lines included) carry them. Contexts are per task (a
  :class:`contextvars.ContextVar`), so several hubs in one process keep their own ids.

:class:`ContextFilter` copies the context into records: :func:`get_logger` attaches it to
the library's loggers and :func:`make_handler` to the handler, which covers third-party
loggers too.

Secrets: nothing here reads configuration. Callers never log etcd credentials, the etcd
auth token or the RPC token, and never spec ``args`` at INFO or above (they are user data).
"""

from __future__ import annotations

import contextlib
import contextvars
import datetime
import json
import logging
import sys
import types
from collections.abc import Iterator, Mapping
from typing import TextIO

__all__ = [
    "CONTEXT_FIELDS",
    "ContextFilter",
    "JsonFormatter",
    "TextFormatter",
    "bind",
    "bind_task",
    "fields",
    "get_logger",
    "make_handler",
    "setup_logging",
]

#: Fields put first, in this order, when an event carries them.
CONTEXT_FIELDS: tuple[str, ...] = ("node_id", "child_id", "token")

_EMPTY: Mapping[str, object] = types.MappingProxyType({})
_context: contextvars.ContextVar[Mapping[str, object]] = contextvars.ContextVar(
    "processhub_log_context", default=_EMPTY
)
#: LogRecord attributes that are not event fields.
_STANDARD = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "taskName"}
#: Characters ``str.splitlines`` breaks at that ``json.dumps(ensure_ascii=False)`` keeps.
_LINE_BREAKS = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}


def fields(
    *,
    node_id: str | None = None,
    child_id: str | None = None,
    token: int | None = None,
    **more: object,
) -> dict[str, object]:
    """``extra=`` for a line about a node and/or a child; None values are left out."""
    out: dict[str, object] = {}
    if node_id is not None:
        out["node_id"] = node_id
    if child_id is not None:
        out["child_id"] = child_id
    if token is not None:
        out["token"] = token
    out.update((key, value) for key, value in more.items() if value is not None)
    return out


@contextlib.contextmanager
def bind(**values: object) -> Iterator[None]:
    """Add fields to the current task's log context until the block ends.

    Tasks created inside the block inherit them (asyncio copies the context).
    """
    reset = _context.set(types.MappingProxyType({**_context.get(), **values}))
    try:
        yield
    finally:
        _context.reset(reset)


def bind_task(**values: object) -> None:
    """Add fields to the current task's log context for the rest of the task.

    For code that runs in a task of its own (a child's supervising task): the context of a
    task is its own copy, so the fields end with it.
    """
    _context.set(types.MappingProxyType({**_context.get(), **values}))


class ContextFilter(logging.Filter):
    """Adds the log context's fields to a record, unless the record has them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _context.get().items():
            if key not in record.__dict__:
                record.__dict__[key] = value
        return True


_filter = ContextFilter()


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with :class:`ContextFilter` attached (once)."""
    logger = logging.getLogger(name)
    if _filter not in logger.filters:
        logger.addFilter(_filter)
    return logger


def _event_fields(record: logging.LogRecord) -> dict[str, object]:
    """A record's fields beyond the standard ones: the context fields first."""
    extra = {k: v for k, v in vars(record).items() if k not in _STANDARD and k[:1] != "_"}
    ordered = {key: extra.pop(key) for key in CONTEXT_FIELDS if key in extra}
    ordered.update(extra)
    return ordered


def _timestamp(record: logging.LogRecord) -> str:
    moment = datetime.datetime.fromtimestamp(record.created, datetime.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _EventFormatter(logging.Formatter):
    """Collects one record into an ordered mapping of fields."""

    def event(self, record: logging.LogRecord) -> dict[str, object]:
        out: dict[str, object] = {
            "timestamp": _timestamp(record),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        out.update(_event_fields(record))
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            out["exception"] = record.exc_text
        if record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return out


def _plain(value: object) -> object:
    """JSON-ready: scalars as they are, anything else as its ``str``."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)


class JsonFormatter(_EventFormatter):
    """One JSON object per line (ASCII only, so no character can split the line)."""

    def format(self, record: logging.LogRecord) -> str:
        event = {key: _plain(value) for key, value in self.event(record).items()}
        return json.dumps(event, separators=(",", ":"))


def _text_value(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    text = str(value)
    if text and all(c.isprintable() and not c.isspace() and c not in '"=\\' for c in text):
        return text
    quoted = json.dumps(text, ensure_ascii=False)
    for char, escape in _LINE_BREAKS.items():
        quoted = quoted.replace(char, escape)
    return quoted


class TextFormatter(_EventFormatter):
    """``key=value`` pairs (logfmt) on one line; values with spaces or quotes are quoted."""

    def format(self, record: logging.LogRecord) -> str:
        return " ".join(f"{key}={_text_value(value)}" for key, value in self.event(record).items())


def make_handler(as_json: bool, stream: TextIO | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the formatter and the context filter."""
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if as_json else TextFormatter())
    handler.addFilter(_filter)
    return handler


def setup_logging(level: str, as_json: bool) -> None:
    """Log everything at ``level`` and above to stderr, one event per line.

    Replaces the root logger's handlers.

    Raises:
        ValueError: ``level`` is not a logging level name.
    """
    root = logging.getLogger()
    root.setLevel(level.upper())
    root.handlers[:] = [make_handler(as_json)]
