"""The ETA of a running study, learnt from its finished nodes (per node kind), for the live view
(:mod:`proda.ablation.progress`): each unfinished node's duration, then the makespan of the rest on the
study's slots, in the searcher's order."""

from __future__ import annotations

from proda.ablation.grid import Plan
from proda.chain import STEPS_SECTION


def makespan(running: dict[str, float], waiting: list[str], inputs: dict[str, list[str]],
             duration: dict[str, float], done: set[str], slots: int) -> float:
    """Seconds until the last node ends when ``running`` (node → seconds it still needs) go on and ``waiting``
    nodes start in that order, each as soon as a slot is free and its ``inputs`` are done — the searcher's
    rule. A waiting node whose inputs never finish (a failed branch) never starts."""
    done, running, waiting, t = set(done), dict(running), list(waiting), 0.0
    while True:
        for i in list(waiting):
            if len(running) >= slots:
                break
            if all(u in done for u in inputs[i]):
                waiting.remove(i)
                running[i] = duration[i]
        if not running:
            return t
        dt = min(running.values())
        t += dt
        for i in list(running):
            running[i] -= dt
            if running[i] <= 1e-9:
                del running[i]
                done.add(i)


def rate_keys(node) -> tuple[str, ...]:
    """What a node's seconds per unit are learnt from, the closest first: nodes that run the same training step.

    A warm-up by its flavour (``warmup/source``; ``warmup/adversarial`` also trains the discriminator), then any
    warm-up; warmup+ (kind ``extend``) by its own flavour, then the warm-up step it continues; stage 1 by what its
    step computes (``stage1/st``: no momentum encoder; ``stage1/pd``: with it; ``stage1/sl``: also the strong
    view's pass), then any stage 1; other kinds by kind.
    """
    cfg = node.config
    if node.kind in ("warmup", "extend"):
        flavour = (cfg.get("warmup") or {}).get("kind", "?")
        return (f"{node.kind}/{flavour}", f"warmup/{flavour}") if node.kind == "extend" else \
            (f"warmup/{flavour}", "warmup")
    if node.kind == "stage1":
        s1 = cfg.get("stage1") or {}
        flavour = "sl" if s1.get("sl") else "pd" if s1.get("pd") else "st"
        return f"stage1/{flavour}", "stage1"
    return (node.kind,)


def units_per_image(node) -> float:
    """A training node's estimated cost per image it trains on — its network passes per image — from its plan
    entry (steps and batch of its config); 1 where the entry does not give them."""
    cfg = node.config
    steps = (cfg.get(STEPS_SECTION.get(node.kind, "")) or {}).get("steps")
    batch = (cfg.get("ssl" if node.kind == "ssl" else "data") or {}).get("batch_size")
    return node.est_cost / (steps * batch) if steps and batch else 1.0


class Estimator:
    """The remaining wall time of a study, learnt from its finished nodes.

    A node's duration is its estimated cost (:func:`proda.chain.est_cost`) × seconds per unit of cost, which is,
    the first that exists: the measured rate of the finished nodes that share its closest rate key
    (:func:`rate_keys`; Σ seconds / Σ est_cost, seconds from start to end as the driver saw them); the measured
    rate of every finished node; the static
    estimate, 1 / the mean of the running nodes' reported images/s × their units per image
    (:func:`units_per_image`). Before any of them exists the ETA is unknown (``None``). A running node still needs
    max(duration − elapsed, duration × (1 − step/steps)); the rest is the :func:`makespan` of the unfinished
    nodes on ``slots`` slots, in the searcher's order (longest estimated chain first)."""

    def __init__(self, plan: Plan, slots: int, done: set[str] | frozenset = frozenset()):
        from proda.ablation.scheduler import run_order  # noqa: PLC0415 - the searcher's own order

        self.plan, self.slots = plan, max(1, int(slots))
        self.done, self.dropped = set(done), set()  # dropped: failed or skipped, no work left
        self.started_at: dict[str, float] = {}  # running node → when it started
        self.fraction: dict[str, float] = {}  # running node → step/steps of its last report
        self.img_s: dict[str, float] = {}  # running node → units/s of its last report (images/s × units per image)
        self.measured: dict[str, float] = {}  # finished node → seconds
        self.order = run_order(plan, plan.nodes)
        self.inputs = {i: list(n.inputs.values()) for i, n in plan.nodes.items()}

    def start(self, i: str, t: float) -> None:
        self.started_at[i] = t

    def report(self, i: str, fraction: float | None = None, img_s: float | None = None) -> None:
        if fraction is not None:
            self.fraction[i] = min(max(fraction, 0.0), 1.0)
        if img_s is not None and img_s > 0:
            self.img_s[i] = img_s * units_per_image(self.plan.nodes[i])

    def _stop(self, i: str, t: float) -> float | None:
        self.fraction.pop(i, None)
        self.img_s.pop(i, None)
        t0 = self.started_at.pop(i, None)
        return None if t0 is None else t - t0

    def finish(self, i: str, t: float) -> float | None:
        """Node ``i`` is done at ``t``; returns its measured seconds (``None`` when its start was not seen)."""
        seconds = self._stop(i, t)
        self.done.add(i)
        if seconds is not None:
            self.measured[i] = seconds
        return seconds

    def drop(self, i: str, t: float) -> float | None:
        """Node ``i`` failed or was skipped: it needs no more time (its branch is skipped)."""
        self.dropped.add(i)
        return self._stop(i, t)

    def seconds_per_unit(self, keys: str | tuple[str, ...]) -> float | None:
        """Seconds per unit of cost for a node with these :func:`rate_keys` (one key: a str)."""
        keys = (keys,) if isinstance(keys, str) else keys
        groups = [[i for i in self.measured if k in rate_keys(self.plan.nodes[i])] for k in keys]
        for ids in [*groups, list(self.measured)]:
            cost = sum(self.plan.nodes[i].est_cost for i in ids)
            if ids and cost > 0:
                return sum(self.measured[i] for i in ids) / cost
        rates = list(self.img_s.values())
        return len(rates) / sum(rates) if rates else None

    def remaining(self, t: float) -> float | None:
        left = [i for i in self.order if i not in self.done and i not in self.dropped]
        duration = {}
        for i in left:
            rate = self.seconds_per_unit(rate_keys(self.plan.nodes[i]))
            if rate is None:
                return None
            duration[i] = self.plan.nodes[i].est_cost * rate
        running = {}
        for i in left:
            if i in self.started_at:
                d = duration[i]
                rest = d - (t - self.started_at[i])
                if i in self.fraction:
                    rest = max(rest, d * (1 - self.fraction[i]))
                running[i] = max(rest, 0.0)
        waiting = [i for i in left if i not in running]
        return makespan(running, waiting, self.inputs, duration, self.done, self.slots)
