"""Import a released ProDA checkpoint into our DeepLab-v2-R101 by key mapping.

The official checkpoints are ``torch.load`` dicts ``{'ResNet101': {'model_state': ...}, 'objective_vectors':
(K, 256)}``; the model keys are ``conv1/bn1/layer1..4`` (torchvision ResNet names) and ``layer5`` (the
ASPP head ``Classifier_Module2``: ``conv2d_list.i.{0 conv,1 GN}``, ``bottleneck.{0 SE, 1 conv, 2 GN}``,
``head.1`` the classifier). Loading is weights-only.

Note: the official ResNet puts layer2's stride on the first 1×1 convolution (Caffe style) and pads its
max-pool with ``ceil_mode``, where torchvision strides the 3×3; the weights map one to one, the
activations differ slightly (docs/differences.md).
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from proda.checkpoint import CheckpointError, load, load_model_state
from proda.models.deeplabv2 import DeepLabV2

_HEAD_RULES = [
    (r"^layer5\.conv2d_list\.(\d+)\.(\d)\.", r"head.branches.\1.\2."),
    (r"^layer5\.bottleneck\.0\.se\.", "head.se.se."),
    (r"^layer5\.bottleneck\.1\.", "head.bottleneck.0."),
    (r"^layer5\.bottleneck\.2\.", "head.bottleneck.1."),
    (r"^layer5\.head\.1\.", "head.classifier."),
]


def official_key(key: str) -> str:
    """Our key for an official key (``module.`` prefixes dropped)."""
    key = key.removeprefix("module.")
    if key.startswith(("conv1.", "bn1.", "layer1.", "layer2.", "layer3.", "layer4.")):
        return "backbone." + key
    for pat, rep in _HEAD_RULES:
        if re.match(pat, key):
            return re.sub(pat, rep, key)
    raise CheckpointError(f"official checkpoint: key '{key}' has no counterpart in our DeepLab-v2 "
                          "(a bn_clr/SimCLR model or another architecture?)")


def import_official(model: DeepLabV2, path: str | Path) -> torch.Tensor | None:
    """Load an official ProDA checkpoint into ``model``; return its prototypes (K, C) if it has them."""
    state = load(path)
    try:
        model_state = state["ResNet101"]["model_state"]
    except (KeyError, TypeError):
        raise CheckpointError(f"official checkpoint '{path}': no ['ResNet101']['model_state'] entry") from None
    mapped = {official_key(k): v for k, v in model_state.items()}
    load_model_state(model, mapped, str(path))
    protos = state.get("objective_vectors")
    if protos is not None:
        protos = torch.as_tensor(protos).float()
        if protos.shape != (model.num_classes, model.feat_channels):
            raise CheckpointError(f"official checkpoint '{path}': objective_vectors has shape {tuple(protos.shape)}, "
                                  f"expected {(model.num_classes, model.feat_channels)}")
    return protos
