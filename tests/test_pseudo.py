"""The pseudo-label node's diagnostics: confident labels' accuracy, the share kept, every pixel's accuracy."""

import math

import torch
from torch import nn

from proda.data.stream import Split
from proda.method.pseudo import generate, pseudo_text


class Fixed(nn.Module):
    """Logits fixed per pixel (2 classes on a 1×4 image, stride 1), features = logits."""

    feat_channels = 2

    def __init__(self, logits):
        super().__init__()
        self.logits = logits  # (2, 1, 4)

    def forward(self, x):
        out = self.logits.expand(x.shape[0], -1, -1, -1)
        return {"out": out, "feat": out}


def test_generate_reports_confident_accuracy_share_kept_and_every_pixel_accuracy():
    # p(class 0) per pixel: 0.95 0.95 0.6 0.3 → argmax 0 0 0 1; the labels 0 1 1 1
    p0 = torch.tensor([0.95, 0.95, 0.6, 0.3])
    logits = torch.stack([p0.log(), (1 - p0).log()]).view(2, 1, 4)
    split = Split("t", 1, (1, 4), images=torch.zeros(1, 3, 1, 4, dtype=torch.uint8),
                  labels=torch.tensor([[[0, 1, 1, 1]]], dtype=torch.uint8))
    res = generate(Fixed(logits), split, 2, torch.device("cpu"), flip=False, threshold=0.9)
    assert math.isclose(float(res["kept"]), 0.5)  # pixels 0 and 1 reach 0.9
    assert math.isclose(float(res["accuracy"]), 0.5)  # of them, pixel 0 is right
    assert math.isclose(float(res["accuracy_all"]), 0.5)  # pixels 0 and 3 right of 4
    none = generate(Fixed(logits), split, 2, torch.device("cpu"), flip=False, threshold=0.99)
    assert float(none["kept"]) == 0 and math.isnan(float(none["accuracy"]))


def test_pseudo_text_says_what_the_accuracy_is_of():
    rec = {"pseudo_label_accuracy": 93.61, "pseudo_label_kept": 53.42, "pseudo_label_accuracy_all": 75.3,
           "pseudo_label_threshold": 0.9}
    assert pseudo_text(rec) == "label accuracy 93.61 % on the 53.4 % of pixels ≥ 0.9, 75.30 % on all"
    none = {**rec, "pseudo_label_accuracy": math.nan, "pseudo_label_kept": 0.0, "pseudo_label_accuracy_all": 61.0}
    assert pseudo_text(none) == "label accuracy 61.00 % on all pixels, none ≥ 0.9"
    unlabelled = {"pseudo_label_accuracy": math.nan, "pseudo_label_kept": math.nan,
                  "pseudo_label_accuracy_all": math.nan}
    assert pseudo_text(unlabelled) == "label accuracy not known (the split has no labels)"
    assert pseudo_text({"pseudo_label_accuracy": 80.0}) == "label accuracy 80.00 %"  # an older done.json
