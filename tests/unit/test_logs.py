"""hub.logs: one event per line, as ``key=value`` text or JSON, with node/child/token fields
from ``extra=`` or from the task's log context."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from hub.logs import (
    ContextFilter,
    bind,
    bind_task,
    fields,
    get_logger,
    make_handler,
    setup_logging,
)

_TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


class Capture:
    """A logger of its own writing through :func:`make_handler` into a buffer."""

    def __init__(self, as_json: bool) -> None:
        self.buffer = io.StringIO()
        self.logger = get_logger(f"hub.test_logs.{'json' if as_json else 'text'}")
        self.logger.propagate = False
        self.logger.setLevel(logging.DEBUG)
        self.handler = make_handler(as_json, self.buffer)
        self.logger.addHandler(self.handler)

    def lines(self) -> list[str]:
        text = self.buffer.getvalue()
        assert text.endswith("\n")
        return text[:-1].split("\n")

    def close(self) -> None:
        self.logger.removeHandler(self.handler)


@pytest.fixture
def text() -> Iterator[Capture]:
    capture = Capture(as_json=False)
    yield capture
    capture.close()


@pytest.fixture
def as_json() -> Iterator[Capture]:
    capture = Capture(as_json=True)
    yield capture
    capture.close()


def parse_text(line: str) -> dict[str, str]:
    """Split one logfmt line: bare values, or JSON-quoted strings."""
    out: dict[str, str] = {}
    decoder = json.JSONDecoder()
    position = 0
    while position < len(line):
        key_end = line.index("=", position)
        key = line[position:key_end]
        position = key_end + 1
        if line[position] == '"':
            value, position = decoder.raw_decode(line, position)
        else:
            end = line.find(" ", position)
            end = len(line) if end < 0 else end
            value, position = line[position:end], end
        out[key] = value
        position += 1  # the separating space
    return out


def test_fields_leaves_out_none() -> None:
    assert fields(node_id="n1", child_id=None, token=7, peer=None, kind="x") == {
        "node_id": "n1",
        "token": 7,
        "kind": "x",
    }


def test_text_line_has_the_standard_fields_then_the_context_fields(text: Capture) -> None:
    text.logger.info(
        "child %r started",
        "room 1",
        extra={"restarts": 2, **fields(token=42, child_id="room 1", node_id="n1")},
    )
    (line,) = text.lines()
    keys = [part.split("=", 1)[0] for part in line.split(" ") if "=" in part]
    assert keys[:4] == ["timestamp", "level", "logger", "message"]
    event = parse_text(line)
    assert list(event)[4:] == ["node_id", "child_id", "token", "restarts"]
    assert _TIMESTAMP.match(event["timestamp"])
    assert event["level"] == "info"
    assert event["logger"] == "hub.test_logs.text"
    assert event["message"] == "child 'room 1' started"
    assert event["child_id"] == "room 1"  # quoted: it has a space
    assert line.endswith('node_id=n1 child_id="room 1" token=42 restarts=2')


def test_text_never_splits_an_event(text: Capture) -> None:
    nasty = 'line one\nline two\r\u2028three\x85 "quoted" a=b \\'
    text.logger.warning(nasty, extra={"detail": nasty, "empty": "", "none": None})
    (line,) = text.lines()
    assert len(line.splitlines()) == 1
    event = parse_text(line)
    assert event["message"] == nasty and event["detail"] == nasty
    assert event["empty"] == "" and event["none"] == "null"


def test_text_exception_stays_on_the_line(text: Capture) -> None:
    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        text.logger.exception("it failed", extra=fields(child_id="c1"))
    (line,) = text.lines()
    event = parse_text(line)
    assert event["level"] == "error"
    assert event["exception"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom\nsecond line" in event["exception"]
    assert len(line.splitlines()) == 1


def test_json_one_object_per_line_with_the_exception_in_a_field(as_json: Capture) -> None:
    as_json.logger.info("first", extra=fields(node_id="n1", child_id="c\n1", token=3))
    try:
        {}["missing"]
    except KeyError:
        as_json.logger.error("second \u2028", exc_info=True, extra={"obj": object()})
    first, second = (json.loads(line) for line in as_json.lines())
    assert list(first) == [
        "timestamp",
        "level",
        "logger",
        "message",
        "node_id",
        "child_id",
        "token",
    ]
    assert first["child_id"] == "c\n1" and first["token"] == 3 and first["level"] == "info"
    assert _TIMESTAMP.match(first["timestamp"])
    assert second["message"] == "second \u2028"
    assert "KeyError: 'missing'" in second["exception"]
    assert second["exception"].startswith("Traceback")
    assert second["obj"].startswith("<object object")  # not JSON: its str()
    for line in as_json.lines():
        assert line.isascii() and len(line.splitlines()) == 1


def test_context_fields_come_from_bind_and_explicit_ones_win(as_json: Capture) -> None:
    with bind(node_id="n1", child_id="c1"):
        as_json.logger.info("bound")
        as_json.logger.info("explicit", extra=fields(child_id="c2"))
    as_json.logger.info("unbound")
    bound, explicit, unbound = (json.loads(line) for line in as_json.lines())
    assert (bound["node_id"], bound["child_id"]) == ("n1", "c1")
    assert (explicit["node_id"], explicit["child_id"]) == ("n1", "c2")
    assert "node_id" not in unbound and "child_id" not in unbound


async def test_each_task_keeps_its_own_context(as_json: Capture) -> None:
    """Two hubs in one process: tasks started under each bind log their own node."""
    go = asyncio.Event()

    async def worker(child_id: str) -> None:
        bind_task(child_id=child_id)
        await go.wait()
        as_json.logger.info("working")

    async with asyncio.TaskGroup() as tg:
        with bind(node_id="a"):
            tg.create_task(worker("x"))
        with bind(node_id="b"):
            tg.create_task(worker("y"))
        await asyncio.sleep(0)  # both are waiting now
        go.set()
    as_json.logger.info("parent")
    events = [json.loads(line) for line in as_json.lines()]
    assert [(e.get("node_id"), e.get("child_id")) for e in events[2:]] == [(None, None)]
    assert {(e.get("node_id"), e.get("child_id")) for e in events[:2]} == {("a", "x"), ("b", "y")}


def test_context_reaches_any_handler_through_the_logger_filter() -> None:
    """get_logger's filter adds the context even for a handler without ours (caplog)."""
    logger = get_logger("hub.test_logs.plain")
    assert get_logger("hub.test_logs.plain") is logger
    assert sum(isinstance(f, ContextFilter) for f in logger.filters) == 1
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep()
    logger.addHandler(handler)
    logger.propagate = False
    try:
        with bind(node_id="n9"):
            logger.warning("hello")
    finally:
        logger.removeHandler(handler)
    assert [getattr(r, "node_id", None) for r in seen] == ["n9"]


def test_setup_logging_replaces_root_handlers() -> None:
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    try:
        setup_logging("debug", True)
        assert root.level == logging.DEBUG
        (handler,) = root.handlers
        assert isinstance(handler.formatter, logging.Formatter)
        assert type(handler.formatter).__name__ == "JsonFormatter"
        setup_logging("WARNING", False)
        assert root.level == logging.WARNING
        assert type(root.handlers[0].formatter).__name__ == "TextFormatter"
        with pytest.raises(ValueError):
            setup_logging("chatty", False)
    finally:
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)


def test_config_reprs_hide_the_etcd_password_and_the_rpc_token() -> None:
    from hub.etcd.store import EtcdConfig
    from hub.messaging.rpc import RpcConfig

    assert "s3cret-pw" not in repr(EtcdConfig(username="u", password="s3cret-pw"))
    assert "s3cret-token" not in repr(RpcConfig(token="s3cret-token"))
