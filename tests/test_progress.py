"""The driver's live view of a study (proda.ablation.progress), fed by hand with fabricated node events and a
fake clock: the ETA learns per node kind, the event lines say what happened, progress lines are throttled."""

import json
from types import SimpleNamespace

import pytest

from proda.ablation.grid import SMOKE_SPEC, Node, Plan, expand
from proda.ablation.eta import Estimator, makespan
from proda.ablation.progress import StudyProgress, rows_text


def node(i, kind, cost, warmup="adversarial", stage1=None, **inputs):
    return Node(id=i, kind=kind, name=kind, seed=0, config={"warmup": {"kind": warmup}, "stage1": stage1 or {}},
                inputs=inputs, est_cost=cost)


@pytest.fixture
def chain_plan():
    # two warm-ups a, b; a → c (pseudo labels) → d (stage 1)
    nodes = [node("a", "warmup", 100), node("b", "warmup", 100), node("c", "pseudo", 10, model="a"),
             node("d", "stage1", 50, model="a", pseudo="c")]
    return Plan(spec=SimpleNamespace(name="t"), nodes={n.id: n for n in nodes}, rows=[],
                positions=["warmup", "pseudo", "stage1"], naive_nodes=4, naive_cost=260)


class Clock:
    def __init__(self):
        self.t = 1000.0

    def __call__(self):
        return self.t


def test_makespan_runs_waiting_nodes_in_order_as_slots_and_inputs_free():
    inputs = {"x": [], "y": ["x"], "z": []}
    # one slot: x (2 s left) → z (3 s; first in the order among the ready) → y (4 s)
    assert makespan({"x": 2.0}, ["z", "y"], inputs, {"x": 5, "y": 4, "z": 3}, set(), slots=1) == 9.0
    # two slots: z runs beside x; y waits for x
    assert makespan({"x": 2.0}, ["z", "y"], inputs, {"x": 5, "y": 4, "z": 3}, set(), slots=2) == 6.0
    # a node whose input never finishes never starts
    assert makespan({}, ["y"], inputs, {"y": 4}, set(), slots=2) == 0.0


def test_eta_starts_from_the_static_estimate_then_learns_per_kind(chain_plan):
    est = Estimator(chain_plan, slots=2)
    assert est.remaining(0.0) is None  # nothing measured, nothing reported: unknown
    est.start("a", 0.0)
    est.start("b", 0.0)
    est.report("a", img_s=10.0)
    est.report("b", img_s=10.0)
    # static: 1 / 10 img/s per unit → a, b 10 s each (running), then c 1 s, then d 5 s
    assert est.seconds_per_unit("stage1") == pytest.approx(0.1)
    assert est.remaining(0.0) == pytest.approx(16.0)

    assert est.finish("a", 20.0) == 20.0  # 0.2 s per unit: warm-ups and (no other kind measured) everything
    est.report("b", fraction=0.5)
    est.start("c", 20.0)
    assert est.seconds_per_unit("warmup/adversarial") == est.seconds_per_unit("pseudo") == pytest.approx(0.2)
    # b: max(20 − 20 s elapsed, 20 × (1 − 0.5)) = 10 s left; c 2 s, then d 10 s
    assert est.remaining(20.0) == pytest.approx(12.0)

    est.finish("c", 23.0)  # pseudo labels: 3 s / 10 units
    est.start("d", 23.0)
    est.finish("b", 30.0)  # warm-ups: 50 s / 200 units
    assert est.seconds_per_unit("pseudo") == pytest.approx(0.3)
    assert est.seconds_per_unit("warmup/adversarial") == pytest.approx(0.25)
    # stage 1 has no finished node yet: the rate of every finished node, 53 s / 210 units
    assert est.seconds_per_unit("stage1") == pytest.approx(53 / 210)
    assert est.remaining(30.0) == pytest.approx(50 * 53 / 210 - 7)
    est.finish("d", 45.0)
    assert est.remaining(45.0) == 0.0


def test_source_only_and_adversarial_warmups_learn_their_own_rates(chain_plan):
    chain_plan.nodes["b"] = node("b", "warmup", 100, warmup="source")
    est = Estimator(chain_plan, slots=2)
    est.start("a", 0.0)
    est.start("b", 0.0)
    est.finish("b", 10.0)  # source-only: 0.1 s per unit; the adversarial warm-up falls back to it (all finished)
    assert est.seconds_per_unit("warmup/source") == est.seconds_per_unit("warmup/adversarial") == pytest.approx(0.1)
    est.finish("a", 30.0)
    assert est.seconds_per_unit("warmup/adversarial") == pytest.approx(0.3)
    assert est.seconds_per_unit("warmup/source") == pytest.approx(0.1)
    assert est.seconds_per_unit("stage1") == pytest.approx(40 / 200)


def test_stage1_flavours_and_warmup_plus_learn_from_the_closest_step(chain_plan):
    nodes = [node("w", "warmup", 100), node("s", "warmup", 100, warmup="source"),
             node("e", "extend", 100, model="w"), node("st", "stage1", 100, stage1={"st": True}),
             node("pd", "stage1", 100, stage1={"st": True, "pd": True}),
             node("sl", "stage1", 100, stage1={"st": True, "pd": True, "sl": True})]
    plan = Plan(spec=SimpleNamespace(name="t"), nodes={n.id: n for n in nodes}, rows=[],
                positions=["warmup", "extend", "stage1"], naive_nodes=6, naive_cost=600)
    est = Estimator(plan, slots=6)
    for i in plan.nodes:
        est.start(i, 0.0)
    est.finish("s", 10.0)  # 0.1 s per unit
    est.finish("w", 30.0)  # 0.3
    # warmup+ continues an adversarial warm-up: its rate, not the source-only one's
    assert est.seconds_per_unit(("extend/adversarial", "warmup/adversarial")) == pytest.approx(0.3)
    est.finish("sl", 50.0)  # 0.5
    # ST's stage 1 (no momentum encoder) has no rate of its own yet: any stage 1's; then its own
    assert est.seconds_per_unit(("stage1/st", "stage1")) == pytest.approx(0.5)
    est.finish("st", 20.0)  # 0.2
    assert est.seconds_per_unit(("stage1/st", "stage1")) == pytest.approx(0.2)
    assert est.seconds_per_unit(("stage1/sl", "stage1")) == pytest.approx(0.5)
    assert est.seconds_per_unit(("stage1/pd", "stage1")) == pytest.approx(70 / 200)


def test_a_failed_node_and_its_branch_need_no_more_time(chain_plan):
    est = Estimator(chain_plan, slots=1)
    est.start("a", 0.0)
    est.start("b", 0.0)
    est.finish("b", 10.0)  # 10 s / 100 units
    assert est.remaining(10.0) == pytest.approx(10 + 1 + 5 - 10)  # a (10 s, all elapsed), c, d — on one slot
    est.drop("a", 12.0)  # a failed: c and d can never start
    assert est.remaining(12.0) == 0.0


@pytest.fixture
def smoke():
    return expand(SMOKE_SPEC)


def test_the_static_estimate_reads_a_nodes_images_per_s_as_its_own_duration(smoke):
    """Before any node finished: a node reporting N images/s is estimated at (steps × batch) / N seconds, whatever
    its kind's passes per image (the costs are images × passes)."""
    from proda.ablation.eta import rate_keys

    est = Estimator(smoke, slots=2)
    warm = next(n for n in smoke.nodes.values() if n.kind == "warmup" and n.config["warmup"]["kind"] == "adversarial")
    est.start(warm.id, 0.0)
    est.report(warm.id, img_s=8.0)
    images = warm.config["warmup"]["steps"] * warm.config["data"]["batch_size"]
    assert est.seconds_per_unit(rate_keys(warm)) * warm.est_cost == pytest.approx(images / 8.0)


def view(plan, tmp_path, clock, **kw):
    lines = []
    v = StudyProgress(plan, tmp_path, list(plan.nodes), slots=2, tty=False, write=lines.append, clock=clock, **kw)
    return v, lines


def test_event_lines_say_what_happened_to_each_node(smoke, tmp_path):
    clock = Clock()
    v, lines = view(smoke, tmp_path, clock)
    warm = next(n for n in smoke.nodes.values() if n.kind == "warmup" and n.seed == 1)
    stage1 = next(n for n in smoke.nodes.values() if n.kind == "stage1" and n.seed == 0)
    later = next(n for n in smoke.nodes.values() if n.name == "pseudo1" and n.seed == 0)
    for n, rec in ((warm, {"miou": 13.704, "stage": "warmup"}),
                   (stage1, {"type": "ValueError", "error": "boom", "traceback": "traceback.txt"})):
        (tmp_path / "nodes" / n.id).mkdir(parents=True)
        (tmp_path / "nodes" / n.id / ("done.json" if n is warm else "failed.json")).write_text(json.dumps(rec))

    clock.t += 5
    v.started(warm.id, ["warmup seed1", "proda seed1"])
    v.reported(warm.id, {"kind": "train", "step": 20, "images_per_s": 14.8})
    assert v.node_line(warm.id) == f"  warmup    {warm.id[:8]} seed 1  step 20/40  14.8 img/s  warmup seed1, proda seed1"
    clock.t += 60
    v.ended(warm.id, "done")
    v.started(stage1.id, ["pd+sl seed0"])
    clock.t += 3725
    v.ended(stage1.id, "failed")
    v.skipped(later.id)
    assert lines == [
        f"[00:00:05] started warmup {warm.id[:8]} seed 1 for warmup seed1, proda seed1",
        f"[00:01:05] finished warmup {warm.id[:8]} seed 1: mIoU 13.70 in 60 s",
        f"[00:01:05] started stage1 {stage1.id[:8]} seed 0 for pd+sl seed0",
        f"[01:03:10] FAILED stage1 {stage1.id[:8]} seed 0: ValueError: boom "
        f"(traceback: {tmp_path / 'nodes' / stage1.id / 'traceback.txt'})",
        f"[01:03:10] skipped pseudo1 {later.id[:8]} seed 0: an upstream node failed",
    ]
    v.close()
    assert lines[-1].startswith("[01:03:10] study smoke: 1/20 nodes done, 1 failed, 1 skipped after 63.2 min "
                                "(unfinished: ")
    # every event is in the study's event log, with the ETA shown then
    log = [json.loads(s) for s in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [r["event"] for r in log] == ["begin", "started", "finished", "started", "FAILED", "skipped", "end"]
    assert [(r["node"], r["name"], r["kind"]) for r in log[4:6]] == [(stage1.id, "stage1", "stage1"),
                                                                     (later.id, "pseudo1", "pseudo")]
    assert log[2]["seconds"] == 60 and log[2]["nodes_done"] == 1 and log[2]["eta_s"] > 0
    assert log[1]["eta_s"] is None  # at the first start nothing was measured or reported yet


def test_progress_lines_come_at_most_every_30_s(smoke, tmp_path):
    clock = Clock()
    v, lines = view(smoke, tmp_path, clock, events_file=False)
    warm = next(n for n in smoke.nodes.values() if n.kind == "warmup")
    v.started(warm.id, [])
    v.reported(warm.id, {"kind": "train", "step": 10, "images_per_s": 10.0})
    progress = []
    for dt in (10, 19.9, 0.1, 15, 14.9, 0.1, 1):  # ticks at 10, 29.9, 30, 45, 59.9, 60, 61 s
        clock.t += dt
        v.tick()
        progress.append(sum("progress:" in s for s in lines))
    assert progress == [0, 0, 1, 1, 1, 2, 2]
    assert lines[-1].startswith("[00:01:00] progress: 0/20 nodes done, 1 running; 0% of the estimated work; ETA ")
    # an event line does not hold the next progress line back
    v.ended(warm.id, "done")  # at 61 s
    clock.t += 28
    v.tick()
    assert sum("progress:" in s for s in lines) == 2
    clock.t += 1
    v.tick()
    share = 100 * warm.est_cost / smoke.cost
    assert lines[-1].startswith(f"[00:01:30] progress: 1/20 nodes done; {share:.0f}% of the estimated work; ETA ")


def test_reused_nodes_count_as_done_from_the_start(smoke, tmp_path):
    done = [n.id for n in smoke.nodes.values() if n.kind in ("warmup", "ssl")]
    lines = []
    v = StudyProgress(smoke, tmp_path, [i for i in smoke.nodes if i not in done], slots=2, tty=False,
                      write=lines.append, clock=Clock(), events_file=False)
    share = sum(smoke.nodes[i].est_cost for i in done) / smoke.cost
    assert lines == [f"reusing 6 finished node(s), {100 * share:.0f}% of the estimated work"]
    assert v.work_share() == pytest.approx(share)


def test_rows_are_cut_to_the_width_with_their_count():
    rows = [f"variant{k} seed0" for k in range(8)]
    assert rows_text(rows[:2]) == "variant0 seed0, variant1 seed0"
    cut = rows_text(rows, width=50)
    assert cut == "variant0 seed0, variant1 seed0, … (8 rows)" and len(cut) <= 50


def test_on_a_terminal_a_tqdm_bar_for_the_study_and_a_line_per_running_node(smoke, tmp_path, capsys):
    """tty: the study's bar (nodes done, share of the work, ETA) and one line per running node (name, id, seed,
    step/steps, img/s, the rows it serves); the event lines print above the bars."""
    clock = Clock()
    v = StudyProgress(smoke, tmp_path, list(smoke.nodes), slots=2, tty=True, clock=clock, events_file=False)
    warm = next(n for n in smoke.nodes.values() if n.kind == "warmup")
    v.started(warm.id, ["warmup seed0", "st seed0"])
    clock.t += 5
    v.reported(warm.id, {"kind": "train", "step": 10, "images_per_s": 12.5})
    v._refresh(force=True)
    v.close()
    out = capsys.readouterr().out
    assert f"study {smoke.spec.name}" in out and "0/20 nodes" in out and "% of the work · ETA" in out
    steps = warm.config["warmup"]["steps"]
    assert f"warmup    {warm.id[:8]} seed 0  step 10/{steps}  12.5 img/s  warmup seed0, st seed0" in out
    assert f"started warmup {warm.id[:8]} seed 0 for warmup seed0, st seed0" in out
