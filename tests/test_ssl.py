"""The ssl node (SimCLR on unlabelled images) and the students and warm-ups that start from it."""

import math

import pytest
import torch

from conftest import tiny_config
from proda import checkpoint as ckpt
from proda.chain import chain, node_id
from proda.engine.nodes import Node, _student, new_model, run_node
from proda.method.ssl import _hue, gaussian_blur, nt_xent, simclr_view


def _nt_xent_by_anchor(z1, z2, t):
    """NT-Xent written anchor by anchor, as in the SimCLR paper (the spec the batched one must match)."""
    z = torch.nn.functional.normalize(torch.cat([z1, z2]), dim=1)
    n2 = len(z)
    total = 0.0
    for i in range(n2):
        p = (i + n2 // 2) % n2
        den = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(n2) if k != i)
        total += -math.log(math.exp(float(z[i] @ z[p]) / t) / den)
    return total / n2


def test_nt_xent_equals_its_per_anchor_formula():
    g = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(5, 7, generator=g), torch.randn(5, 7, generator=g)
    assert float(nt_xent(z1, z2, 0.5)) == pytest.approx(_nt_xent_by_anchor(z1, z2, 0.5), rel=1e-5)


def test_nt_xent_of_random_embeddings_is_log_of_2n_minus_1():
    g = torch.Generator().manual_seed(1)
    n = 8  # in 8192 dimensions random directions are nearly orthogonal: every logit ≈ 0
    z1, z2 = torch.randn(n, 8192, generator=g), torch.randn(n, 8192, generator=g)
    assert float(nt_xent(z1, z2, 1.0)) == pytest.approx(math.log(2 * n - 1), abs=0.02)


def test_nt_xent_is_near_zero_for_identical_positives_and_orthogonal_negatives():
    n = 6
    z = torch.eye(n, 16)  # the two views of image i: e_i; other images: orthogonal
    for t in (0.5, 0.05):  # exactly log(1 + (2N − 2)·e^{−1/t})
        assert float(nt_xent(z, z.clone(), t)) == pytest.approx(math.log1p((2 * n - 2) * math.exp(-1 / t)), rel=1e-4, abs=1e-6)
    assert float(nt_xent(z, z.clone(), 0.05)) < 1e-6


def test_simclr_views_are_random_reproducible_and_in_range():
    x = torch.rand(6, 3, 32, 64, generator=torch.Generator().manual_seed(2))
    a = simclr_view(x, (16, 32), (0.2, 1.0), torch.Generator().manual_seed(3))
    b = simclr_view(x, (16, 32), (0.2, 1.0), torch.Generator().manual_seed(3))
    c = simclr_view(x, (16, 32), (0.2, 1.0), torch.Generator().manual_seed(4))
    assert a.shape == (6, 3, 16, 32) and 0 <= float(a.min()) and float(a.max()) <= 1
    assert torch.equal(a, b) and not torch.allclose(a, c)


def test_blur_keeps_a_constant_image_and_its_mean_and_hue_rotation_keeps_luma():
    x = torch.full((2, 3, 12, 12), 0.3)
    assert torch.allclose(gaussian_blur(x, torch.tensor([0.5, 2.0]), 5), x, atol=1e-6)
    y = torch.rand(2, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    blurred = gaussian_blur(y, torch.tensor([1.0, 3.0]), 5)
    assert blurred.std() < y.std() and torch.allclose(blurred.mean(), y.mean(), atol=0.02)
    y = 0.25 + 0.5 * y  # colours whose rotation stays inside [0, 1]
    luma = lambda v: (v * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)  # noqa: E731
    assert torch.allclose(_hue(y, torch.zeros(2)), y, atol=1e-5)
    rotated = _hue(y, torch.tensor([0.3, -0.2]))
    assert not torch.allclose(rotated, y, atol=1e-3) and torch.allclose(luma(rotated), luma(y), atol=1e-4)


def _ssl_cfg(cache, **kw):
    return tiny_config(cache, "proda", **{"ssl.steps": 4, "ssl.batch_size": 8, "ssl.view_size": [16, 32], **kw})


def test_ssl_node_resumes_bit_exactly_after_an_interruption(tmp_path, synthetic_cache):
    cfg = _ssl_cfg(synthetic_cache)
    spec, log = Node("ssl", "ssl"), (lambda s: None)
    straight = run_node(spec, cfg, tmp_path / "straight", {}, log=log)
    assert straight["kind"] == "ssl" and math.isfinite(straight["loss_ntxent"])
    stopped = run_node(spec, cfg, tmp_path / "cut", {}, log=log, stop_after=2)
    assert stopped["stopped_at"] == 2 and not (tmp_path / "cut" / "done.json").exists()
    resumed = run_node(spec, cfg, tmp_path / "cut", {}, log=log)
    assert resumed["loss_ntxent"] == straight["loss_ntxent"]
    a, b = (ckpt.load(tmp_path / d / "backbone.pt")["backbone"] for d in ("straight", "cut"))
    assert a.keys() == new_model(cfg).backbone.state_dict().keys()
    for k in a:
        assert torch.equal(a[k], b[k]), f"{k} differs after resume"
    assert not (tmp_path / "cut" / "checkpoint.pt").exists()


def test_ssl_node_never_reads_a_label(tmp_path, synthetic_cache, monkeypatch):
    from proda.engine import nodes

    opened = []
    real = nodes.open_split

    def spy(cfg, domain, split):
        s = real(cfg, domain, split)
        opened.append(s)
        return s

    monkeypatch.setattr(nodes, "open_split", spy)
    seen = []
    from proda.method import ssl

    real_init = ssl.SSLStage.__init__

    def init(self, cfg, backbone, source, target, device, seed):
        seen.extend([source, target])
        real_init(self, cfg, backbone, source, target, device, seed)

    monkeypatch.setattr(ssl.SSLStage, "__init__", init)
    run_node(Node("ssl", "ssl"), _ssl_cfg(synthetic_cache, **{"ssl.steps": 1}), tmp_path, {}, log=lambda s: None)
    assert [s.name for s in seen] == ["synthetic-source/train", "synthetic-target/train"]
    assert all(s.labels is None for s in seen)


def test_student_starts_from_the_ssl_backbone_with_a_fresh_head_not_as_its_teachers_copy(tmp_path, synthetic_cache):
    cfg = _ssl_cfg(synthetic_cache)
    assert cfg.distill.student_init == "ssl"  # the smoke (and synthetic) preset's student
    run_node(Node("ssl", "ssl"), cfg, tmp_path / "ssl", {}, log=lambda s: None)
    ssl_state = ckpt.load(tmp_path / "ssl" / "backbone.pt")["backbone"]
    torch.manual_seed(7)
    teacher = new_model(cfg)
    student = _student(cfg, teacher, tmp_path / "ssl")
    for k, v in student.backbone.state_dict().items():
        assert torch.equal(v, ssl_state[k]), k
    t_head, s_head = teacher.head.state_dict(), student.head.state_dict()
    assert any(not torch.equal(t_head[k], s_head[k]) for k in t_head)  # a fresh head, not the teacher's
    t_bb = teacher.backbone.state_dict()
    assert any(not torch.equal(t_bb[k], ssl_state[k]) for k in t_bb if t_bb[k].is_floating_point())
    with pytest.raises(ValueError, match="distill.student_init='ssl'.*no 'ssl' input"):
        _student(cfg, teacher, None)


def test_chains_take_the_ssl_node_where_they_start_from_it(synthetic_cache):
    proda = tiny_config(synthetic_cache, "proda")
    specs = {s.name: s for s in chain(proda)}
    assert list(specs)[0] == "ssl" and specs["warmup"].inputs == {}  # warm-ups start from scratch by default
    assert all(specs[f"distill{r}"].inputs["ssl"] == specs["ssl"].id for r in (1, 2))
    assert "ssl" not in {s.kind for s in chain(tiny_config(synthetic_cache, "pd+sl"))}  # no student, no ssl
    every = tiny_config(synthetic_cache, "pd+sl", **{"model.init": "ssl"})
    ssl, warmup = chain(every)[:2]
    assert [(ssl.name, ssl.inputs), (warmup.name, warmup.inputs)] == [("ssl", {}), ("warmup", {"ssl": ssl.id})]
    # the ssl node's id does not depend on model.init (no cycle: it is the node model.init points at)
    d0, d1 = proda.to_dict(), every.to_dict()
    assert node_id("ssl", d0, 0, {}) == node_id("ssl", d1, 0, {})
    assert node_id("warmup", d0, 0, {}) != node_id("warmup", d1, 0, {"ssl": node_id("ssl", d1, 0, {})})


def test_a_warmup_with_model_init_ssl_starts_from_the_ssl_backbone(tmp_path, synthetic_cache, monkeypatch):
    cfg = _ssl_cfg(synthetic_cache, **{"model.init": "ssl", "warmup.steps": 1})
    run_node(Node("ssl", "ssl"), cfg, tmp_path / "ssl", {}, log=lambda s: None)
    from proda.method import stages

    started = {}
    real = stages.AdversarialWarmup.__init__

    def init(self, cfg, model, *a):
        started.update({k: v.clone() for k, v in model.backbone.state_dict().items()})
        real(self, cfg, model, *a)

    monkeypatch.setattr(stages.AdversarialWarmup, "__init__", init)
    run_node(Node("warmup", "warmup", {"ssl": "ssl"}), cfg, tmp_path / "warmup", {"ssl": tmp_path / "ssl"},
             log=lambda s: None)
    ssl_state = ckpt.load(tmp_path / "ssl" / "backbone.pt")["backbone"]
    assert started.keys() == ssl_state.keys() and all(torch.equal(started[k], ssl_state[k]) for k in ssl_state)


def test_a_split_too_small_for_half_the_ssl_batch_names_ssl_batch_size(synthetic_cache):
    """ssl.batch_size=32 takes 16 images from each domain: 8 source images are too few, and the error names
    the field that sets that batch (not data.batch_size, which the ssl node does not read)."""
    from proda.data.stream import Split
    from proda.method.ssl import SSLStage

    cfg = _ssl_cfg(synthetic_cache, **{"ssl.batch_size": 32})
    small, big = (Split(name, n, (8, 16), images=torch.zeros(n, 3, 8, 16, dtype=torch.uint8)) for name, n in
                  (("gta5/train", 8), ("cityscapes/train", 40)))
    with pytest.raises(ValueError, match=r"^ssl\.batch_size: gta5/train has 8 images, too few for 16 per rank on "
                                         r"1 ranks \(lower ssl\.batch_size or give the split more images\)$"):
        SSLStage(cfg, new_model(cfg).backbone, small, big, torch.device("cpu"), seed=0)
