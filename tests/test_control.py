"""The control row warmup+: the warm-up continued for stage1.steps with a fresh stage-1 optimiser."""

import json

import pytest
import torch

from conftest import tiny_config
from proda import checkpoint as ckpt
from proda.chain import chain
from proda.data.stream import open_split
from proda.engine.nodes import Node, load_model, run_node
from proda.method.control import ContinuedAdversarial
from proda.method.stages import make_optimizer

LOG = lambda s: None  # noqa: E731


def _cfg(cache, **kw):
    return tiny_config(cache, "warmup+", **{"warmup.steps": 2, "stage1.steps": 3, "stage1.lr": 3e-3,
                                            "warmup.lr": 1e-2, **kw})


def _fresh_model(cfg):
    from proda.engine.nodes import new_model

    return new_model(cfg)


def test_the_control_rows_chain_is_warmup_then_warmup_plus():
    cfg = _cfg(".")
    warmup, more = chain(cfg)
    assert (warmup.kind, warmup.name, warmup.inputs) == ("warmup", "warmup", {})
    assert (more.kind, more.name, more.inputs) == ("extend", "warmup+", {"model": warmup.id})


def test_warmup_plus_starts_from_the_warmup_and_its_discriminator_with_a_fresh_stage1_optimiser(
        tmp_path, synthetic_cache):
    cfg = _cfg(synthetic_cache)
    run_node(Node("warmup", "warmup"), cfg, tmp_path / "warmup", {}, log=LOG)
    disc = ckpt.load(tmp_path / "warmup" / "disc.pt")["disc"]
    model = load_model(cfg, tmp_path / "warmup")
    stage = ContinuedAdversarial(cfg, model, open_split(cfg, "source", "train"), open_split(cfg, "target", "train"),
                                 torch.device("cpu"), 0, disc)
    assert all(torch.equal(v, disc[k]) for k, v in stage.disc.state_dict().items())
    assert type(stage.opt) is type(make_optimizer(model, cfg, cfg.stage1.lr)) and not stage.opt.state  # fresh
    stage.set_lr(0, cfg.stage1.steps)
    assert stage.opt.param_groups[0]["lr"] == pytest.approx(cfg.stage1.lr)  # stage 1's rate, not the warm-up's
    stage.set_lr(2, cfg.stage1.steps)
    assert stage.opt.param_groups[0]["lr"] == pytest.approx(cfg.stage1.lr * (1 / 3) ** cfg.optim.poly_power)


def test_stage1_optimizer_sets_the_type_of_stage1s_and_warmup_plus_optimiser_but_not_the_warmups(
        tmp_path, synthetic_cache):
    from proda.config import ConfigError
    from proda.method.stages import AdversarialWarmup

    cfg = _cfg(synthetic_cache, **{"optim.optimizer": "adam", "stage1.optimizer": "sgd"})
    src, tgt, dev = open_split(cfg, "source", "train"), open_split(cfg, "target", "train"), torch.device("cpu")
    warm = AdversarialWarmup(cfg, _fresh_model(cfg), src, tgt, dev, 0)
    more = ContinuedAdversarial(cfg, _fresh_model(cfg), src, tgt, dev, 0, warm.disc.state_dict())
    assert type(warm.opt) is torch.optim.Adam and type(more.opt) is torch.optim.SGD
    assert more.opt.param_groups[0]["momentum"] == cfg.optim.momentum
    adam = _cfg(synthetic_cache, **{"optim.optimizer": "adam"})  # stage1.optimizer None: optim.optimizer
    assert type(ContinuedAdversarial(adam, _fresh_model(adam), src, tgt, dev, 0, warm.disc.state_dict()).opt) \
        is torch.optim.Adam
    with pytest.raises(ConfigError, match="stage1.optimizer"):
        _cfg(synthetic_cache, **{"stage1.optimizer": "lamb"})


def test_warmup_plus_runs_stage1_steps_and_its_score_is_the_rows(tmp_path, synthetic_cache):
    from proda.ablation import results as R
    from proda.ablation.grid import AblationSpec, expand
    from proda.ablation.runner import run_study_local

    over = {"data.source_root": synthetic_cache, "data.target_root": synthetic_cache,
            "data.synthetic_scale": 0.05, "data.batch_size": 4, "warmup.steps": 2, "stage1.steps": 3,
            "eval.max_images": 8, "eval.batch_size": 8, "checkpoint_interval": 1, "log_interval": 1,
            "model.init": "ssl", "ssl.steps": 2, "ssl.batch_size": 4, "ssl.view_size": [16, 32]}
    plan = expand(AblationSpec(name="ctl", preset="smoke", variants=("warmup", "warmup+"), seeds=(0,),
                               overrides=over))
    assert [n.name for n in plan.nodes.values()] == ["ssl", "warmup", "warmup+"]
    study = run_study_local(plan, tmp_path / "ctl", log=LOG)
    (more,) = [n for n in plan.nodes.values() if n.kind == "extend"]
    recs = [json.loads(ln) for ln in (study / "nodes" / more.id / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in recs if r["kind"] == "train"]
    assert steps == [1, 2, 3]  # stage1.steps, not warmup.steps
    sc = R.scores(R.collect(study), "last").set_index("variant")
    assert sc.loc["warmup+", "status"] == "done" and 0 <= sc.loc["warmup+", "miou"] <= 100
    assert sc.loc["warmup", "miou"] != sc.loc["warmup+", "miou"]
    assert "warmup+" in R.report(study)


def test_a_warmup_without_its_discriminator_is_refused_by_name(tmp_path, synthetic_cache):
    cfg = _cfg(synthetic_cache)
    run_node(Node("warmup", "warmup"), cfg, tmp_path / "warmup", {}, log=LOG)
    (tmp_path / "warmup" / "disc.pt").unlink()  # as a warm-up finished before discriminators were saved
    with pytest.raises(RuntimeError, match=r"node 'warmup\+'.*has no disc.pt.*delete that folder"):
        run_node(Node("extend", "warmup+", {"model": "warmup"}), cfg, tmp_path / "more",
                 {"model": tmp_path / "warmup"}, log=LOG)
