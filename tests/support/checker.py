"""The at-most-one checker: reads every recorded activation and finds overlaps.

An *interval* is one activation of a child (passive replicas do not count): from its
``start`` record to its ``stop`` record (same pid and fencing token), or to the moment its
process was killed (``kill -9`` leaves no stop record; the harness tells us when it killed
which pid), or open-ended when the instance is still running.

Violations reported:
* two intervals of one child that overlap in time (two active instances at once);
* a later activation carrying a fencing token that is not larger than an earlier one;
* (``expect_running``) a child with no open interval on a live process, or with several.
"""

from __future__ import annotations

import itertools
import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Interval:
    child: str
    node: str
    pid: int
    token: int
    start: float
    end: float | None  # None: still running


def load_intervals(record_dir: Path, killed_at: dict[int, float]) -> dict[str, list[Interval]]:
    """Every activation per child, sorted by start time."""
    open_: dict[tuple[str, int, int], Interval] = {}
    out: dict[str, list[Interval]] = defaultdict(list)
    events = []
    for path in sorted(record_dir.glob("*.log")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    events.sort(key=lambda e: e["t"])
    for ev in events:
        if ev.get("role") == "passive":
            continue  # standby replicas are not active instances
        key = (ev["child"], ev["pid"], ev["token"])
        if ev["ev"] == "start":
            interval = Interval(ev["child"], ev["node"], ev["pid"], ev["token"], ev["t"], None)
            open_[key] = interval
            out[ev["child"]].append(interval)
        elif ev["ev"] == "stop" and key in open_:
            open_.pop(key).end = ev["t"]
    for interval in open_.values():
        if interval.pid in killed_at:
            interval.end = killed_at[interval.pid]
    for intervals in out.values():
        intervals.sort(key=lambda i: i.start)
    return out


def violations(
    intervals: dict[str, list[Interval]],
    *,
    expect_running: set[str] | None = None,
    live_pids: set[int] | None = None,
) -> list[str]:
    """Human-readable descriptions of every violation; empty when all is well."""
    problems: list[str] = []
    for child, items in intervals.items():
        for earlier, later in itertools.pairwise(items):
            if earlier.end is None or later.start < earlier.end:
                problems.append(
                    f"{child}: overlap: {earlier.node}/token {earlier.token} "
                    f"[{earlier.start:.3f}, {earlier.end}] and {later.node}/token "
                    f"{later.token} from {later.start:.3f}"
                )
            # A restart on the same node keeps its token; a new owner must bring a larger one.
            same_owner = later.token == earlier.token and later.pid == earlier.pid
            if later.token < earlier.token or (later.token == earlier.token and not same_owner):
                problems.append(f"{child}: token did not grow ({earlier.token} -> {later.token})")
    if expect_running is not None:
        for child in sorted(expect_running):
            running = [
                i
                for i in intervals.get(child, [])
                if i.end is None and (live_pids is None or i.pid in live_pids)
            ]
            if len(running) != 1:
                problems.append(f"{child}: {len(running)} running instances, expected 1")
        for child, items in intervals.items():
            if child not in expect_running and any(i.end is None for i in items):
                problems.append(f"{child}: still running but was stopped")
    return problems


@dataclass
class Instance:
    """One activation of a Stateful worker and what it did with its state."""

    child: str
    pid: int
    token: int
    start: float
    state: int
    source: str | None
    stop_count: int | None = None
    last_ckpt: int = 0


def state_violations(record_dir: Path) -> list[str]:
    """State continuity of ``support.recorder:Stateful`` children.

    Each new owner must start from at least the last checkpoint any earlier instance wrote,
    and an instance that received handed-over state must start exactly where its
    predecessor stopped.
    """
    events = []
    for path in sorted(record_dir.glob("*.log")):
        for line in path.read_text().splitlines():
            if line.strip():
                events.append(json.loads(line))
    events.sort(key=lambda e: e["t"])
    instances: dict[tuple[str, int, int], Instance] = {}
    by_child: dict[str, list[Instance]] = defaultdict(list)
    for ev in events:
        key = (ev["child"], ev["pid"], ev["token"])
        if ev["ev"] == "start" and "state" in ev:
            inst = Instance(ev["child"], ev["pid"], ev["token"], ev["t"], ev["state"], ev["source"])
            instances[key] = inst
            by_child[ev["child"]].append(inst)
        elif key in instances:
            if ev["ev"] == "ckpt":
                instances[key].last_ckpt = max(instances[key].last_ckpt, ev["value"])
            elif ev["ev"] == "stop" and "count" in ev:
                instances[key].stop_count = ev["count"]
    problems = []
    for child, items in by_child.items():
        best_ckpt = 0
        for earlier, later in itertools.pairwise(items):
            best_ckpt = max(best_ckpt, earlier.last_ckpt)
            if later.state < best_ckpt:
                problems.append(f"{child}: started at {later.state} below checkpoint {best_ckpt}")
            if (
                later.source == "handover"
                and earlier.stop_count is not None
                and later.state != earlier.stop_count
            ):
                problems.append(
                    f"{child}: handed over {later.state}, predecessor stopped at "
                    f"{earlier.stop_count}"
                )
    return problems
