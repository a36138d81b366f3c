"""The chain of stage nodes of one variant, and what identifies each node (torch-free).

A variant's chain is derived from its config: ``warmup`` → (``pseudo0`` → ``stage1``) → (``pseudoR`` →
``distillR``) × rounds. A node is identified by its kind, the seed, the config sections its result
depends on (:data:`NODE_SECTIONS`, less :data:`NOT_IDENTITY`) and its upstream nodes' ids — so identical
prefixes of different variants are the same node.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from proda.config import Config, stable_hash

# config sections (besides the seed) that determine each node kind's result
NODE_SECTIONS = {
    "warmup": ("data", "model", "optim", "warmup", "eval"),
    "pseudo": ("pseudo",),
    "stage1": ("data", "model", "optim", "pseudo", "stage1", "eval"),
    "distill": ("data", "model", "optim", "pseudo", "distill", "eval"),
}
# fields inside those sections that do not change the node itself (only how many follow it)
NOT_IDENTITY = {"distill": ("rounds",)}


@dataclass(frozen=True)
class NodeSpec:
    kind: str  # warmup | pseudo | stage1 | distill
    name: str  # unique within a chain: warmup, pseudo0, stage1, pseudo1, distill1, ...
    inputs: dict[str, str] = field(default_factory=dict)  # role → upstream node name (model, pseudo, teacher)


def chain(cfg: Config) -> list[NodeSpec]:
    nodes = [NodeSpec("warmup", "warmup")]
    prev = "warmup"
    if cfg.stage1.st:
        nodes += [NodeSpec("pseudo", "pseudo0", {"model": prev}),
                  NodeSpec("stage1", "stage1", {"model": prev, "pseudo": "pseudo0"})]
        prev = "stage1"
    for r in range(1, cfg.distill.rounds + 1):
        nodes += [NodeSpec("pseudo", f"pseudo{r}", {"model": prev}),
                  NodeSpec("distill", f"distill{r}", {"teacher": prev, "pseudo": f"pseudo{r}"})]
        prev = f"distill{r}"
    return nodes


def node_identity(kind: str, config: dict, seed: int, input_ids: dict[str, str]) -> dict:
    """What identifies a node: hash it (``stable_hash``) for the node id."""
    sections = {}
    for s in NODE_SECTIONS[kind]:
        sec = dict(config[s])
        for f in NOT_IDENTITY.get(s, ()):
            sec.pop(f, None)
        sections[s] = sec
    return {"kind": kind, "seed": seed, "sections": sections, "inputs": dict(sorted(input_ids.items()))}


def node_id(kind: str, config: Config | dict, seed: int, input_ids: dict[str, str]) -> str:
    d = config.to_dict() if isinstance(config, Config) else config
    return stable_hash(node_identity(kind, d, seed, input_ids), 16)
