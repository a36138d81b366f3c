"""Ablation spec → DAG of stage nodes: validation, exact merge counts, stable ids, JSON round trip."""

import json
import pickle
from collections import Counter
from pathlib import Path

import pytest

from proda.ablation.grid import (
    BUILTIN_SPECS,
    DEFAULT_SPEC,
    AblationSpec,
    Node,
    Plan,
    builtin_spec,
    chain,
    expand,
    node_id,
)
from proda.config import ConfigError
from proda.presets import VARIANTS, make_config

ROOT = Path(__file__).resolve().parents[1]


def position_counts(plan):
    return Counter(n.name for n in plan.nodes.values())


# -- validation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"preset": "synthetc"}, "unknown preset (did you mean 'synthetic'?)"),
    ({"variants": ("pd+sl", "prod")}, "unknown variant 'prod' (did you mean 'proda'?)"),
    ({"variants": {"no-sl": {"base": "proda", "sll": False}}}, "unknown component 'sll' (did you mean 'sl'?)"),
    ({"variants": {"x": {"base": "warmpu"}}}, "unknown base variant 'warmpu' (did you mean 'warmup'?)"),
    ({"variants": ()}, "variants: none given"),
    ({"variants": ("st", "st")}, "'st' is listed twice"),
    ({"axes": {"stage1.gama1": [1.0]}}, "unknown config field 'stage1.gama1' (did you mean 'stage1.gamma1'?)"),
    ({"overrides": {"stage1.stpes": 10}}, "unknown config field 'stage1.stpes' (did you mean 'stage1.steps'?)"),
    ({"overrides": {"distill.rounds": 1}}, "'distill.rounds' is a variant switch"),
    ({"overrides": {"seed": 3}}, "list the seeds under 'seeds'"),
    ({"axes": {"stage1.gamma1": []}}, "stage1.gamma1 has an empty list of values"),
    ({"axes": {"stage1.gamma1": 5.0}}, "expected a list of values"),
    ({"axes": {"stage1.proto_momentum": [0.9, 1.5]}}, "stage1.proto_momentum=1.5: must be in [0.0, 1.0)"),
    ({"axes": {"stage1.gamma1": [1.0, 2.0], "stage1.gamma2": [0.1]}, "zip_axes": True},
     "zip_axes needs lists of equal length (stage1.gamma1: 2, stage1.gamma2: 1)"),
    ({"axes": {"stage1.gamma1": [1.0, 1.0]}}, "stage1.gamma1 repeats a value"),
    ({"axes": {"stage1.gamma1": [1.0, 1.0], "stage1.gamma2": [0.1, 0.1]}, "zip_axes": True},
     "zipped settings repeats a value"),
    ({"axes": [{"stage1.gamma1": [1.0]}, {"stage1.gamma1": [2.0]}]}, "'stage1.gamma1' is swept twice"),
    ({"axes": {"stage1.gamma1": [1.0]}, "overrides": {"stage1.gamma1": 2.0}}, "also set in overrides"),
    ({"seeds": ()}, "expected a non-empty list of integers"),
    ({"seeds": (0, 1, 0)}, "a seed is repeated"),
    ({"seeds": (0, -1)}, "-1 is not an integer"),
    ({"variants": {"bad": {"base": "warmup", "sl": True}}}, "stage1.sl=True: needs stage1.st=true"),
    ({"variants": {"bad": {"kd": "two"}}}, "distill.rounds='two': expected an integer"),
])
def test_invalid_specs_fail_at_construction_with_one_clear_line(kwargs, message):
    with pytest.raises(ConfigError) as e:
        AblationSpec(**kwargs)
    assert message in str(e.value)
    assert "\n" not in str(e.value)


def test_out_of_range_axis_value_names_the_row_and_the_field():
    with pytest.raises(ConfigError, match=r"variant 'pd\+sl', stage1.gamma1=-1.0\): stage1.gamma1=-1.0"):
        AblationSpec(variants=("pd+sl",), axes={"stage1.gamma1": [1.0, -1.0]})


def test_unknown_top_level_yaml_key_is_rejected():
    with pytest.raises(ConfigError, match="unknown key 'seed' \\(did you mean 'seeds'\\?\\)"):
        AblationSpec.from_yaml("preset: smoke\nseed: [0]\n")
    with pytest.raises(ConfigError, match="ablation spec file 'nope.yaml' does not exist"):
        AblationSpec.from_yaml("nope.yaml")


def test_custom_variant_starts_from_base_and_applies_components():
    spec = AblationSpec(variants={"pd+sl": None, "kd1": {"kd": 1}, "src-st": {"base": "st", "warmup": "source"},
                                  "st": {"sce": True}, "tau": {"base": "pd+sl", "stage1.tau": 0.5}})
    assert spec.variants["pd+sl"] == VARIANTS["pd+sl"]
    assert spec.variants["kd1"] == {**VARIANTS["proda"], "distill.rounds": 1}  # default base: proda
    assert spec.variants["st"] == {**VARIANTS["st"], "stage1.sce": True}  # default base: the same name
    assert spec.variants["tau"] == {**VARIANTS["pd+sl"], "stage1.tau": 0.5}  # dotted fields too
    assert spec.variants["src-st"] == {**VARIANTS["st"], "warmup.kind": "source"}
    assert AblationSpec.from_dict(spec.to_dict()) == spec


# -- merging ---------------------------------------------------------------------------------------
def test_default_spec_merges_shared_prefixes_exactly():
    plan = expand(DEFAULT_SPEC)  # 8 variants × 3 seeds
    # per seed: source-only 1 node, warmup 1, warmup+ 2, st/st+sce/pd/pd+sl 3 each, proda 6 (ssl first; the
    # synthetic preset's one KD round) → 22 naive
    assert len(plan.rows) == 24 and plan.naive_nodes == 3 * 22
    # per seed merged: 1 ssl, 2 warm-ups (source, adversarial), 1 warmup+, 1 pseudo0, 4 stage1 (st, st+sce, pd,
    # pd+sl = proda's), pseudo1, distill1 → 11
    assert position_counts(plan) == {"ssl": 3, "warmup": 6, "warmup+": 3, "pseudo0": 3, "stage1": 12, "pseudo1": 3,
                                  "distill1": 3}
    assert len(plan.nodes) == 33
    assert plan.positions == ["ssl", "warmup", "warmup+", "pseudo0", "stage1", "pseudo1", "distill1"]
    rows = {(r.variant, r.seed): r for r in plan.rows}
    for seed in (0, 1, 2):
        src, wu = rows["source-only", seed].nodes, rows["warmup", seed].nodes
        assert len(src) == len(wu) == 1 and src != wu  # two warm-up kinds, nothing else
        kinds = Counter(n.config["warmup"]["kind"] for n in plan.nodes_at("warmup") if n.seed == seed)
        assert kinds == {"source": 1, "adversarial": 1}
        st_like = [rows[v, seed] for v in ("st", "st+sce", "pd", "pd+sl")]
        assert len({r.nodes[0] for r in st_like}) == 1 and st_like[0].nodes[0] == wu[0]
        assert len({r.nodes[1] for r in st_like}) == 1  # one pseudo0 per seed
        assert len({r.nodes[2] for r in st_like}) == 4  # pd+sl and proda share stage 1
        proda = rows["proda", seed].nodes  # ssl, warmup, pseudo0, stage1, pseudo1, distill1
        assert proda[1:4] == rows["pd+sl", seed].nodes
        assert [plan.nodes[n].name for n in proda] == [p for p in plan.positions if p != "warmup+"]
        assert rows["proda", seed].final == proda[-1]
    assert len({n.seed for n in plan.nodes.values()}) == 3  # no sharing across seeds


def test_every_row_of_a_seed_shares_one_ssl_node():
    for spec in (DEFAULT_SPEC, AblationSpec(preset="synthetic", seeds=(0, 1), overrides={"model.init": "ssl"})):
        plan = expand(spec)
        ssl = {n.seed: n.id for n in plan.nodes_at("ssl")}
        assert sorted(ssl) == sorted(spec.seeds)
        for n in plan.nodes.values():  # whoever starts from ssl weights starts from its own seed's node
            if "ssl" in n.inputs:
                assert n.inputs["ssl"] == ssl[n.seed]
        every = "model.init" in spec.overrides  # then every row (its warm-up) starts from it
        for r in plan.rows:
            assert (r.nodes[0] == ssl[r.seed]) == (every or r.variant == "proda")
        if every:
            assert all(n.inputs == {"ssl": ssl[n.seed]} for n in plan.nodes_at("warmup"))
    distills = [n for n in expand(DEFAULT_SPEC).nodes.values() if n.kind == "distill"]
    assert distills and all(n.config["distill"]["student_init"] == "ssl" for n in distills)


def test_the_control_row_continues_the_shared_warmup_for_stage1_steps():
    plan = expand(DEFAULT_SPEC)
    rows = {(r.variant, r.seed): r for r in plan.rows}
    for seed in DEFAULT_SPEC.seeds:
        warm, more = rows["warmup+", seed].nodes
        assert warm == rows["warmup", seed].nodes[0]  # the same warm-up node as the warmup row's
        node = plan.nodes[more]
        assert (node.kind, node.name, node.inputs) == ("extend", "warmup+", {"model": warm})
        cfg = node.config
        # the adversarial warm-up's step (3 + 3 + 1.5 passes per image), for stage1.steps
        assert node.est_cost == cfg["stage1"]["steps"] * cfg["data"]["batch_size"] * 7.5
    # the warm-up's id does not depend on whether it is continued: every other row's ids stay as they were
    a, b = make_config("synthetic", "warmup", 0), make_config("synthetic", "warmup+", 0)
    assert node_id("warmup", a, 0, {}) == node_id("warmup", b, 0, {})


def test_sensitivity_trains_the_warmup_of_a_seed_once_for_all_axis_values():
    spec = builtin_spec("sensitivity")  # pd+sl; λ 4 values, γ1 5, γ2 4, as three one-axis sweeps; 3 seeds
    plan = expand(spec)
    assert len(plan.rows) == (4 + 5 + 4) * 3 and plan.naive_nodes == 39 * 3
    # stage-1 configs per seed: 4 (λ) + 4 (γ1 without the preset 10) + 3 (γ2 without the preset 0.1) = 11
    assert position_counts(plan) == {"warmup": 3, "pseudo0": 3, "stage1": 33}
    assert {next(iter(r.axes)) for r in plan.rows} == {
        "stage1.proto_momentum", "stage1.gamma1", "stage1.gamma2"}
    assert all(len(r.axes) == 1 for r in plan.rows)
    base = [r for r in plan.rows if r.seed == 0 and r.axes in
            ({"stage1.proto_momentum": 0.995}, {"stage1.gamma1": 10.0}, {"stage1.gamma2": 0.1})]
    assert len(base) == 3 and len({r.final for r in base}) == 1  # the preset point is one node


def test_cross_product_and_zip():
    cross = AblationSpec(preset="smoke", variants=("pd+sl",), seeds=(0,),
                         axes={"stage1.gamma1": [1.0, 5.0], "stage1.gamma2": [0.0, 0.1, 0.2]})
    zipped = AblationSpec(preset="smoke", variants=("pd+sl",), seeds=(0,), zip_axes=True,
                          axes={"stage1.gamma1": [1.0, 5.0], "stage1.gamma2": [0.0, 0.1]})
    assert len(expand(cross).rows) == 6 and len(expand(zipped).rows) == 2
    assert [r.axes for r in expand(zipped).rows] == [{"stage1.gamma1": 1.0, "stage1.gamma2": 0.0},
                                                     {"stage1.gamma1": 5.0, "stage1.gamma2": 0.1}]


def test_node_costs():
    plan = expand(AblationSpec(preset="smoke", variants=("proda",), seeds=(0,)))
    cost = {n.name: n.est_cost for n in plan.nodes.values()}
    # images × network passes per image (forward 1, backward 2): adversarial warm-up source 3 + target 3 +
    # discriminator 1.5; stage 1 with PD and SL: source 3 + weak 3 + momentum encoder 1 + strong 3; distillation
    # student 3 + 3, teacher 1
    assert cost["warmup"] == 40 * 8 * 7.5 and cost["stage1"] == 20 * 8 * 10 and cost["distill2"] == 20 * 8 * 7
    assert cost["pseudo0"] == 250 * 2  # smoke: 1000 × 0.25 synthetic target-train images, flipped: a forward each
    assert plan.naive_cost == sum(cost.values())
    st = expand(AblationSpec(preset="smoke", variants=("st", "source-only"), seeds=(0,)))
    other = {(n.name, n.config["warmup"]["kind"]): n.est_cost for n in st.nodes.values()}
    assert other["stage1", "adversarial"] == 20 * 8 * 6 and other["warmup", "source"] == 40 * 8 * 3


@pytest.mark.parametrize("order", [("proda", "kd-only"), ("kd-only", "proda")])
def test_same_computation_at_another_chain_position_takes_the_earlier_name(order):
    # kd-only: warm-up → pseudo1 → distill1; its pseudo1 (labels of the warm-up) is proda's pseudo0
    variants = {"proda": None, "kd-only": {"base": "warmup", "kd": 1}}
    plan = expand(AblationSpec(preset="smoke", variants={k: variants[k] for k in order}, seeds=(0,)))
    rows = {r.variant: r for r in plan.rows}
    assert rows["kd-only"].nodes[:3] == rows["proda"].nodes[:3]  # ssl, warm-up, pseudo labels of the warm-up
    assert plan.nodes[rows["kd-only"].nodes[2]].name == "pseudo0"
    for r in plan.rows:  # every node's chain position comes after those of its inputs
        pos = [plan.positions.index(plan.nodes[n].name) for n in r.nodes]
        assert pos == sorted(pos) and len(set(pos)) == len(pos)
    assert len(plan.nodes) == 9  # ssl, warm-up, pseudo0, stage1, pseudo1, distill1, pseudo2, distill2 + kd-only's distill1


# -- ids -------------------------------------------------------------------------------------------
def test_node_ids_are_stable_and_change_only_downstream():
    spec = AblationSpec(preset="smoke", variants=("proda",), seeds=(0,))
    a, b = expand(spec).rows[0].nodes, expand(spec).rows[0].nodes
    assert a == b and all(len(i) == 16 for i in a)
    changed = AblationSpec(preset="smoke", variants=("proda",), seeds=(0,), overrides={"distill.lr": 0.001})
    c = expand(changed).rows[0].nodes  # ssl, warmup, pseudo0, stage1, pseudo1 | distill1, pseudo2, distill2
    assert c[:5] == a[:5] and all(x != y for x, y in zip(c[5:], a[5:]))
    s1 = expand(AblationSpec(preset="smoke", variants=("proda",), seeds=(0,),
                             overrides={"stage1.gamma2": 0.2})).rows[0].nodes
    assert s1[:3] == a[:3] and all(x != y for x, y in zip(s1[3:], a[3:]))


def test_node_id_is_a_content_hash_independent_of_key_order():
    cfg = make_config("smoke", "proda", 0)
    a = node_id("stage1", cfg, 0, {"model": "a" * 16, "pseudo": "b" * 16})
    assert a == node_id("stage1", cfg, 0, {"pseudo": "b" * 16, "model": "a" * 16})  # sha256 of sorted JSON
    assert a != node_id("stage1", cfg, 1, {"model": "a" * 16, "pseudo": "b" * 16})
    assert node_id("warmup", cfg, 0, {}) == node_id("warmup", cfg.override({"distill.lr": 0.1}), 0, {})


def test_a_field_added_later_keeps_old_node_ids_at_its_old_behaviour_and_moves_them_otherwise():
    from proda.chain import ADDED_FIELDS

    at_old = {f"{s}.{k}": v for s, fields in ADDED_FIELDS.items() for k, v in fields.items()}
    d = make_config("smoke", "proda", 0, at_old).to_dict()
    before = {s: {k: v for k, v in sec.items() if k not in ADDED_FIELDS.get(s, {})} if isinstance(sec, dict) else sec
              for s, sec in d.items()}  # the config as it was written before those fields existed
    for kind in ("warmup", "stage1"):
        assert node_id(kind, d, 0, {}) == node_id(kind, before, 0, {})
    gn = make_config("smoke", "proda", 0, {"model.norm": "gn"})
    assert node_id("warmup", gn, 0, {}) != node_id("warmup", d, 0, {})
    sgd = make_config("smoke", "proda", 0, {"stage1.optimizer": "sgd", "stage1.freeze_bn": False})
    assert node_id("stage1", sgd, 0, {}) != node_id("stage1", d, 0, {})
    assert node_id("warmup", sgd, 0, {}) == node_id("warmup", d, 0, {})
    frozen = make_config("smoke", "proda", 0)  # the preset freezes BatchNorm in stage 1 (S12): new stage-1 ids only
    assert node_id("stage1", frozen, 0, {}) != node_id("stage1", d, 0, {})
    assert node_id("warmup", frozen, 0, {}) == node_id("warmup", d, 0, {})


# -- serialisation ---------------------------------------------------------------------------------
def test_plan_json_round_trip():
    plan = expand(builtin_spec("sensitivity"))
    back = Plan.from_json(plan.to_json())
    assert back.to_json() == plan.to_json()
    assert back.rows == plan.rows and back.nodes == plan.nodes and back.spec.to_dict() == plan.spec.to_dict()
    assert json.loads(plan.to_json())["naive_nodes"] == 117


def test_a_plan_holds_the_chains_own_nodes_with_their_ids_and_their_plan_json_records():
    spec = AblationSpec(preset="smoke", variants=("proda",), seeds=(0,))
    plan = expand(spec)
    row_chain = chain(spec.row_config("proda", {}, 0))
    assert [n.id for n in row_chain] == plan.rows[0].nodes and [plan.nodes[n.id] for n in row_chain] == row_chain
    for n in row_chain:  # each id is the hash of the node's identity, its inputs by upstream id
        assert n.id == node_id(n.kind, n.config, n.seed, n.inputs) and set(n.inputs.values()) <= set(plan.nodes)
    rec = json.loads(plan.to_json())["nodes"][row_chain[1].id]
    assert list(rec) == ["id", "kind", "name", "seed", "config", "inputs", "est_cost"]
    assert rec["name"] == "warmup" and Node.from_dict(rec) == row_chain[1]


def test_a_plan_json_written_before_the_rename_loads_into_the_same_plan():
    # older plans: each node record repeats its name as "phase", the positions used are listed as "phases"
    plan = expand(AblationSpec(preset="smoke", variants=("warmup+", "proda"), seeds=(0,)))
    d = json.loads(plan.to_json())
    for rec in d["nodes"].values():
        rec["phase"] = rec["name"]
    d["phases"] = d.pop("positions")
    old = Plan.from_json(json.dumps(d))
    assert old == plan and old.positions == ["ssl", "warmup", "warmup+", "pseudo0", "stage1", "pseudo1",
                                             "distill1", "pseudo2", "distill2"]
    assert old.to_json() == plan.to_json()  # rewritten (every start does) in today's form


def test_a_plan_pickled_before_the_rename_unpickles_with_its_positions():
    # the searcher of an interrupted Tune experiment holds a Plan pickled by the driver that started it
    plan = expand(AblationSpec(preset="smoke", variants=("warmup",), seeds=(0,)))
    new = pickle.dumps(plan, protocol=2)  # protocol 2: each str is 'X', its 4-byte length, its UTF-8 bytes
    field = b"X\x09\x00\x00\x00positions"
    assert new.count(field) == 1
    old = pickle.loads(new.replace(field, b"X\x06\x00\x00\x00phases"))
    assert old == plan and old.positions == ["warmup"] and not hasattr(old, "phases")


def test_summary_reports_merging():
    text = expand(DEFAULT_SPEC).summary()
    assert "= 24 rows" in text and "stage1" in text and "saved" in text
    assert "total          33     66           33" in text


@pytest.mark.parametrize("name", ["default", "smoke", "sensitivity"])
def test_example_yaml_equals_builtin(name):
    spec = AblationSpec.from_yaml(str(ROOT / "experiments" / "grids" / f"{name}.yaml"))
    assert spec.to_dict() == BUILTIN_SPECS[name].to_dict()


def test_builtin_specs_and_unknown_name():
    assert set(BUILTIN_SPECS) == {"default", "smoke", "paper", "sensitivity"}
    default = expand(DEFAULT_SPEC)  # stage 1 and warmup+ at 1.5× the warm-up (S10), the student twice both (S9)
    cfg = {n.kind: n.config for n in default.nodes.values()}  # one node's config per kind (all alike in steps)
    assert cfg["warmup"]["warmup"]["steps"] == 400 and cfg["stage1"]["stage1"]["steps"] == 600
    assert cfg["extend"]["stage1"]["steps"] == 600 and cfg["distill"]["distill"]["steps"] == 2000
    assert builtin_spec("paper").preset == "paper-gta5" and len(builtin_spec("paper").variants) == 8
    kinds = {n.kind for n in expand(builtin_spec("smoke")).nodes.values()}
    assert kinds == {"ssl", "warmup", "extend", "pseudo", "stage1", "distill"} and len(builtin_spec("smoke").seeds) == 2
    with pytest.raises(ConfigError, match="did you mean 'paper'"):
        builtin_spec("papr")


def test_node_ids_of_embedded_benchmark_nodes_change_with_its_version(monkeypatch):
    """A study folder must never reuse a node trained on another drawing of the benchmark."""
    import proda.chain as chain_mod
    from proda.presets import make_config

    cfg = make_config("smoke", "warmup", 0)
    real = make_config("smoke", "warmup", 0, {"data.source": "gta5", "data.target": "cityscapes", "data.source_root": "/x", "data.target_root": "/y"})
    before = chain_mod.node_id("warmup", cfg, 0, {}), chain_mod.node_id("warmup", real, 0, {})
    monkeypatch.setattr(chain_mod, "SYNTHETIC_VERSION", "v-other")
    after = chain_mod.node_id("warmup", cfg, 0, {}), chain_mod.node_id("warmup", real, 0, {})
    assert before[0] != after[0]  # the embedded benchmark's node moved
    assert before[1] == after[1]  # a real dataset's node did not
