"""processhub hot-swap benchmark: children with 1 KiB of state move with ``HotSwap()``.

    python bench/hotswap.py                      # the full run (see docs/benchmarks.md)
    python bench/hotswap.py --children 2000      # a quick run
    python bench/hotswap.py --profile join       # cProfile node-1 (hands over) in the join
    python bench/hotswap.py --profile drain:node-3
    python bench/hotswap.py --profile join:node-4    # the joining node, from its start
    python bench/hotswap.py --migration cold     # baseline: the same moves, ColdSwap()

One etcd and three node processes on loopback, every node with ``Hub(...,
migration=HotSwap())``. Every child runs ``bench.workers:Stateful``: it holds 1 KiB of random
bytes (made at its first start) and hands them over as bytes (``handover_state``); the next
instance starts with them as ``ctx.state``. Scenarios, in order:

1. start N children (HubClient from the driver) until every node shows all running;
2. **join**: node-4 joins (3 -> 4 nodes): the children the ring now gives node-4 hot-swap
   there; time until every node shows every child running where the ring places it;
3. **restore**: node-4 drains and leaves again (SIGTERM; 4 -> 3 nodes, its children swap
   back), so that the next drain takes 1 of 3 nodes, as in the core benchmark;
4. **drain**: SIGTERM to node-3 (~1/3 of the children): time until every survivor shows
   every child running on the survivors.

Gaps: every instance records (in its node process, ``bench.workers.JOURNAL``) the
``time.monotonic()`` when its ``run`` began and when ``run`` saw its cancellation; on Linux
that is one clock (CLOCK_MONOTONIC) for all processes. After each phase the driver fetches
every node's records (``journal``; a node that left printed its records as it exited), and
for every child whose new instance began in the phase computes the gap = new ``run`` began
- old ``run`` cancelled, i.e. how long the child had no active instance. Integrity, checked
for every move: the new instance got its state by handover and it is byte-for-byte the state
its predecessor held (length + blake2b digest), and it began no earlier than its predecessor
was cancelled (no two active instances). At the end the whole history is checked again
(exactly one active instance per child; every child still holds its first instance's bytes).
An integrity failure is printed loudly and the exit code is 1.

Prints a table and writes ``bench/results/hotswap.json``. Every process it starts (etcd,
nodes) is stopped by PID at the end, also on failure or Ctrl-C.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import itertools
import json
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.cluster import REPO, NodeError, NodeProc, kill_all_started
from bench.run_all import HUB, PREFIX, Bench, _file_sizes, git_info, machine_info, say, table
from bench.workers import STATE_BYTES, STATEFUL
from hub.client import HubClient
from hub.model import ChildSpec
from hub.operate.localetcd import LocalEtcd

PHASES = ("start", "join", "restore", "drain")

# -- the journal: instances, moves, gaps ------------------------------------------------------

#: Fields of a journal row (see bench.workers.journal_rows).
ROW = ("child", "node", "token", "started", "source", "received", "held", "stopped", "handed")


def instances_by_child(rows: Iterable[list[Any]]) -> dict[str, list[dict[str, Any]]]:
    """Journal rows of all nodes -> ``{child: [instance, ...]}`` in start order."""
    out: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        inst = dict(zip(ROW, row, strict=True))
        out.setdefault(inst["child"], []).append(inst)
    for insts in out.values():
        insts.sort(key=lambda i: i["started"])
    return out


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    return values[max(0, math.ceil(pct / 100 * len(values)) - 1)]


def distribution(values: list[float]) -> dict[str, Any]:
    """Percentiles of ``values`` (seconds)."""
    values = sorted(values)
    out: dict[str, Any] = {"n": len(values)}
    for pct in (1, 10, 25, 50, 75, 90, 99):
        out[f"p{pct}"] = percentile(values, pct)
    out["max"] = values[-1] if values else None
    out["mean"] = sum(values) / len(values) if values else None
    return out


def analyse_moves(
    by_child: dict[str, list[dict[str, Any]]], t0: float, hot: bool = True
) -> dict[str, Any]:
    """Every instance that began at or after ``t0``: moves, gaps and integrity.

    An instance that began on another node or with another token than the one before it
    completes a *move*. Its donor is the latest earlier instance that handed its state over
    (normally the one just before it; without ``hot``, the one before it). The move's gap
    is ``new.started - donor.stopped``. Problems:

    * ``overlap``: an instance began before the one before it was cancelled (or that one
      never was): two active instances of one child;
    * ``restarted_in_place``: an instance began on a node and with a fencing token an earlier
      instance already had, i.e. it was restarted where it had been stopped (not a move);
    * ``moved_without_state`` (``hot``): a move whose new instance got no handed-over state;
    * ``state_mismatch`` (``hot``): the received state differs from the donor's.
    """
    gaps: list[float] = []
    to_handover: list[float] = []  # donor cancelled -> its handover_state() called
    handover_to_start: list[float] = []  # handover_state() called -> new run began
    moved: set[str] = set()
    moves: list[dict[str, Any]] = []
    problems: dict[str, list[dict[str, Any]]] = {
        "overlap": [],
        "restarted_in_place": [],
        "moved_without_state": [],
        "state_mismatch": [],
    }
    for child, insts in by_child.items():
        donor: dict[str, Any] | None = None
        for k, new in enumerate(insts):
            if new["started"] < t0 or k == 0:
                if new["handed"] is not None:
                    donor = new
                continue
            prev = insts[k - 1]
            brief = {
                "child": child,
                "prev": f"{prev['node']}#{prev['token']}",
                "new": f"{new['node']}#{new['token']}",
                "prev_stopped": prev["stopped"],
                "new_started": new["started"],
                "new_source": new["source"],
            }
            if prev["stopped"] is None or new["started"] < prev["stopped"]:
                problems["overlap"].append(brief)
            if any(i["node"] == new["node"] and i["token"] == new["token"] for i in insts[:k]):
                problems["restarted_in_place"].append(brief)
                continue
            handed_over = new["source"] == "handover" and new["received"] is not None
            src = donor if hot and handed_over and donor is not None else prev
            moved.add(child)
            move = {
                "child": child,
                "from": src["node"],
                "to": new["node"],
                "old_stopped": src["stopped"],
                "new_started": new["started"],
                "gap": None,
                "via_other": src is not prev,  # another instance ran in between
            }
            moves.append(move)
            if src["stopped"] is not None:
                move["gap"] = new["started"] - src["stopped"]
                gaps.append(move["gap"])
                if src["handed"] is not None:
                    to_handover.append(src["handed"] - src["stopped"])
                    handover_to_start.append(new["started"] - src["handed"])
            if hot and not handed_over:
                problems["moved_without_state"].append(brief)
            elif hot and new["received"] != src["held"]:
                problems["state_mismatch"].append(
                    {**brief, "received": new["received"], "held": src["held"]}
                )
            if new["handed"] is not None:
                donor = new
    done = [m for m in moves if m["gap"] is not None]
    slowest = sorted(done, key=lambda m: m["gap"], reverse=True)[:5]
    stops = [m["old_stopped"] for m in done]
    starts = [m["new_started"] for m in moves]
    per_route: dict[str, int] = {}
    for m in moves:
        route = f"{m['from']}->{m['to']}"
        per_route[route] = per_route.get(route, 0) + 1
    return {
        "moved_children": len(moved),
        "moves": len(moves),
        "moves_across_another_instance": sum(1 for m in moves if m["via_other"]),
        "per_route": dict(sorted(per_route.items())),
        "gap_s": distribution(gaps),
        "cancel_to_handover_state_s": distribution(to_handover),
        "handover_state_to_new_start_s": distribution(handover_to_start),
        "first_old_cancelled_s": min(stops) - t0 if stops else None,
        "last_old_cancelled_s": max(stops) - t0 if stops else None,
        "first_new_started_s": min(starts) - t0 if starts else None,
        "last_new_started_s": max(starts) - t0 if starts else None,
        "slowest": [
            {
                **{k: v for k, v in m.items() if k in ("child", "from", "to", "gap")},
                "old_cancelled_s": m["old_stopped"] - t0,
                "new_started_s": m["new_started"] - t0,
            }
            for m in slowest
        ],
        "problems": {k: len(v) for k, v in problems.items()},
        "problem_samples": {k: v[:5] for k, v in problems.items() if v},
    }


def check_history(
    by_child: dict[str, list[dict[str, Any]]], n: int, hot: bool = True
) -> dict[str, Any]:
    """The whole run: one active instance per child now, never two at once, no restart in
    place; with ``hot``, every later instance got the child's original bytes by handover."""
    bad: dict[str, list[str]] = {
        "missing_children": [],
        "active_not_one": [],
        "overlap_any_time": [],
        "restarted_in_place": [],
        "first_start_not_fresh": [],
    }
    if hot:
        bad["not_started_from_handover"] = []
        bad["handover_not_original_state"] = []
    for i in range(n):
        if f"child-{i}" not in by_child:
            bad["missing_children"].append(f"child-{i}")
    instances = 0
    for child, insts in by_child.items():
        instances += len(insts)
        first = insts[0]
        pairs = list(itertools.pairwise(insts))
        if sum(1 for i in insts if i["stopped"] is None) != 1:
            bad["active_not_one"].append(child)
        if any(a["stopped"] is None or b["started"] < a["stopped"] for a, b in pairs):
            bad["overlap_any_time"].append(child)
        if len({(i["node"], i["token"]) for i in insts}) < len(insts):
            bad["restarted_in_place"].append(child)
        if first["received"] is not None or not str(first["held"]).startswith(f"{STATE_BYTES}:"):
            bad["first_start_not_fresh"].append(child)
        if not hot:
            continue
        if any(i["source"] != "handover" for i in insts[1:]):
            bad["not_started_from_handover"].append(child)
        if any(i["received"] != first["held"] for i in insts[1:] if i["source"] == "handover"):
            bad["handover_not_original_state"].append(child)
    suspects = list(dict.fromkeys(c for ids in bad.values() for c in ids[:3]))[:8]
    return {
        "children": len(by_child),
        "instances": instances,
        "violations": {k: len(v) for k, v in bad.items()},
        "samples": {k: v[:10] for k, v in bad.items() if v},
        # every instance of a few offending children, in start order (the evidence)
        "histories": {c: by_child.get(c, []) for c in suspects},
    }


# -- the run ----------------------------------------------------------------------------------


class HotSwapBench(Bench):
    """The core benchmark's driver (bench/run_all.py), with hot-swap nodes and journals."""

    def __init__(self, args: argparse.Namespace, etcd: LocalEtcd, log_dir: Path) -> None:
        super().__init__(args, etcd, log_dir)
        #: journal rows printed by nodes as they left
        self.departed: dict[str, list[list[Any]]] = {}
        self.phase_alias: dict[str, str] = {}
        self.analyses: dict[str, dict[str, Any]] = {}
        #: the last journal fetched (every instance of the run, at the end)
        self.instances: dict[str, list[dict[str, Any]]] = {}
        self.hot = args.migration == "hot"

    def _profile_from_start(self, node_id: str) -> Path | None:
        """``--profile join:node-4``: node-4 profiles itself from its process start."""
        if self.args.profile != f"join:{node_id}" or node_id in self.nodes:
            return None
        self.args.results_dir.mkdir(parents=True, exist_ok=True)
        path = self.args.results_dir / f"profile-{node_id}-join.prof"
        self.results.setdefault("profile", {})["join"] = {"node": node_id, "path": str(path)}
        return path

    async def spawn(self, node_id: str) -> NodeProc:
        node = NodeProc(
            node_id,
            self.etcd.endpoint,
            ttl=self.args.ttl,
            log_dir=self.log_dir,
            hub=HUB,
            prefix=PREFIX,
            log_level=self.args.node_log_level,
            migration="hot" if self.hot else None,
            profile_from_start=self._profile_from_start(node_id),
        )
        self.nodes[node_id] = node
        await node.start(timeout=60)
        return node

    # Bench.leave profiles phase "drain"; the restore (node-4 leaving) is its own phase.
    async def profiled(self, phase: str) -> NodeProc | None:
        return await super().profiled(self.phase_alias.get(phase, phase))

    async def profile_done(self, phase: str, node: NodeProc | None) -> None:
        await super().profile_done(self.phase_alias.get(phase, phase), node)

    async def journal(self) -> dict[str, list[dict[str, Any]]]:
        """Every instance so far: live nodes' journals plus those of nodes that left."""
        live = self.live()
        replies = await asyncio.gather(*(n.request("journal", timeout=60) for n in live))
        rows = [row for reply in replies for row in reply["rows"]]
        for departed in self.departed.values():
            rows.extend(departed)
        self.instances = instances_by_child(rows)
        return self.instances

    async def analyse(self, phase: str, t0: float) -> dict[str, Any]:
        analysis = analyse_moves(await self.journal(), t0, self.hot)
        self.analyses[phase] = analysis
        g = analysis["gap_s"]
        if g["n"]:
            say(
                f"  moves {analysis['moves']} ({analysis['moved_children']} children); gap "
                f"p50 {g['p50'] * 1e3:.1f} ms, p99 {g['p99'] * 1e3:.1f} ms, "
                f"max {g['max'] * 1e3:.1f} ms; moved children started "
                f"{analysis['first_new_started_s']:.3f}-{analysis['last_new_started_s']:.3f}s "
                "after the trigger"
            )
        bad = {k: v for k, v in analysis["problems"].items() if v}
        if bad:
            say(f"  !! INTEGRITY: {bad}")
        return analysis

    async def start_children(self) -> None:
        n = self.n
        nodes = self.live()
        specs = [ChildSpec(id=f"child-{i}", start=STATEFUL) for i in range(n)]
        client = HubClient(HUB, endpoints=[self.etcd.endpoint], prefix=PREFIX)
        await client.start()
        futures = await self.arm_all(nodes, count=n)
        profiling = await self.profiled("start")
        say(f"start: {n} stateful children ({STATE_BYTES} B of state each) via HubClient ...")
        cpu0 = self.cpu_snapshot()
        t0 = time.monotonic()
        try:
            result = await client.start_children(specs)
            t_written = time.monotonic()
        finally:
            await client.stop()
        if result.errors:
            raise RuntimeError(f"start_children errors: {result.errors[:5]}")
        times = await self.gather_times(nodes, futures)
        seconds = max(times.values()) - t0
        cpu = self.cpu_used(cpu0, time.monotonic() - t0)
        await self.profile_done("start", profiling)
        self.results["start"] = {
            "seconds": seconds,
            "specs_written_s": t_written - t0,
            "per_node_s": {k: v - t0 for k, v in times.items()},
            "timeline": self.timeline(t0),
            "cpu": cpu,
        }
        say(f"  all {n} running on every node after {seconds:.3f}s")
        say(self.cpu_line(cpu))

    async def hot_join(self) -> None:
        t0 = time.monotonic()
        await self.join("node-4", "join")
        if self.args.profile == "join:node-4":
            text = (await self.nodes["node-4"].request("profile_stop"))["text"]
            say(f"\n--- cProfile of node-4 from its start through the join ---\n{text}")
        await self.analyse("join", t0)

    async def hot_drain(self, node_id: str, key: str) -> None:
        """SIGTERM ``node_id`` (Bench.leave), then collect its journal and the gaps."""
        victim = self.nodes[node_id]
        t0 = time.monotonic()
        if key != "drain":
            self.phase_alias = {"drain": key}
        try:
            await self.leave(node_id, "graceful")
        finally:
            self.phase_alias = {}
        self.results[key] = self.results.pop("graceful_stop")
        try:
            event = await victim.wait_event("journal", timeout=10)
            self.departed[node_id] = event["rows"]
        except NodeError as exc:  # its instances then look "never stopped": loud, below
            say(f"  !! no journal from {node_id}: {exc}")
            self.results[key]["journal_error"] = str(exc)
        analysis = await self.analyse(key, t0)
        stopped = [
            r[ROW.index("stopped")]
            for r in self.departed.get(node_id, [])
            if r[ROW.index("stopped")] is not None
        ]
        if stopped:  # the victim was empty when its last instance was cancelled
            analysis["victim_last_cancelled_s"] = max(stopped) - t0

    async def run(self) -> None:
        await self.boot()
        await self.start_children()
        await self.settle()
        await self.hot_join()
        await self.settle()
        await self.hot_drain("node-4", "restore")
        await self.settle()
        await self.hot_drain("node-3", "drain")
        await self.settle()
        history = check_history(await self.journal(), self.n, self.hot)
        self.results["history"] = history
        self.results["stats_final"] = {n.node_id: await n.request("stats") for n in self.live()}


# -- report -----------------------------------------------------------------------------------


def figures(
    r: dict[str, Any], analyses: dict[str, dict[str, Any]], n: int, hot: bool = True
) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []

    def add(
        name: str,
        label: str,
        value: Any,
        unit: str,
        target: Any = None,
        ok: Any = None,
        note: str = "",
    ) -> None:
        row = {"name": name, "label": label, "value": value, "unit": unit}
        out.append({**row, "target": target, "pass": ok, "note": note})

    def ms(seconds: float | None) -> float | None:
        return None if seconds is None else seconds * 1e3

    def moves_rows(key: str, what: str) -> None:
        a = analyses[key]
        g = a["gap_s"]
        h, s = a["cancel_to_handover_state_s"], a["handover_state_to_new_start_s"]
        add(
            f"{key}_gap_p50_ms",
            f"{what}: gap without an active instance, p50",
            ms(g["p50"]),
            "ms",
            note=f"{g['n']} moves; gap = new run() began - old run() cancelled",
        )
        add(f"{key}_gap_p99_ms", f"{what}: gap p99", ms(g["p99"]), "ms")
        slow = a["slowest"][0] if a["slowest"] else None
        add(
            f"{key}_gap_max_ms",
            f"{what}: gap max (longest of any moved child)",
            ms(g["max"]),
            "ms",
            note=(
                f"{slow['child']} {slow['from']}->{slow['to']}; p50 split: cancel->"
                f"handover_state {ms(h['p50']):.1f} ms + ->new run {ms(s['p50']):.1f} ms"
                if slow and h["n"]
                else ""
            ),
        )
        p = a["problems"]
        bad_state = p["moved_without_state"] + p["state_mismatch"]
        add(
            f"{key}_state_not_intact",
            f"{what} integrity: state not exactly the predecessor's",
            bad_state,
            "",
            "0" if hot else None,
            (bad_state == 0 and a["moves"] > 0) if hot else None,
            f"{a['moves'] - bad_state} of {a['moves']} moves delivered the donor's "
            f"{STATE_BYTES} B (length + blake2b); without state {p['moved_without_state']}, "
            f"different {p['state_mismatch']}"
            if hot
            else "cold swap: no handover, every move starts without state",
        )
        add(
            f"{key}_restarted_in_place",
            f"{what} integrity: restarted where it had just stopped",
            p["restarted_in_place"],
            "",
            "0",
            p["restarted_in_place"] == 0,
            "instances that began on a node and with a token an earlier instance had",
        )
        add(
            f"{key}_overlaps",
            f"{what} integrity: two active instances of one child",
            p["overlap"],
            "",
            "0",
            p["overlap"] == 0,
            "an instance began before the one before it was cancelled",
        )

    s = r["start"]
    add(
        "start_s",
        f"start {n} stateful children ({STATE_BYTES} B each), 3 nodes",
        s["seconds"],
        "s",
        note=f"specs written after {s['specs_written_s']:.3f}s; not a hot-swap figure",
    )
    j, ja = r["join"], analyses["join"]
    add(
        "join_converge_s",
        "join: time to converge (all running where the ring says)",
        j["converge_s"],
        "s",
        note=f"from node-4 registered; {j['from_spawn_s']:.2f}s from process spawn",
    )
    add(
        "join_moved",
        "join: children moved (3 -> 4 nodes)",
        j["moved"],
        "",
        note=f"fraction {j['moved_fraction']:.4f} (ring: {j['ring_moved_fraction']:.4f}); "
        f"journal: {ja['moves']} moves of {ja['moved_children']} children",
    )
    moves_rows("join", "join")
    for key, what in (("restore", "restore 4->3"), ("drain", "drain 1 of 3")):
        d, da = r[key], analyses[key]
        last = da.get("victim_last_cancelled_s")
        # empty (its last instance was cancelled) and every child running on the others
        d["empty_and_elsewhere_s"] = max(d["seconds"], last or 0.0)
        add(
            f"{key}_s",
            f"{what}: SIGTERM until empty, all running elsewhere ({d['children_moved']})",
            d["empty_and_elsewhere_s"],
            "s",
            note=(
                f"every survivor shows all running elsewhere after {d['seconds']:.3f}s; "
                f"victim's last instance cancelled after "
                f"{last if last is not None else float('nan'):.3f}s; process exited after "
                f"{d.get('victim_stop_s', float('nan')):.3f}s"
            ),
        )
        moves_rows(key, what)
    hist = r["history"]
    v = hist["violations"]
    total = sum(v.values())
    add(
        "history_violations",
        "integrity, whole run: children breaking an invariant",
        total,
        "",
        "0",
        total == 0,
        f"{hist['children']} children, {hist['instances']} instances; "
        + ", ".join(f"{k} {x}" for k, x in v.items()),
    )
    final = r.get("stats_final", {})
    dropped = sum(st.get("informer_dropped", 0) for st in final.values())
    add(
        "informer_dropped_events",
        "integrity: watch events dropped by informers (live nodes)",
        dropped,
        "",
        "0",
        dropped == 0,
    )
    return out


def code_state() -> dict[str, Any]:
    """Which uncommitted library code ran: others may be editing hub/ and strategies/."""
    try:
        diff = subprocess.run(
            ["git", "diff", "HEAD", "--", "hub", "strategies"],
            cwd=REPO,
            capture_output=True,
            timeout=10,
        ).stdout
        untracked = subprocess.run(
            ["git", "ls-files", "--others", "--exclude-standard", "hub", "strategies"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return {}
    return {
        "library_diff_sha1": hashlib.sha1(diff).hexdigest() if diff else None,
        "library_diff_files": sorted(
            {line[6:].decode() for line in diff.splitlines() if line.startswith(b"+++ b/")}
        ),
        "library_untracked": untracked,
    }


# -- main -------------------------------------------------------------------------------------


async def amain(args: argparse.Namespace, command: str) -> int:
    log_dir = Path(tempfile.mkdtemp(prefix="processhub-hotswap-"))
    ok = False
    bench: HotSwapBench | None = None
    etcd = LocalEtcd(name="processhub-hotswap")
    out = args.out or args.results_dir / (
        "hotswap.json" if args.migration == "hot" else "hotswap-cold.json"
    )
    try:
        etcd.start()
        machine = machine_info(etcd.binary)
        say(
            f"etcd {machine['etcd_version']} at {etcd.endpoint} (pid {etcd.pid}); "
            f"{machine['nproc']} CPUs ({machine['cpu_model']}); Python {machine['python']}; "
            f"load average {' '.join(f'{x:.2f}' for x in machine['loadavg_at_start'])}"
        )
        say(f"logs: {log_dir}")
        bench = HotSwapBench(args, etcd, log_dir)
        started = time.monotonic()
        await bench.run()
        rows = figures(bench.results, bench.analyses, args.children, bench.hot)
        say("\n" + table(rows))
        integrity_ok = all(row["pass"] for row in rows if row["pass"] is not None)
        report = {
            "benchmark": "processhub hot-swap migration",
            "command": command,
            "preliminary": not (args.children == 10_000 and args.profile is None),
            "integrity_checked": "state, overlaps, restarts in place"
            if bench.hot
            else "overlaps, restarts in place (no state: cold swap)",
            "params": {
                "children": args.children,
                "state_bytes": STATE_BYTES,
                "nodes": 3,
                "migration": "HotSwap() (state_timeout 3.0 s, handover_ttl 60 s)"
                if args.migration == "hot"
                else "ColdSwap() (the default: no handover; a baseline)",
                "lease_ttl": args.ttl,
                "profile": args.profile,
            },
            "machine": {**machine, "loadavg_at_end": os.getloadavg()},
            "git": {**git_info(), **code_state()},
            "wall_seconds": time.monotonic() - started,
            "figures": {row["name"]: row for row in rows},
            "integrity_ok": integrity_ok,
            "moves": bench.analyses,
            "details": bench.results,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        say(f"\nwrote {out} ({report['wall_seconds']:.0f}s)")
        if not integrity_ok:
            failed = [row["label"] for row in rows if row["pass"] is False]
            say("\n!! INTEGRITY FAILURE: " + "; ".join(failed))
            for phase, a in bench.analyses.items():
                if a["problem_samples"]:
                    say(f"!! {phase}: {json.dumps(a['problem_samples'], indent=1)[:4000]}")
            if bench.results["history"]["samples"]:
                say(f"!! history: {json.dumps(bench.results['history']['samples'])[:4000]}")
            evidence = out.with_suffix(".journal.json")
            evidence.write_text(json.dumps(bench.instances) + "\n")
            say(f"!! every instance of the run (the evidence): {evidence}")
            return 1
        ok = True
        return 0
    except Exception as exc:
        if bench is not None:  # keep what was measured, and why it stopped
            failed_path = out.with_suffix(".failed.json")
            failed_path.parent.mkdir(parents=True, exist_ok=True)
            record = {
                "command": command,
                "error": f"{type(exc).__name__}: {exc}",
                "log_dir": str(log_dir),
                "moves": bench.analyses,
                "details": bench.results,
            }
            failed_path.write_text(json.dumps(record, indent=2, default=str) + "\n")
            say(f"!! failed: {exc}; partial results in {failed_path}")
        raise
    finally:
        if bench is not None:
            for node in bench.nodes.values():
                await node.close()
        kill_all_started()
        etcd.close()
        quiet = all(size == 0 for size in _file_sizes(log_dir))
        if ok and quiet and not args.keep_logs:
            shutil.rmtree(log_dir, ignore_errors=True)
        else:
            say(f"node logs kept in {log_dir}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--children", type=int, default=10_000, help="children to start (10000)")
    p.add_argument("--ttl", type=int, default=3, help="lease TTL of the nodes, seconds (3)")
    p.add_argument(
        "--profile",
        metavar="PHASE[:NODE]",
        default=None,
        help=f"cProfile one node (default node-1) during one phase ({', '.join(PHASES)}), "
        "e.g. join (node-1 hands children over), join:node-4 (the joining node, from its "
        "process start) or drain:node-3 (distorts the timings; not for the record)",
    )
    p.add_argument(
        "--migration",
        choices=("hot", "cold"),
        default="hot",
        help="hot: HotSwap() (the benchmark); cold: the default ColdSwap(), the same moves "
        "without handover, as a baseline (writes results/hotswap-cold.json)",
    )
    p.add_argument("--out", type=Path, default=None, help="result file (results/hotswap.json)")
    p.add_argument("--results-dir", type=Path, default=REPO / "bench" / "results")
    p.add_argument("--node-log-level", default="warning")
    p.add_argument("--keep-logs", action="store_true", help="keep empty node logs too")
    args = p.parse_args(argv)
    if args.children < 10:
        p.error("--children must be >= 10")
    if args.profile and args.profile.partition(":")[0] not in PHASES:
        p.error(f"--profile phase must be one of {', '.join(PHASES)}")
    command = "python " + " ".join(shlex.quote(a) for a in [sys.argv[0], *(argv or sys.argv[1:])])

    def on_term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_term)
    try:
        return asyncio.run(amain(args, command))
    except KeyboardInterrupt:
        say("interrupted; everything started was stopped")
        return 130
    finally:
        kill_all_started()


if __name__ == "__main__":
    sys.exit(main())
