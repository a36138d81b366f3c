"""The study's DAG as one Tune experiment: a Tune searcher that hands out each node as its inputs finish.

Tune pickles its searcher into the experiment folder (``tuner.pkl``) and saves its state with every
experiment checkpoint (``save``/``restore``), so ``Tuner.restore`` of an interrupted study continues where
the driver died. Which nodes are done or failed is read from the study folder (``done.json`` /
``failed.json``, written by the nodes), never kept only in memory.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.search import Searcher

from proda.ablation import progress, study
from proda.ablation.grid import Plan, _lookup
from proda.presets import COMPONENTS

def critical_path(plan: Plan, cost: dict[str, float] | None = None) -> dict[str, float]:
    """Each node's cost (default: its estimate) plus that of its longest chain of downstream nodes."""
    down: dict[str, list[str]] = {i: [] for i in plan.nodes}
    for n in plan.nodes.values():
        for up in n.inputs.values():
            down[up].append(n.id)
    memo: dict[str, float] = {}

    def cp(i: str) -> float:
        if i not in memo:
            memo[i] = (cost[i] if cost else plan.nodes[i].est_cost) + max((cp(d) for d in down[i]), default=0.0)
        return memo[i]

    return {i: cp(i) for i in plan.nodes}


def run_order(plan: Plan, ids) -> list[str]:
    """``ids`` in the order the searcher starts them: longest estimated chain first, then chain position, then id."""
    rank, order = critical_path(plan), {p: k for k, p in enumerate(plan.positions)}
    return sorted(ids, key=lambda i: (-rank[i], order[plan.nodes[i].name], i))


def node_name(config: dict) -> str:
    """The name (chain position) of the node a trial config runs: its ``node`` key."""
    # backward compatibility: trials of an experiment started before the rename (restored) say "phase"
    return config["node"] if "node" in config else config["phase"]


def trial_name(trial) -> str:
    return f"{node_name(trial.config)}_{trial.config['node_id'][:8]}"


STAGE_SWITCHES = ("st", "sce", "pd", "sl", "reg", "kd")  # the components of proda.presets.COMPONENTS a row varies


def row_label(variant: str, axes: dict, seed: int) -> str:
    """A row of the study in words: ``pd+sl stage1.gamma1=5.0 seed0``."""
    return " ".join([variant, *(f"{k}={v}" for k, v in axes.items()), f"seed{seed}"])


def trial_tags(plan: Plan) -> dict[str, dict]:
    """Per node, the flat keys its Tune trial's config carries, so that Tune's own tables
    (``ExperimentAnalysis(path).dataframe()``, ``Tuner.restore(...).get_results().get_dataframe()``) tell the
    trials apart without proda: ``kind``, ``seed``; ``rows`` (every row the node serves, :func:`row_label`),
    ``variants`` (their variants, in the spec's order), ``final_of`` (the rows whose score is this node's
    evaluation); each stage switch (``st`` … ``kd``) and each swept field (``stage1.gamma1``, …) with the value
    the rows it serves agree on — ``None`` where they differ: a shared prefix (a warm-up serves every variant)
    does not depend on it. Lists explode into one line per row or variant: ``df.explode("config/variants")``."""
    spec = plan.spec
    values: dict[str, list[dict]] = {i: [] for i in plan.nodes}  # per node: each row's switches and swept values
    rows: dict[str, list[str]] = {i: [] for i in plan.nodes}
    final: dict[str, list[str]] = {i: [] for i in plan.nodes}
    for r in plan.rows:
        d = spec.row_config(r.variant, r.axes, r.seed).to_dict()
        v = {k: _lookup(d, COMPONENTS[k]) for k in STAGE_SWITCHES} | {f: _lookup(d, f) for f in spec.axis_fields()}
        label = row_label(r.variant, r.axes, r.seed)
        for i in r.nodes:
            values[i].append({"variant": r.variant, **v})
            rows[i].append(label)
        final[r.final].append(label)
    out = {}
    for i, n in plan.nodes.items():
        vs = values[i]
        agreed = {k: vs[0][k] if all(x[k] == vs[0][k] for x in vs) else None for k in vs[0] if k != "variant"}
        out[i] = {"kind": n.kind, "seed": n.seed, "rows": rows[i],
                  "variants": [v for v in spec.variants if any(x["variant"] == v for x in vs)],
                  "final_of": final[i], **agreed}
    return out


def tensorboard_name(config: dict) -> str:
    """A node's TensorBoard run, ``<node>-<variants>-seed<k>-<id8>``: ``stage1-pd+sl,proda-seed0-1a2b3c4d``."""
    variants = ",".join(config.get("variants", ())) or "node"
    if len(variants) > 60:
        variants = f"{len(config['variants'])}variants"
    return f"{node_name(config)}-{variants}-seed{config.get('seed', 'x')}-{config['node_id'][:8]}"


class NodeScheduler(Searcher):
    """Tune searcher over the study's DAG: ``suggest`` returns a node whose inputs are all done (the one
    with the longest estimated chain after it first), ``None`` while every waiting node still waits for a
    running one, and ``FINISHED`` when none is left. A node whose input failed is marked failed (skipped)
    instead of run. No barriers between chain positions: seed 0's pseudo labels start while seed 1 still warms
    up, and the trial processes (reused, Train local mode) import torch once per slot, not once per position."""

    def __init__(self, plan: Plan, study_dir: Path, todo: list[str], base: dict):
        super().__init__()
        self.plan, self.study_dir, self.base = plan, study_dir, base
        self.pending = run_order(plan, todo)
        self.running: dict[str, str] = {}  # trial id → node id
        self.tags = trial_tags(plan)  # what each trial's config says about its node (Tune's tables)

    # -- the file system is the truth: done.json / failed.json written by the nodes themselves
    def _status(self, i: str) -> str:
        return study.node_status(self.study_dir, i)

    def _inputs(self, i: str):
        return self.plan.nodes[i].inputs.values()

    def _skip_blocked(self) -> None:
        failed = True
        while failed:  # a skipped node blocks its own downstream nodes in turn
            failed = False
            for i in list(self.pending):
                if any(self._status(up) == "failed" for up in self._inputs(i)):
                    study.mark_failed(study.node_dir(self.study_dir, i), study.SKIPPED, self.plan.nodes[i].name)
                    progress.emit("skipped", i)
                    self.pending.remove(i)
                    failed = True

    def suggest(self, trial_id: str):
        self._skip_blocked()
        for i in self.pending:
            if all(self._status(up) == "done" for up in self._inputs(i)):
                self.pending.remove(i)
                self.running[trial_id] = i
                return {**self.base, "node_id": i, "node": self.plan.nodes[i].name, **self.tags[i]}
        if not self.pending:
            return self.FINISHED
        if not self.running:  # nothing runs that could unblock the rest (cannot happen with a valid plan)
            for i in self.pending:
                study.mark_failed(study.node_dir(self.study_dir, i), study.NO_INPUT, self.plan.nodes[i].name)
            self.pending = []
            return self.FINISHED
        return None

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        i = self.running.pop(trial_id, None)
        if i is None:
            return
        status = self._status(i)
        if status not in ("done", "failed"):
            study.mark_unfinished(study.node_dir(self.study_dir, i), self.plan.nodes[i].name)
            status = "failed"
        progress.emit("ended", i, status)  # the live view (proda.ablation.progress)
        self._skip_blocked()

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump({"pending": self.pending, "running": self.running}, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            d = json.load(f)
        self.pending, self.running = list(d["pending"]), dict(d["running"])
        if not hasattr(self, "tags"):  # pickled by a driver from before the tags
            self.tags = trial_tags(self.plan)
