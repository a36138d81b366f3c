"""The small backbone's normalisation (``model.norm``): BatchNorm, or GroupNorm with no batch statistics."""

import pytest
import torch
from torch import nn

from proda.config import Config, ConfigError
from proda.models import build_model


def _small(norm: str):
    return build_model("small", 19, width=8, feat_channels=32, dilations=(1, 2), norm=norm)


def test_groupnorm_backbone_gives_the_same_features_in_train_and_eval_mode():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 32, 64) * torch.tensor([1.0, 2.0, 0.5, 3.0])[:, None, None, None] + 0.7
    for norm, same in (("gn", True), ("bn", False)):
        net = _small(norm).backbone
        with torch.no_grad():
            train = net.train()(x)
            evald = net.eval()(x)
        assert torch.allclose(train, evald, atol=1e-5) is same, norm  # bn: batch vs running statistics
    gn = _small("gn").backbone
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gn.modules())
    assert not list(gn.buffers())  # nothing a domain's batches could move


def test_norm_is_validated_and_only_for_the_small_backbone():
    assert Config.from_dict({"model": {"backbone": "small", "norm": "gn"}}).model.norm == "gn"
    with pytest.raises(ConfigError, match=r"model.norm='ln'"):
        Config.from_dict({"model": {"backbone": "small", "norm": "ln"}})
    with pytest.raises(ConfigError, match=r"model.norm='gn': 'gn' is for the small backbone"):
        Config.from_dict({"model": {"backbone": "resnet101", "norm": "gn"}})
