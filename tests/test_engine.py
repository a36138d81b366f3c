"""The training loop: bit-exact resume, gradient accumulation, bf16 autocast, NaN detection, CLI."""

import json

import pytest
import torch

from conftest import tiny_config
from proda import checkpoint as ckpt
from proda.data.stream import open_split
from proda.engine.nodes import new_model
from proda.engine.trainer import NonFiniteLoss, Notice, run_stage
from proda.method import stages
from proda.train import main, run_chain


def _weights(path):
    return ckpt.load(path)["model"]


def test_run_stopped_at_any_step_and_resumed_is_bit_identical(tmp_path, synthetic_cache):
    cfg = tiny_config(synthetic_cache, "pd+sl")  # warm-up, pseudo labels, stage 1 with EMA + prototypes + SL
    log = lambda s: None  # noqa: E731
    run_chain(cfg, tmp_path / "straight", log=log)
    # interrupted twice: inside the warm-up (after 3 of 4 steps), then inside stage 1 (after 2 of 4)
    out = tmp_path / "interrupted"
    run_chain(cfg, out, log=log, stop_after_steps=3)
    assert not (out / "warmup" / "done.json").exists() and (out / "warmup" / "checkpoint.pt").exists()
    lines = []
    run_chain(cfg, out, resume=True, log=lines.append, stop_after_steps=3)  # warm-up finishes, stage 1 stops at 3
    assert (out / "warmup" / "done.json").exists() and not (out / "stage1" / "done.json").exists()
    # the resume line is a Notice: the runner prints it even when it keeps the step lines quiet
    assert [s for s in lines if isinstance(s, Notice)] == ["[warmup] resumed from step 3"]
    run_chain(cfg, out, resume=True, log=log)
    for node in ("warmup", "stage1"):
        a, b = _weights(tmp_path / "straight" / node / "model.pt"), _weights(out / node / "model.pt")
        assert a.keys() == b.keys()
        for k in a:
            assert torch.equal(a[k], b[k]), f"{node}: {k} differs after resume"
    pa = ckpt.load(tmp_path / "straight" / "pseudo0" / "pseudo.pt")
    pb = ckpt.load(out / "pseudo0" / "pseudo.pt")
    assert torch.equal(pa["soft"], pb["soft"]) and torch.equal(pa["protos"], pb["protos"])


def test_evaluation_interval_does_not_change_what_is_trained(tmp_path, synthetic_cache):
    """Evaluating is read-only (eval mode, no RNG drawn): a chain evaluated every step ends with the same
    weights, pseudo labels and final metrics as one evaluated only at the end of each stage."""
    log = lambda s: None  # noqa: E731
    run_chain(tiny_config(synthetic_cache, "pd+sl", **{"eval.interval": 1}), tmp_path / "often", log=log)
    run_chain(tiny_config(synthetic_cache, "pd+sl", **{"eval.interval": 1000}), tmp_path / "once", log=log)
    for node in ("warmup", "stage1"):
        a, b = _weights(tmp_path / "often" / node / "model.pt"), _weights(tmp_path / "once" / node / "model.pt")
        for k in a:
            assert torch.equal(a[k], b[k]), f"{node}: {k} differs with the evaluation interval"
        evals = [json.loads(ln) for ln in (tmp_path / "often" / "metrics.jsonl").read_text().splitlines()
                 if '"eval"' in ln and f'"{node}"' in ln]
        assert [e["step"] for e in evals] == [1, 2, 3, 4]  # every step was evaluated
        da, db = (json.loads((tmp_path / r / node / "done.json").read_text()) for r in ("often", "once"))
        assert da["miou"] == db["miou"]
    pa, pb = (ckpt.load(tmp_path / r / "pseudo0" / "pseudo.pt") for r in ("often", "once"))
    assert torch.equal(pa["soft"], pb["soft"])


def _fixed_source_stage(cfg, batch):
    torch.manual_seed(0)
    st = stages.SourceStage(cfg, new_model(cfg), open_split(cfg, "source", "train"), torch.device("cpu"), 0)
    st.model.eval()  # BN on running statistics, dropout off: the full-batch gradient is the mean of halves
    parts = iter(torch.chunk(batch[0], cfg.optim.grad_accum)), iter(torch.chunk(batch[1], cfg.optim.grad_accum))
    st.source_batch = lambda: (next(parts[0]), next(parts[1]))
    return st


def test_gradient_accumulation_equals_one_full_batch_step(synthetic_cache):
    torch.manual_seed(1)
    x, y = torch.randn(4, 3, 48, 96), torch.randint(0, 19, (4, 48, 96))
    results = []
    for accum in (1, 2):
        cfg = tiny_config(synthetic_cache, "source-only", **{"optim.grad_accum": accum})
        st = _fixed_source_stage(cfg, (x, y))
        for _ in range(accum):
            st.micro_step(accum)
        st.optimizer_step()
        results.append({k: v.clone() for k, v in st.model.state_dict().items()})
    moved = sum(float((results[0][k] - _fixed_source_stage(tiny_config(synthetic_cache, "source-only"), (x, y))
                       .model.state_dict()[k]).abs().sum()) for k in results[0])
    assert moved > 0
    for k in results[0]:
        torch.testing.assert_close(results[0][k], results[1][k], rtol=1e-4, atol=1e-6)


def test_bf16_autocast_runs_on_cpu_and_stays_close_to_fp32(synthetic_cache):
    torch.manual_seed(2)
    x, y = torch.randn(4, 3, 48, 96), torch.randint(0, 19, (4, 48, 96))
    losses = {}
    for amp in ("off", "bf16"):
        st = _fixed_source_stage(tiny_config(synthetic_cache, "source-only", **{"optim.amp": amp}), (x, y))
        losses[amp] = float(st.micro_step(1)["total"])
    assert abs(losses["bf16"] - losses["off"]) / losses["off"] < 0.05
    with pytest.raises(ValueError, match="optim.amp='fp16'"):
        _fixed_source_stage(tiny_config(synthetic_cache, "source-only", **{"optim.amp": "fp16"}), (x, y))


def test_nan_loss_stops_the_stage_naming_step_and_term(tmp_path, synthetic_cache):
    cfg = tiny_config(synthetic_cache, "source-only", log_interval=2, checkpoint_interval=100)
    st = stages.SourceStage(cfg, new_model(cfg), open_split(cfg, "source", "train"), torch.device("cpu"), 0)
    real = st.micro_step
    calls = {"n": 0}

    def poisoned(accum):
        out = real(accum)
        calls["n"] += 1
        if calls["n"] == 3:
            out["loss_src"] = torch.tensor(float("nan"))
        return out

    st.micro_step = poisoned
    with pytest.raises(NonFiniteLoss, match=r"stage 'source'.*'loss_src'.*step 4"):
        run_stage(st, 8, tmp_path, log=lambda s: None)  # NaN flags are checked at log steps: log_interval 2


def test_cli_runs_a_variant_and_writes_summary(tmp_path, synthetic_cache, capsys):
    out = tmp_path / "run"
    args = ["--variant", "source-only", "--preset", "smoke", "--out", str(out),
            "--set", f"data.source_root={synthetic_cache}", "--set", f"data.target_root={synthetic_cache}",
            "--set", "data.synthetic_scale=0.05", "--set", "warmup.steps=3", "--set", "eval.max_images=8"]
    assert main(args) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["stages"]) == {"warmup"}
    assert 0 <= summary["stages"]["warmup"]["miou"] <= 100 and len(summary["stages"]["warmup"]["iou"]) == 19
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert any(r["kind"] == "eval" for r in records) and any(r["kind"] == "train" for r in records)
    # the same folder again without --resume is refused; a typo in a field is named
    assert main(args) == 2
    assert "already holds a finished run" in capsys.readouterr().err
    assert main(["--variant", "st", "--out", str(tmp_path / "x"), "--set", "stage1.gama1=3"]) == 2
    assert "did you mean 'stage1.gamma1'" in capsys.readouterr().err


def test_cli_stop_after_splits_a_run_into_pieces_that_resume_to_the_same_weights(tmp_path, synthetic_cache, capsys):
    sets = ["--set", f"data.source_root={synthetic_cache}", "--set", f"data.target_root={synthetic_cache}",
            "--set", "data.synthetic_scale=0.05", "--set", "warmup.steps=5", "--set", "eval.max_images=8",
            "--set", "checkpoint_interval=100"]  # no periodic checkpoint: the stop writes its own
    base = ["--variant", "source-only", "--preset", "smoke", *sets]
    assert main([*base, "--out", str(tmp_path / "straight")]) == 0
    cut = tmp_path / "cut"
    assert main([*base, "--out", str(cut), "--stop-after", "2"]) == 0
    assert ckpt.load(cut / "warmup" / "checkpoint.pt")["step"] == 2 and not (cut / "summary.json").exists()
    assert main([*base, "--out", str(cut), "--resume", "--stop-after", "2"]) == 0  # steps 3–4
    assert ckpt.load(cut / "warmup" / "checkpoint.pt")["step"] == 4
    assert main([*base, "--out", str(cut), "--resume"]) == 0
    a, b = _weights(tmp_path / "straight" / "warmup" / "model.pt"), _weights(cut / "warmup" / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert main([*base, "--out", str(tmp_path / "x"), "--stop-after", "0"]) == 2
    assert "--stop-after 0: must be >= 1" in capsys.readouterr().err


def test_the_reporter_gets_the_learning_curve_at_every_log_step_and_every_evaluation(tmp_path, synthetic_cache):
    from proda.engine.nodes import Node, run_node

    cfg = tiny_config(synthetic_cache, "source-only", **{"eval.interval": 2})  # 4 steps, a log every 2
    seen = []
    run_node(Node("warmup", "warmup", {}), cfg, tmp_path / "w", {}, reporter=seen.append, log=lambda s: None)
    assert [(r["kind"], r["step"]) for r in seen] == [("train", 2), ("eval", 2), ("train", 4), ("eval", 4)]
    train = [r for r in seen if r["kind"] == "train"]
    assert all(r["images_per_s"] > 0 and r["lr"] > 0 and any(k.startswith("loss") for k in r) for r in train)
    assert all(0 <= r["miou"] <= 100 and len(r["iou"]) == 19 for r in seen if r["kind"] == "eval")
