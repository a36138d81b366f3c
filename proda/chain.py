"""The chain of stage nodes of one variant, and what identifies each node (torch-free).

A variant's chain is derived from its config: (``ssl``) → ``warmup`` → (``warmup+``) → (``pseudo0`` →
``stage1``) → (``pseudoR`` → ``distillR``) × rounds. ``ssl`` (self-supervised backbone weights) is there
when a warm-up (``model.init="ssl"``) or a distillation student (``distill.student_init="ssl"``) starts
from it; ``warmup+`` (the control row, ``warmup.extend``) continues the warm-up for ``stage1.steps``. A
node is identified by its kind, the seed, the config sections its result depends on
(:data:`NODE_SECTIONS`, less :data:`NOT_IDENTITY`) and its upstream nodes' ids — so identical prefixes
of different variants are the same node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proda.config import SYNTHETIC_VERSION, Config, stable_hash

# config sections (besides the seed) that determine each node kind's result
NODE_SECTIONS = {
    "ssl": ("data", "model", "ssl"),
    "warmup": ("data", "model", "optim", "warmup", "eval"),
    "extend": ("data", "model", "optim", "warmup", "stage1", "eval"),
    "pseudo": ("pseudo",),
    "stage1": ("data", "model", "optim", "pseudo", "stage1", "eval"),
    "distill": ("data", "model", "optim", "pseudo", "distill", "eval"),
}
# fields inside those sections that do not change the node itself: how many nodes follow it (rounds, extend),
# or which upstream node it starts from (model.init: that shows as the node's "ssl" input), so no node's id
# depends on them — the ssl node's id not on model.init, and a warm-up's id not on whether warmup+ follows
NOT_IDENTITY = {"distill": ("rounds",), "warmup": ("extend",), "model": ("init",)}
# fields added after studies were run, at the value that computes what was computed before they existed: a node
# whose config holds that value keeps the id it had then, so existing study folders keep their finished nodes
ADDED_FIELDS = {"model": {"norm": "bn"}, "stage1": {"optimizer": None, "freeze_bn": False}}
# the order of the chain positions: ssl, warmup, warmup+, pseudo0, stage1, pseudo1, distill1, ...
_FIXED_POSITIONS = {"ssl": 0, "warmup": 1, "warmup+": 2, "pseudo0": 3, "stage1": 4}
CITYSCAPES_TRAIN_IMAGES = 2975


@dataclass
class Node:
    """One stage node: of a variant's chain (:func:`chain`) and of a study's plan (``Plan.nodes``, ``plan.json``),
    run by :func:`proda.engine.nodes.run_node`. Its ``name`` is its chain position (the trial-name prefix and
    the ``node`` column of the tables)."""

    kind: str  # ssl | warmup | extend | pseudo | stage1 | distill
    name: str  # ssl, warmup, warmup+, pseudo0, stage1, pseudo1, distill1, ... (the earliest, when merged)
    inputs: dict[str, str] = field(default_factory=dict)  # role (model, pseudo, teacher, ssl) → upstream node id
    id: str = ""  # node_id(kind, config, seed, inputs): 16 hex digits
    seed: int = 0
    config: dict = field(default_factory=dict)  # Config.to_dict() of the first row that created it
    est_cost: float = 0.0  # compute units (est_cost)

    def to_dict(self) -> dict:
        """Its record in ``plan.json``."""
        return {"id": self.id, "kind": self.kind, "name": self.name, "seed": self.seed, "config": self.config,
                "inputs": dict(self.inputs), "est_cost": self.est_cost}

    @classmethod
    def from_dict(cls, d: dict) -> "Node":
        """A ``plan.json`` record; an older plan's extra key repeating ``name`` is ignored."""
        return cls(kind=d["kind"], name=d["name"], inputs=dict(d["inputs"]), id=d["id"], seed=int(d["seed"]),
                   config=d["config"], est_cost=float(d["est_cost"]))


def uses_ssl(cfg: Config) -> bool:
    return cfg.model.init == "ssl" or (cfg.distill.rounds > 0 and cfg.distill.student_init == "ssl")


def _positions(cfg: Config) -> list[tuple[str, str, dict[str, str]]]:
    """The chain as (kind, name, role → upstream name)."""
    ssl = {"ssl": "ssl"} if uses_ssl(cfg) else {}
    out = [("ssl", "ssl", {})] if ssl else []
    out.append(("warmup", "warmup", ssl if cfg.model.init == "ssl" else {}))
    prev = "warmup"
    if cfg.warmup.extend:
        out.append(("extend", "warmup+", {"model": prev}))
        prev = "warmup+"
    if cfg.stage1.st:
        out += [("pseudo", "pseudo0", {"model": prev}), ("stage1", "stage1", {"model": prev, "pseudo": "pseudo0"})]
        prev = "stage1"
    for r in range(1, cfg.distill.rounds + 1):
        out += [("pseudo", f"pseudo{r}", {"model": prev}),
                ("distill", f"distill{r}", {"teacher": prev, "pseudo": f"pseudo{r}",
                                            **(ssl if cfg.distill.student_init == "ssl" else {})})]
        prev = f"distill{r}"
    return out


def chain(cfg: Config) -> list[Node]:
    """The nodes of ``cfg``'s chain in order, each with its id, inputs by id and estimated cost."""
    d = cfg.to_dict()
    ids: dict[str, str] = {}  # name → id
    nodes = []
    for kind, name, up in _positions(cfg):
        inputs = {role: ids[u] for role, u in up.items()}
        ids[name] = node_id(kind, d, cfg.seed, inputs)
        nodes.append(Node(kind, name, inputs, ids[name], cfg.seed, d, est_cost(kind, cfg)))
    return nodes


def node_identity(kind: str, config: dict, seed: int, input_ids: dict[str, str]) -> dict:
    """What identifies a node: hash it (``stable_hash``) for the node id."""
    sections = {}
    for s in NODE_SECTIONS[kind]:
        sec = dict(config[s])
        for f in NOT_IDENTITY.get(s, ()):
            sec.pop(f, None)
        for f, before in ADDED_FIELDS.get(s, {}).items():
            if f in sec and sec[f] == before:
                del sec[f]
        sections[s] = sec
    ident = {"kind": kind, "seed": seed, "sections": sections, "inputs": dict(sorted(input_ids.items()))}
    if str(sections.get("data", {}).get("source", "")).startswith("synthetic"):
        ident["benchmark"] = SYNTHETIC_VERSION  # images drawn by another version are other data
    return ident


def node_id(kind: str, config: Config | dict, seed: int, input_ids: dict[str, str]) -> str:
    d = config.to_dict() if isinstance(config, Config) else config
    return stable_hash(node_identity(kind, d, seed, input_ids), 16)


def chain_position(name: str) -> int:
    """The order of a node name in any chain: ssl < warmup < warmup+ < pseudo0 < stage1 < pseudo1 < ..."""
    if name in _FIXED_POSITIONS:
        return _FIXED_POSITIONS[name]
    for prefix, off in (("pseudo", 3), ("distill", 4)):
        if name.startswith(prefix) and name[len(prefix):].isdigit():
            return 2 * int(name[len(prefix):]) + off
    raise ValueError(f"unknown chain position '{name}'")


# network passes per image of a training step (a forward counts 1, a backward 2); the discriminator of the
# adversarial warm-up as 1.5: measured at disc_channels 16, an adversarial step costs 2.7× a source step
_FWD, _FWD_BWD, _DISC = 1.0, 3.0, 1.5


def step_passes(kind: str, cfg: Config) -> float:
    """Network passes per image of one training step of a ``kind`` node: what makes the kinds' costs comparable.

    Source CE 3; adversarial warm-up: + the target image's 3 + the discriminator; stage 1: the source CE (when
    ``stage1.source_ce``) + the weak view's 3, + the momentum encoder's forward on the full image (PD or SL: × its
    area over the crop's), + the strong view's 3 (SL); distillation: the student's 3 + 3 and the teacher's 1.
    """
    if kind in ("warmup", "extend"):
        return _FWD_BWD + (_FWD_BWD + _DISC if cfg.warmup.kind == "adversarial" else 0.0)
    if kind == "stage1":
        s = cfg.stage1
        (h, w), (ch, cw) = cfg.data.full_size, cfg.data.crop
        return ((_FWD_BWD if s.source_ce else 0.0) + _FWD_BWD + (_FWD * h * w / (ch * cw) if s.pd or s.sl else 0.0)
                + (_FWD_BWD if s.sl else 0.0))
    if kind == "distill":
        return 2 * _FWD_BWD + _FWD
    raise ValueError(f"step_passes: '{kind}' is not a segmentation training kind")


def est_cost(kind: str, cfg: Config) -> float:
    """Compute units: images × network passes (:func:`step_passes`), so one unit costs about the same in every
    kind. Training: optimiser steps × batch × passes per image; pseudo labels: target-train images × (2 if flip)
    forwards; ssl: steps × batch × 2 views × their area / the crop's × 1.5 (a backbone's forward and backward,
    without the head: measured on the embedded benchmark, about half of a whole network's 3)."""
    if kind == "pseudo":
        from proda.data.synthetic import SyntheticSpec  # noqa: PLC0415

        n = CITYSCAPES_TRAIN_IMAGES if cfg.data.target == "cityscapes" else \
            SyntheticSpec().scaled(cfg.data.synthetic_scale).n_target_train
        return n * (2 if cfg.pseudo.flip else 1) * _FWD
    if kind == "ssl":
        (h, w), (ch, cw) = cfg.ssl.view_size or cfg.data.crop, cfg.data.crop
        return float(cfg.ssl.steps * cfg.ssl.batch_size * 2 * h * w / (ch * cw) * _FWD_BWD / 2)
    return float(stage_steps(kind, cfg) * cfg.data.batch_size * step_passes(kind, cfg))


# the config section whose ``steps`` a node kind trains for (warmup+, kind "extend", runs stage1.steps)
STEPS_SECTION = {"ssl": "ssl", "warmup": "warmup", "extend": "stage1", "stage1": "stage1", "distill": "distill"}


def stage_steps(kind: str, cfg: Config) -> int | None:
    """A node's optimiser steps (what its reports count to); ``None`` for a pseudo-label node (no steps)."""
    if kind == "pseudo":
        return None
    return getattr(cfg, STEPS_SECTION[kind]).steps
