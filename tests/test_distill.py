"""The distillation stage (stages 2–3, l_KD of eq. 13) and its official-code option ``distill.strong_view``."""

import pytest
import torch

from conftest import tiny_config
from proda.data.augment import weak_to_strong
from proda.data.stream import open_split
from proda.engine.nodes import new_model
from proda.method import stages

K = 19


def _stage(cache, strong: bool):
    cfg = tiny_config(cache, "proda", **{"distill.strong_view": strong, "pseudo.threshold": 0.0})
    torch.manual_seed(0)
    student, teacher = new_model(cfg), new_model(cfg)
    tgt = open_split(cfg, "target", "train")
    soft = torch.rand(tgt.size, K, 16, 32, generator=torch.Generator().manual_seed(5)).softmax(1).half()
    return stages.DistillStage(cfg, student, teacher, open_split(cfg, "source", "train"), tgt, soft,
                               torch.device("cpu"), 0)


@pytest.mark.parametrize("strong", [False, True], ids=["paper", "official_strong_view"])
def test_student_and_teacher_see_one_view_and_the_hard_labels_follow_it(synthetic_cache, monkeypatch, strong):
    st = _stage(synthetic_cache, strong)
    seen = {}
    real_hard, real_ce, real_strong = stages.hard_label, stages.ce_loss, stages.strong_view

    def strong_view(x, generator=None):
        seen["weak"] = x.clone()
        seen["strong"], seen["params"] = real_strong(x, generator=generator)
        return seen["strong"], seen["params"]

    monkeypatch.setattr(stages, "hard_label", lambda *a: seen.setdefault("y_weak", real_hard(*a)))
    monkeypatch.setattr(stages, "ce_loss", lambda out, y: (seen.__setitem__("y", y), real_ce(out, y))[1])
    monkeypatch.setattr(stages, "strong_view", strong_view)
    inputs = {}
    st.model.register_forward_hook(lambda m, a, o: inputs.setdefault("student", []).append(a[0]))
    st.teacher.register_forward_hook(lambda m, a, o: inputs.setdefault("teacher", []).append(a[0]))
    losses = st.micro_step(1)
    assert all(torch.isfinite(v) for v in losses.values())
    # the student's second input is the target view (the first: the source batch), the teacher's its only one
    assert torch.equal(inputs["student"][1], inputs["teacher"][0])
    if not strong:
        assert "params" not in seen and torch.equal(seen["y"], seen["y_weak"])
        return
    assert not torch.equal(seen["strong"], seen["weak"])
    replayed, _ = weak_to_strong(seen["y_weak"].float(), seen["params"], mode="nearest", fill=255)
    assert torch.equal(seen["y"], replayed.long())  # ξ(p_t) replayed into the strong view, 255 outside it
    assert (seen["y"] == 255).any()  # the cutout (and what came from outside the weak view) carries no label
