"""An ablation spec (variants × value axes × seeds) → a DAG of stage nodes with shared prefixes merged.

A *row* of the study is one (variant, axis values, seed); its config is
``make_config(preset, "proda", seed, {**overrides, **variant switches, **axis values})`` and its
chain of stage nodes is :func:`proda.chain.chain`. A node's id (:func:`proda.chain.node_id`) hashes its
kind, seed, the config sections it depends on (``proda.chain.NODE_SECTIONS``) and its upstream ids, so
identical prefixes of different rows get identical ids and are run once: the warm-up of a seed is trained
once, whatever the number of variants or axis values that start from it (DESIGN.md decision 1).

``axes`` is a mapping ``field → values`` (cross product, or zipped with ``zip_axes``) or a *list* of
such mappings: the union of several sweeps, each varying its own fields with every other field at its
preset value — a sensitivity study is three one-axis sweeps, not a 4×5×4 cube. A row of a sweep lists
only that sweep's fields in ``Row.axes``.

Variants are names of :data:`proda.presets.VARIANTS` or a mapping ``name → {component: value}`` with the
components of :data:`proda.presets.COMPONENTS` (and dotted config fields), starting from ``base``
(a variant name; default: the variant of the same name if there is one, else ``proda``), e.g.
``{"no-sl": {"sl": false, "reg": false}}`` is ProDA without structure learning. They are stored
normalised as ``name → dotted overrides``.
"""

from __future__ import annotations

import difflib
import itertools
import json
from collections import Counter
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from proda.chain import CITYSCAPES_TRAIN_IMAGES, Node, chain, chain_position, est_cost, node_id  # noqa: F401
from proda.config import Config, ConfigError, field_paths, load_yaml, naming_file
from proda.presets import COMPONENTS, PRESETS, VARIANTS, make_config

TABLE3_VARIANTS = ("source-only", "warmup", "warmup+", "st", "st+sce", "pd", "pd+sl", "proda")
# every dotted field some variant sets: a row's switches come from its variant, never from `overrides`
SWITCH_FIELDS = frozenset(k for v in VARIANTS.values() for k in v)
def _hint(word: str, options) -> str:
    close = difflib.get_close_matches(str(word), [str(o) for o in options], n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else f" (known: {', '.join(map(str, options))})"


def _field_hint(key: str) -> str:
    close = difflib.get_close_matches(str(key), field_paths(), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _lookup(d: dict, dotted: str) -> Any:
    return _lookup(d[dotted.split(".", 1)[0]], dotted.split(".", 1)[1]) if "." in dotted else d[dotted]


# -- the spec --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class AblationSpec:
    name: str = "ablation"
    preset: str = "synthetic"  # a key of proda.presets.PRESETS
    variants: tuple[str, ...] | dict = TABLE3_VARIANTS  # normalised: name → dotted overrides
    axes: dict[str, list] | list[dict[str, list]] = field(default_factory=dict)  # a sweep, or a union of sweeps
    zip_axes: bool = False  # False: cross product within a sweep; True: zipped (equal lengths)
    seeds: tuple[int, ...] = (0, 1, 2)
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted overrides for every row

    def __post_init__(self):
        put = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen dataclass
        if not isinstance(self.name, str) or not self.name.strip():
            raise ConfigError(f"ablation name={self.name!r}: must be a non-empty string")
        if self.preset not in PRESETS:
            raise ConfigError(f"ablation preset={self.preset!r}: unknown preset{_hint(self.preset, list(PRESETS))}")
        if not isinstance(self.zip_axes, bool):
            raise ConfigError(f"ablation zip_axes={self.zip_axes!r}: expected true or false")
        put("overrides", _check_overrides(self.overrides))
        put("variants", _normalise_variants(self.variants))
        put("axes", _normalise_axes(self.axes, self.zip_axes, self.overrides))
        put("seeds", _check_seeds(self.seeds))
        for vname, vo in self.variants.items():  # each row's config validates (seeds only change `seed`)
            for combo in self.combos():
                self.row_config(vname, combo, self.seeds[0], vo)

    def sweeps(self) -> list[dict[str, list]]:
        """``axes`` as a list of sweeps (one mapping each; ``[{}]`` when nothing is swept)."""
        return list(self.axes) if isinstance(self.axes, list) else [self.axes]

    def axis_fields(self) -> list[str]:
        return [f for sweep in self.sweeps() for f in sweep]

    def combos(self) -> list[dict[str, Any]]:
        """The axis settings of the rows, sweep after sweep (``[{}]`` when nothing is swept)."""
        out = []
        for sweep in self.sweeps():
            keys = list(sweep)
            values = zip(*sweep.values()) if self.zip_axes else itertools.product(*sweep.values())
            out += [dict(zip(keys, vals)) for vals in values] if sweep else [{}]
        return out

    def row_config(self, variant: str, combo: dict, seed: int, vo: dict | None = None) -> Config:
        vo = self.variants[variant] if vo is None else vo
        try:
            return make_config(self.preset, "proda", seed, {**self.overrides, **vo, **combo})
        except ConfigError as e:
            where = ", ".join([f"variant '{variant}'"] + [f"{k}={v!r}" for k, v in combo.items()])
            raise ConfigError(f"ablation row ({where}): {e}") from None

    # -- conversions -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        named = all(VARIANTS.get(n) == vo for n, vo in self.variants.items())
        return {"name": self.name, "preset": self.preset,
                "variants": list(self.variants) if named else {n: dict(vo) for n, vo in self.variants.items()},
                "axes": json.loads(json.dumps(self.axes)), "zip_axes": self.zip_axes, "seeds": list(self.seeds),
                "overrides": dict(self.overrides)}

    @classmethod
    def from_dict(cls, d: dict) -> "AblationSpec":
        if not isinstance(d, dict):
            raise ConfigError(f"ablation spec must be a mapping, got {type(d).__name__}")
        known = [f.name for f in fields(cls)]
        for key in d:
            if key not in known:
                raise ConfigError(f"ablation spec: unknown key '{key}'{_hint(key, known)}")
        return cls(**d)

    @classmethod
    def from_yaml(cls, path_or_text: str | Path) -> "AblationSpec":
        """A spec from YAML text or a file; an error about a file's content starts with the file's name
        (and, for YAML that does not parse, the line: ``grid.yaml:3: not valid YAML: ...``)."""
        text, path = str(path_or_text), None
        if isinstance(path_or_text, Path) or ("\n" not in text and text.endswith((".yaml", ".yml"))):
            path = Path(path_or_text)
            if not path.is_file():
                raise ConfigError(f"ablation spec file '{path}' does not exist")
            text = path.read_text()
        d = load_yaml(text, path)
        if d is None or d == {}:  # an empty file is a mistake, not "the default study" (days of compute)
            where = f"file '{path_or_text}'" if path is not None else "text"
            raise ConfigError(f"ablation spec {where} is empty (expected a mapping with at least variants and seeds)")
        if isinstance(d, dict) and path is not None:
            d.setdefault("name", path.stem)
        with naming_file(path):
            return cls.from_dict(d)


def _check_overrides(overrides: Any) -> dict:
    if not isinstance(overrides, dict):
        raise ConfigError(f"ablation overrides={overrides!r}: expected a mapping of dotted config fields")
    paths = set(field_paths())
    for key in overrides:
        if key == "seed":
            raise ConfigError("ablation overrides: 'seed' is set per row; list the seeds under 'seeds'")
        if key not in paths:
            raise ConfigError(f"ablation overrides: unknown config field '{key}'{_field_hint(key)}")
        if key in SWITCH_FIELDS:
            raise ConfigError(f"ablation overrides: '{key}' is a variant switch; set it in the variants "
                              f"(components: {', '.join(COMPONENTS)})")
    return dict(overrides)


def _normalise_variants(variants: Any) -> dict[str, dict]:
    if isinstance(variants, str):
        variants = [variants]
    if isinstance(variants, (list, tuple)):
        twice = [n for n in variants if variants.count(n) > 1]
        if twice:
            raise ConfigError(f"ablation variants: '{twice[0]}' is listed twice")
        variants = {name: None for name in variants}
    if not isinstance(variants, dict):
        raise ConfigError(f"ablation variants={variants!r}: expected a list of names or a mapping")
    if not variants:
        raise ConfigError(f"ablation variants: none given (known: {', '.join(VARIANTS)})")
    paths = set(field_paths())
    out = {}
    for name, comps in variants.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"ablation variants: name {name!r} must be a non-empty string")
        if comps is None:
            if name not in VARIANTS:
                raise ConfigError(f"ablation variants: unknown variant '{name}'{_hint(name, list(VARIANTS))}")
            comps = {"base": name}
        if not isinstance(comps, dict):
            raise ConfigError(f"ablation variant '{name}'={comps!r}: expected a mapping of components")
        base = comps.get("base", name if name in VARIANTS else "proda")
        if base not in VARIANTS:
            raise ConfigError(f"ablation variant '{name}': unknown base variant '{base}'{_hint(base, list(VARIANTS))}")
        vo = dict(VARIANTS[base])
        for key, value in comps.items():
            if key == "base":
                continue
            if key in COMPONENTS:
                vo[COMPONENTS[key]] = value
            elif key in paths and key != "seed":
                vo[key] = value
            else:
                raise ConfigError(f"ablation variant '{name}': unknown component '{key}'"
                                  f"{_hint(key, ['base', *COMPONENTS])}")
        out[name] = vo
    return out


def _normalise_axes(axes: Any, zipped: bool, overrides: dict) -> dict | list:
    single = isinstance(axes, dict)
    sweeps = [axes] if single else axes
    if not isinstance(sweeps, (list, tuple)) or not all(isinstance(s, dict) for s in sweeps):
        raise ConfigError(f"ablation axes={axes!r}: expected a mapping field → values, or a list of them")
    paths, seen, out = set(field_paths()), set(), []
    for sweep in sweeps:
        if not single and not sweep:
            raise ConfigError("ablation axes: a sweep in the list is empty")
        norm = {}
        for key, values in sweep.items():
            if key == "seed":
                raise ConfigError("ablation axes: 'seed' cannot be an axis; list the seeds under 'seeds'")
            if key not in paths:
                raise ConfigError(f"ablation axes: unknown config field '{key}'{_field_hint(key)}")
            if key in overrides:
                raise ConfigError(f"ablation axes: '{key}' is also set in overrides; set it in one place")
            if key in seen:
                raise ConfigError(f"ablation axes: '{key}' is swept twice")
            seen.add(key)
            if not isinstance(values, (list, tuple)):
                raise ConfigError(f"ablation axes: {key}={values!r}: expected a list of values")
            if not values:
                raise ConfigError(f"ablation axes: {key} has an empty list of values")
            norm[key] = list(values)
        if zipped and len({len(v) for v in norm.values()}) > 1:
            lengths = ", ".join(f"{k}: {len(v)}" for k, v in norm.items())
            raise ConfigError(f"ablation axes: zip_axes needs lists of equal length ({lengths})")
        for key, vs in ({"zipped settings": list(zip(*norm.values()))} if zipped else norm).items():
            if len({json.dumps(v, default=str) for v in vs}) < len(vs):
                raise ConfigError(f"ablation axes: {key} repeats a value ({vs})")
        out.append(norm)
    return out[0] if single else (out or {})


def _check_seeds(seeds: Any) -> tuple[int, ...]:
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if not isinstance(seeds, (list, tuple)) or not seeds:
        raise ConfigError(f"ablation seeds={seeds!r}: expected a non-empty list of integers")
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int) or not 0 <= s < 2**31:
            raise ConfigError(f"ablation seeds: {s!r} is not an integer in [0, 2^31)")
    if len(set(seeds)) < len(seeds):
        raise ConfigError(f"ablation seeds={list(seeds)}: a seed is repeated")
    return tuple(seeds)


# -- the DAG ---------------------------------------------------------------------------------------
@dataclass
class Row:
    variant: str
    axes: dict[str, Any]  # swept field → value (as the config holds it); only this row's sweep
    seed: int
    nodes: list[str]  # node ids in chain order
    final: str  # last node id: the row's score is its evaluation


@dataclass
class Plan:
    spec: AblationSpec
    nodes: dict[str, Node]
    rows: list[Row]
    positions: list[str]  # the chain positions (node names) used, in execution order
    naive_nodes: int  # one independent chain per row
    naive_cost: float

    def nodes_at(self, name: str) -> list[Node]:
        """The nodes at chain position ``name`` (``warmup``, ``pseudo0``, ...)."""
        return [n for n in self.nodes.values() if n.name == name]

    def __setstate__(self, state: dict) -> None:
        # backward compatibility: a Plan pickled before the field was renamed (the searcher of an
        # interrupted Tune experiment, in its tuner.pkl) has "phases"
        if "phases" in state:
            state["positions"] = state.pop("phases")
        self.__dict__.update(state)

    @property
    def cost(self) -> float:
        return sum(n.est_cost for n in self.nodes.values())

    def to_json(self) -> str:
        return json.dumps({"version": 1, "spec": self.spec.to_dict(),
                           "nodes": {k: n.to_dict() for k, n in self.nodes.items()},
                           "rows": [asdict(r) for r in self.rows], "positions": self.positions,
                           "naive_nodes": self.naive_nodes, "naive_cost": self.naive_cost}, indent=1)

    @classmethod
    def from_json(cls, text: str) -> "Plan":
        d = json.loads(text)
        return cls(spec=_stored_spec(d["spec"]), nodes={k: Node.from_dict(n) for k, n in d["nodes"].items()},
                   # backward compatibility: a plan.json written before the rename has "phases"
                   rows=[Row(**r) for r in d["rows"]], positions=list(d.get("positions", d.get("phases"))),
                   naive_nodes=int(d["naive_nodes"]), naive_cost=float(d["naive_cost"]))

    def summary(self) -> str:
        s = self.spec
        lines = [f"study '{s.name}': preset {s.preset}, {len(s.variants)} variant(s) × {len(s.combos())} axis "
                 f"setting(s) × {len(s.seeds)} seed(s) = {len(self.rows)} rows",
                 f"{'position':<10} {'nodes':>6} {'naive':>6} {'merged away':>12}"]
        naive = Counter(self.nodes[nid].name for r in self.rows for nid in r.nodes)
        for p in self.positions:
            k = len(self.nodes_at(p))
            lines.append(f"{p:<10} {k:>6} {naive[p]:>6} {naive[p] - k:>12}")
        total = len(self.nodes)
        lines.append(f"{'total':<10} {total:>6} {self.naive_nodes:>6} {self.naive_nodes - total:>12}")
        saved = 1 - self.cost / self.naive_cost if self.naive_cost else 0.0
        lines.append(f"estimated work: {self.cost:,.0f} units merged vs {self.naive_cost:,.0f} with one chain "
                     f"per row ({100 * saved:.1f}% saved; units = images × network passes)")
        return "\n".join(lines)


def _stored_spec(d: dict) -> AblationSpec:
    """A spec as stored in a plan, without re-validating it against today's presets."""
    spec = object.__new__(AblationSpec)
    for f in fields(AblationSpec):
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        object.__setattr__(spec, f.name, d.get(f.name, default))
    object.__setattr__(spec, "seeds", tuple(spec.seeds))
    if not isinstance(spec.variants, dict):
        object.__setattr__(spec, "variants", {n: dict(VARIANTS.get(n, {})) for n in spec.variants})
    return spec


def expand(spec: AblationSpec) -> Plan:
    """All rows of ``spec`` and the union of their chains, identical nodes merged."""

    nodes: dict[str, Node] = {}
    rows: list[Row] = []
    naive_nodes, naive_cost = 0, 0.0
    for vname in spec.variants:
        for combo in spec.combos():
            for seed in spec.seeds:
                cfg = spec.row_config(vname, combo, seed)
                row_nodes = chain(cfg)
                for n in row_nodes:
                    naive_nodes, naive_cost = naive_nodes + 1, naive_cost + n.est_cost
                    if n.id not in nodes:
                        nodes[n.id] = n
                    elif chain_position(n.name) < chain_position(nodes[n.id].name):
                        # the same computation at an earlier chain position (e.g. pseudo labels of the
                        # warm-up, named pseudo1 in a chain without stage 1): it takes the earlier name
                        nodes[n.id].name = n.name
                ids = [n.id for n in row_nodes]
                rows.append(Row(vname, {k: _lookup(row_nodes[0].config, k) for k in combo}, seed, ids, ids[-1]))
    positions = sorted({n.name for n in nodes.values()}, key=chain_position)
    return Plan(spec, nodes, rows, positions, naive_nodes, naive_cost)


# -- built-in studies ------------------------------------------------------------------------------
DEFAULT_SPEC = AblationSpec(name="default", preset="synthetic", variants=TABLE3_VARIANTS, seeds=(0, 1, 2))
# every node kind (ssl, both warm-up kinds, warmup+, pseudo, stage 1, distillation) in a couple of minutes;
# 2 seeds → std
SMOKE_SPEC = AblationSpec(name="smoke", preset="smoke",
                          variants=("source-only", "warmup", "warmup+", "pd+sl", "proda"),
                          seeds=(0, 1))
PAPER_SPEC = AblationSpec(name="paper", preset="paper-gta5", variants=TABLE3_VARIANTS, seeds=(0, 1, 2))
# three one-axis sweeps around the preset (λ = stage1.proto_momentum, γ1, γ2), not their cross product
SENSITIVITY_SPEC = AblationSpec(
    name="sensitivity", preset="synthetic", variants=("pd+sl",), seeds=(0, 1, 2),
    axes=[{"stage1.proto_momentum": [0.98, 0.99, 0.995, 0.999]},
          {"stage1.gamma1": [0.0, 1.0, 5.0, 10.0, 20.0]},
          {"stage1.gamma2": [0.0, 0.05, 0.1, 0.2]}])
BUILTIN_SPECS = {"default": DEFAULT_SPEC, "smoke": SMOKE_SPEC, "paper": PAPER_SPEC, "sensitivity": SENSITIVITY_SPEC}


def builtin_spec(name: str) -> AblationSpec:
    if name not in BUILTIN_SPECS:
        raise ConfigError(f"ablation spec '{name}': unknown built-in spec{_hint(name, list(BUILTIN_SPECS))}")
    return BUILTIN_SPECS[name]
