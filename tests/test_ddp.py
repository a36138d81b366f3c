"""DDP without Ray: 2 gloo processes agree on prototypes, EMA and weights, and match one process."""

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))


def _stage1(cfg, seed=0):
    from proda.data.stream import open_split
    from proda.engine.nodes import new_model
    from proda.method import stages

    torch.manual_seed(seed)
    model = new_model(cfg)
    tgt = open_split(cfg, "target", "train")
    g = torch.Generator().manual_seed(5)
    soft = torch.rand(tgt.size, 19, 16, 32, generator=g).softmax(1).half()  # p_{t,0} at the full image's output res
    protos = torch.randn(19, cfg.model.feat_channels, generator=g)
    return stages.Stage1(cfg, model, open_split(cfg, "source", "train"), tgt, soft, protos, torch.ones(19),
                         torch.device("cpu"), 0)


def _source_step(cache, rank_slice=slice(None)):
    """One source-only step on a fixed batch of 4 (this rank's slice of it), BN on running statistics."""
    from conftest import tiny_config
    from proda.data.stream import open_split
    from proda.engine.nodes import new_model
    from proda.method import stages

    torch.manual_seed(3)
    cfg = tiny_config(cache, "source-only")
    src = stages.SourceStage(cfg, new_model(cfg), open_split(cfg, "source", "train"), torch.device("cpu"), 0)
    src.model.eval()
    g = torch.Generator().manual_seed(9)
    x, y = torch.randn(4, 3, 48, 96, generator=g), torch.randint(0, 19, (4, 48, 96), generator=g)
    src.source_batch = lambda: (x[rank_slice], y[rank_slice])
    loss = src.micro_step(1)["total"].clone()
    return src, loss


def _worker(rank, world, init_file, cache, out_file):
    from conftest import tiny_config

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        cfg = tiny_config(cache, "pd+sl")
        # 1) several real stage-1 steps (train-mode BN, EMA, moving prototypes, SL): ranks must agree
        st = _stage1(cfg)
        for step in range(3):
            st.set_lr(step, 10)
            st.micro_step(1)
            st.optimizer_step()
            st.after_step()
        flat = torch.cat([p.detach().flatten() for p in st.model.parameters()])
        ema = torch.cat([p.flatten() for p in st.ema.parameters()])
        gathered = {}
        for name, t in (("params", flat), ("ema", ema), ("protos", st.bank.protos.flatten())):
            buf = [torch.zeros_like(t) for _ in range(world)]
            dist.all_gather(buf, t)
            gathered[name] = torch.stack(buf)
        # 2) one source step on a fixed global batch, half per rank, eval-mode BN: loss and update
        src, loss = _source_step(cache, slice(2 * rank, 2 * rank + 2))
        dist.all_reduce(loss)
        src.optimizer_step()
        if rank == 0:
            torch.save({**gathered, "loss": loss / world,
                        "weights": {k: v.clone() for k, v in src.model.state_dict().items()}}, out_file)
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_ranks_agree_and_match_one_process(tmp_path, synthetic_cache):
    from conftest import tiny_config
    from proda.data.stream import open_split

    cfg = tiny_config(synthetic_cache, "pd+sl")
    open_split(cfg, "source", "train"), open_split(cfg, "target", "train")  # generate the cache once, here
    out = tmp_path / "ddp.pt"
    mp.spawn(_worker, args=(2, str(tmp_path / "init"), synthetic_cache, str(out)), nprocs=2, join=True)
    res = torch.load(out, weights_only=True)
    for name in ("params", "ema", "protos"):
        assert torch.equal(res[name][0], res[name][1]), f"{name} differ across ranks"
    assert not torch.equal(res["protos"][0], _stage1(cfg).bank.protos.flatten()), "prototypes never moved"
    # the same global batch in one process
    src, loss = _source_step(synthetic_cache)
    src.optimizer_step()
    torch.testing.assert_close(res["loss"], loss, rtol=1e-5, atol=1e-6)
    for k, v in src.model.state_dict().items():
        torch.testing.assert_close(res["weights"][k], v, rtol=1e-4, atol=1e-6, msg=lambda m: f"{k}: {m}")
