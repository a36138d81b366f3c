"""The study's Tune searcher, driven by hand (no Ray started): a node is handed out only once its inputs are
done, no chain position waits for another to end, a failed input skips its branch, and the state survives
pickling (Tune stores the searcher in the experiment folder) and save/restore (Tune's experiment checkpoints).
"""

import json
import pickle

import pytest

from conftest import tensorboard_scalars
from proda.ablation.grid import SMOKE_SPEC, expand
from proda.ablation import progress
from proda.ablation.scheduler import NodeScheduler, critical_path, tensorboard_name, trial_name
from proda.ablation.study import node_status, record_error

FINISHED = NodeScheduler.FINISHED


@pytest.fixture
def plan():
    # 2 seeds × ssl, (source-only, adversarial) warm-up → (warmup+ | pseudo0 → stage1 → … → distill2)
    return expand(SMOKE_SPEC)


class Heard(list):
    """What the searcher tells the live view (proda.ablation.progress): (event, node id, ...)."""

    def ended(self, i, status):
        self.append(("ended", i, status))

    def skipped(self, i):
        self.append(("skipped", i))

    def close(self):
        pass


@pytest.fixture
def said():
    with progress.shown(Heard()) as heard:
        yield heard


def said_order(said, ids):
    """``ids`` in the order the view heard of them."""
    heard = [e[1] for e in said]
    assert set(ids) <= set(heard)
    return sorted(ids, key=heard.index)


def finish(study, node_id, ok=True):
    d = study / "nodes" / node_id
    d.mkdir(parents=True, exist_ok=True)
    (d / ("done.json" if ok else "failed.json")).write_text(json.dumps({"error": "boom"}))


def test_critical_path_puts_the_long_chains_first(plan):
    cp = critical_path(plan)
    warmups = plan.nodes_at("warmup")
    chained = [n.id for n in warmups if any(n.id in m.inputs.values() for m in plan.nodes.values())]
    alone = [n.id for n in warmups if n.id not in chained]
    assert len(chained) == 2 and len(alone) == 2  # the source-only warm-ups are rows' final nodes
    assert min(cp[i] for i in chained) > max(cp[i] for i in alone)
    last = plan.nodes_at("distill2")
    assert all(cp[n.id] == n.est_cost for n in last)
    # the longest chain after an adversarial warm-up: pseudo0 → stage1 → … → distill2 (not its short warmup+
    # branch, not the ssl node upstream of the students)
    assert cp[chained[0]] == pytest.approx(sum(n.est_cost for n in plan.nodes.values()
                                               if n.seed == plan.nodes[chained[0]].seed and n.id not in alone
                                               and n.kind not in ("ssl", "extend")))
    assert all(max(cp[i] for i in alone) < cp[n.id] < min(cp[i] for i in chained) for n in plan.nodes_at("ssl"))


def test_nodes_are_handed_out_as_their_inputs_finish_without_barriers_between_chain_positions(plan, tmp_path, said):
    s = NodeScheduler(plan, tmp_path, list(plan.nodes), {"study_dir": str(tmp_path)})
    first = [s.suggest(f"t{k}") for k in range(6)]
    # only warm-ups and ssl nodes have no inputs; the longest chains first
    assert [c["node"] for c in first] == ["warmup"] * 2 + ["ssl"] * 2 + ["warmup"] * 2
    assert s.suggest("tx") is None  # the rest waits for a running node
    by_trial = {f"t{k}": c["node_id"] for k, c in enumerate(first)}
    assert {c["node_id"] for c in first} == {n.id for p in ("warmup", "ssl") for n in plan.nodes_at(p)}
    assert all(c["study_dir"] == str(tmp_path) for c in first)

    # one seed's adversarial warm-up ends while the others still run: its pseudo labels, then warmup+, start now
    adv0 = next(t for t, i in by_trial.items() if plan.nodes[i].seed == 0 and plan.nodes[i].kind == "warmup"
                and any(i in m.inputs.values() for m in plan.nodes.values()))
    finish(tmp_path, by_trial[adv0])
    s.on_trial_complete(adv0)
    nxt, more = s.suggest("t6"), s.suggest("t7")
    assert nxt["node"] == "pseudo0" and plan.nodes[nxt["node_id"]].seed == 0
    assert more["node"] == "warmup+" and plan.nodes[more["node_id"]].inputs == {"model": by_trial[adv0]}
    assert s.suggest("t8") is None
    assert said == [("ended", by_trial[adv0], "done")]

    # run the rest to the end, finishing the oldest running node each time
    running = {t: i for t, i in by_trial.items() if t != adv0} | {"t6": nxt["node_id"], "t7": more["node_id"]}
    events = [("end", by_trial[adv0])] + [("start", i) for i in running.values()]
    k = 9
    while running:
        tid = next(iter(running))
        finish(tmp_path, running[tid])
        s.on_trial_complete(tid)
        events.append(("end", running.pop(tid)))
        while isinstance(c := s.suggest(f"t{k}"), dict):
            running[f"t{k}"] = c["node_id"]
            events.append(("start", c["node_id"]))
            k += 1
    assert c == FINISHED and all(node_status(tmp_path, i) == "done" for i in plan.nodes)
    for i, n in plan.nodes.items():  # every node was handed out after all of its inputs had finished
        for up in n.inputs.values():
            assert events.index(("end", up)) < events.index(("start", i))


def test_a_failed_input_skips_its_branch_and_the_rest_finishes(plan, tmp_path, said):
    s = NodeScheduler(plan, tmp_path, list(plan.nodes), {})
    warm = {f"t{k}": s.suggest(f"t{k}")["node_id"] for k in range(6)}  # warm-ups and ssl nodes
    chained = [t for t, i in warm.items() if plan.nodes[i].kind == "warmup"
               and any(i in m.inputs.values() for m in plan.nodes.values())]
    bad, good = chained
    finish(tmp_path, warm[bad], ok=False)
    s.on_trial_complete(bad, error=True)
    branch = [n.id for n in plan.nodes.values()
              if n.seed == plan.nodes[warm[bad]].seed and n.name not in ("warmup", "ssl")]
    assert len(branch) == 7  # warmup+, pseudo0, stage1, pseudo1, distill1, pseudo2, distill2
    for i in branch:
        assert json.loads((tmp_path / "nodes" / i / "failed.json").read_text())["error"] == \
            "skipped: an upstream node failed"
    # the view hears the failure, then each skipped node of its branch
    assert said == [("ended", warm[bad], "failed"), *(("skipped", i) for i in said_order(said, branch))]
    # the other seed still runs to the end
    for t in [good] + [t for t in warm if t not in chained]:
        finish(tmp_path, warm[t])
        s.on_trial_complete(t)
    k = 10
    while (c := s.suggest(f"t{k}")) != FINISHED:
        assert c is not None and plan.nodes[c["node_id"]].seed != plan.nodes[warm[bad]].seed
        finish(tmp_path, c["node_id"])
        s.on_trial_complete(f"t{k}")
        k += 1
    assert sum(node_status(tmp_path, i) == "done" for i in plan.nodes) == len(plan.nodes) - 8


def test_a_trial_that_ends_without_its_node_marks_the_node_failed(plan, tmp_path, said):
    s = NodeScheduler(plan, tmp_path, list(plan.nodes), {})
    c = s.suggest("t0")
    s.on_trial_complete("t0", error=True)
    assert node_status(tmp_path, c["node_id"]) == "failed"
    assert "ended without finishing" in (tmp_path / "nodes" / c["node_id"] / "failed.json").read_text()


def test_a_trial_that_ended_in_an_exception_marks_the_node_failed_with_it(plan, tmp_path, said):
    s = NodeScheduler(plan, tmp_path, list(plan.nodes), {})
    c = s.suggest("t0")
    node_dir = tmp_path / "nodes" / c["node_id"]
    try:  # what the trial process does when the node raises (before Tune retries or gives up)
        [][0]
    except IndexError as e:
        record_error(node_dir, e)
    s.on_trial_complete("t0", error=True)
    failed = json.loads((node_dir / "failed.json").read_text())
    assert failed == {"type": "IndexError", "error": "list index out of range", "traceback": "traceback.txt",
                      "node": c["node"]}
    assert "IndexError: list index out of range" in (node_dir / "traceback.txt").read_text()


def test_pickled_and_restored_state_continues_where_it_stopped(plan, tmp_path, said):
    todo = [i for i in plan.nodes]
    s = NodeScheduler(plan, tmp_path, todo, {"x": 1})
    a, b = s.suggest("t0"), s.suggest("t1")
    s.save(str(tmp_path / "state.json"))
    # as Tune restores it: the searcher pickled at the start (tuner.pkl), then its saved state
    fresh = pickle.loads(pickle.dumps(NodeScheduler(plan, tmp_path, todo, {"x": 1})))
    fresh.restore(str(tmp_path / "state.json"))
    assert fresh.running == {"t0": a["node_id"], "t1": b["node_id"]}
    handed = {fresh.suggest("t2")["node_id"], fresh.suggest("t3")["node_id"]}
    assert not handed & {a["node_id"], b["node_id"]} and len(handed) == 2
    finish(tmp_path, a["node_id"])
    fresh.on_trial_complete("t0")
    assert fresh.running.keys() == {"t1", "t2", "t3"}


def test_only_an_interrupted_experiment_of_the_same_plan_and_folder_is_restored(plan, tmp_path):
    from dataclasses import replace

    from proda.ablation.grid import expand
    from proda.ablation.runner import _digest, interrupted_experiment

    exp = tmp_path / "tune" / "study-x"
    exp.mkdir(parents=True)
    marker = tmp_path / "tune" / "running.json"
    assert interrupted_experiment(plan, tmp_path) is None  # no marker: the last experiment ended
    marker.write_text(json.dumps({"name": "study-x", "plan": _digest(sorted(plan.nodes)),
                                  "study_dir": str(tmp_path)}))
    assert interrupted_experiment(plan, tmp_path) is None  # Tune never saved its state there
    (exp / "tuner.pkl").write_bytes(b"state")
    assert interrupted_experiment(plan, tmp_path) == exp
    more_seeds = expand(replace(SMOKE_SPEC, seeds=(0, 1, 2)))
    assert interrupted_experiment(more_seeds, tmp_path) is None  # its searcher would not know the new nodes
    moved = tmp_path / "elsewhere"
    (moved / "tune").mkdir(parents=True)
    (moved / "tune" / "running.json").write_text(marker.read_text())
    assert interrupted_experiment(plan, moved) is None  # a copied folder: its configs name the old path
    marker.write_text("{not json")
    assert interrupted_experiment(plan, tmp_path) is None


def test_each_trial_config_says_which_rows_variants_seed_switches_and_swept_values_its_node_serves(tmp_path, said):
    from proda.ablation.grid import SENSITIVITY_SPEC

    plan = expand(SENSITIVITY_SPEC)  # pd+sl × 3 one-axis sweeps × 3 seeds: warm-ups and pseudo0 shared by 13 rows
    s = NodeScheduler(plan, tmp_path, list(plan.nodes), {"study_dir": str(tmp_path)})
    (warmup,) = [n for n in plan.nodes_at("warmup") if n.seed == 0]
    c = pickle.loads(pickle.dumps(s)).tags[warmup.id]
    assert c["kind"] == "warmup" and c["seed"] == 0 and c["variants"] == ["pd+sl"] and c["final_of"] == []
    assert len(c["rows"]) == 13 and "pd+sl stage1.gamma1=5.0 seed0" in c["rows"]
    assert {k: c[k] for k in ("st", "sce", "pd", "sl", "reg", "kd")} == dict(st=True, sce=True, pd=True, sl=True,
                                                                            reg=True, kd=0)
    # the warm-up serves every swept value: none of them is its own
    assert c["stage1.gamma1"] is c["stage1.gamma2"] is c["stage1.proto_momentum"] is None
    # a stage-1 node of the γ1 sweep: its own γ1, the preset's λ and γ2; the row whose score it is
    (node,) = [i for i, t in s.tags.items() if t["final_of"] == ["pd+sl stage1.gamma1=5.0 seed1"]]
    t = s.tags[node]
    assert (t["kind"], t["seed"], t["stage1.gamma1"], t["stage1.gamma2"], t["stage1.proto_momentum"]) == \
        ("stage1", 1, 5.0, 0.1, 0.995)
    # the trial configs the searcher hands Tune: its own keys and these, flat
    configs = [s.suggest(f"t{k}") for k in range(3)]  # the three warm-ups (nothing else has all its inputs)
    assert all(cfg == {"study_dir": str(tmp_path), "node_id": cfg["node_id"], "node": "warmup",
                       **s.tags[cfg["node_id"]]} for cfg in configs)
    assert sorted(cfg["seed"] for cfg in configs) == [0, 1, 2]


def test_each_nodes_curves_go_to_its_tensorboard_run_under_the_study_folder(tmp_path, said):
    from proda.ablation.tensorboard import StudyTensorBoard

    class Trial:  # what the callback reads of a Tune trial: its config (trials are dict keys, by identity)
        def __init__(self, config):
            self.config = config

    plan = expand(SMOKE_SPEC)
    s = NodeScheduler(plan, tmp_path, list(plan.nodes), {"study_dir": str(tmp_path)})
    cfg = s.suggest("t0")
    trial = Trial(cfg)
    tb = pickle.loads(pickle.dumps(StudyTensorBoard(tmp_path)))  # Tune pickles its callbacks with the run config
    tb.log_trial_start(trial)
    base = {"node_id": cfg["node_id"], "stage": cfg["node"], "timestamp": 1, "training_iteration": 1}
    tb.log_trial_result(1, trial, {**base, "kind": "train", "step": 2, "loss_ce": 1.5, "images_per_s": 40.0})
    tb.log_trial_result(2, trial, {**base, "kind": "train", "step": 4, "loss_ce": 1.0, "images_per_s": 42.0})
    tb.log_trial_result(3, trial, {**base, "kind": "eval", "step": 4, "miou": 12.5, "iou/road": 50.0})
    tb.log_trial_result(4, trial, {**base, "done": 1, "miou": 12.5})  # the final report repeats the evaluation
    tb.log_trial_end(trial)
    (run,) = (tmp_path / "tensorboard").iterdir()
    variants = ",".join(cfg["variants"])
    assert run.name == f"{cfg['node']}-{variants}-seed{cfg['seed']}-{cfg['node_id'][:8]}"
    ev = tensorboard_scalars(run)
    assert ev["train/loss_ce"] == [(2, 1.5), (4, 1.0)] and [s for s, _ in ev["train/images_per_s"]] == [2, 4]
    assert ev["eval/miou"] == [(4, 12.5)] and ev["eval/iou/road"] == [(4, 50.0)]
    assert not any(t.endswith(("timestamp", "training_iteration", "step", "done")) for t in ev)


def test_a_trial_config_from_before_the_rename_gets_the_same_trial_and_tensorboard_names():
    # the trials of an experiment started before the rename (restored by a later driver) say "phase"
    from types import SimpleNamespace

    new = {"node_id": "1a2b3c4d5e6f7a8b", "node": "stage1", "seed": 0, "variants": ["pd+sl", "proda"]}
    old = {"phase": "stage1", **{k: v for k, v in new.items() if k != "node"}}
    for cfg in (new, old):
        assert trial_name(SimpleNamespace(config=cfg)) == "stage1_1a2b3c4d"
        assert tensorboard_name(cfg) == "stage1-pd+sl,proda-seed0-1a2b3c4d"
