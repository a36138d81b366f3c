import re

import pytest
import torch

from proda.checkpoint import CheckpointError
from proda.models import build_model
from proda.models.official import import_official, official_key


def _to_official(ours: dict) -> dict:
    """Our state dict written in the official key layout (the inverse of official_key, by hand)."""
    out = {}
    for k, v in ours.items():
        if k.startswith("backbone."):
            ok = k[len("backbone."):]
        elif k.startswith("head.branches."):
            ok = re.sub(r"^head\.branches\.(\d+)\.(\d)\.", r"layer5.conv2d_list.\1.\2.", k)
        elif k.startswith("head.se.se."):
            ok = "layer5.bottleneck.0.se." + k[len("head.se.se."):]
        elif k.startswith("head.bottleneck.0."):
            ok = "layer5.bottleneck.1." + k[len("head.bottleneck.0."):]
        elif k.startswith("head.bottleneck.1."):
            ok = "layer5.bottleneck.2." + k[len("head.bottleneck.1."):]
        elif k.startswith("head.classifier."):
            ok = "layer5.head.1." + k[len("head.classifier."):]
        else:
            raise AssertionError(k)
        out["module." + ok] = v.clone()
    return out


def test_official_checkpoint_imports_by_key_mapping(tmp_path):
    torch.manual_seed(0)
    # resnet50 has the same key layout as the official R101 (fewer blocks), and builds faster
    src = build_model("resnet50", 19)
    for p in src.head.parameters():
        p.data.normal_()
    protos = torch.randn(19, 256)
    path = tmp_path / "official.pkl"
    torch.save({"ResNet101": {"model_state": _to_official(src.state_dict()), "optimizer_state": {}},
                "objective_vectors": protos}, path)
    dst = build_model("resnet50", 19)
    got = import_official(dst, path)
    assert torch.equal(got, protos)
    for k, v in src.state_dict().items():
        assert torch.equal(dst.state_dict()[k], v), k
    assert official_key("layer4.2.bn3.running_mean") == "backbone.layer4.2.bn3.running_mean"


def test_official_checkpoint_with_other_class_count_is_refused(tmp_path):
    src = build_model("resnet50", 16)
    path = tmp_path / "official16.pkl"
    torch.save({"ResNet101": {"model_state": _to_official(src.state_dict())}}, path)
    with pytest.raises(CheckpointError, match="class count"):
        import_official(build_model("resnet50", 19), path)


def test_unknown_official_key_is_named():
    with pytest.raises(CheckpointError, match="bn_pretrain"):
        official_key("bn_pretrain.weight")
