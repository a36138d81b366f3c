"""Can structure learning's consistency be met on the embedded benchmark? The seed-0 adversarial warm-up's
prototypical assignment z = softmax(−‖f − η‖/τ) (eq. 9) on the weak view, replayed into strong views drawn
from different op pools, against the same model's assignment on the strong view itself: per-pixel KL (what
SL's l_kl starts from), argmax agreement, and both sides' accuracy against the replayed ground truth.

    python benchmarks/diagnostics/sl_views.py STUDY        # a finished default study (its seed-0 warm-up)

One-off diagnostic behind benchmarks/RESULTS.md (issue 12, S8). 64 target-train images, one draw per pool.
"""

import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from proda.config import Config
from proda.data.augment import (GEOMETRIC_OPS, OFFICIAL_OPS, full_to_weak, normalize, strong_view,
                                weak_to_strong, weak_view)
from proda import checkpoint as ckpt
from proda.data.stream import eval_batches, open_split, to_device
from proda.engine.nodes import load_model
from proda.method.prototypes import proto_distances, proto_logits, proto_softmax
from proda.method.stages import resize

POOLS = {"official (FixMatch)": OFFICIAL_OPS,
         "geometric only": tuple(o for o in OFFICIAL_OPS if o in GEOMETRIC_OPS),
         "photometric only": tuple(o for o in OFFICIAL_OPS if o not in GEOMETRIC_OPS),
         "identity (flip + cutout)": ("identity",)}

torch.set_num_threads(2)
study = Path(sys.argv[1])
plan = json.loads((study / "plan.json").read_text())
wid, node = next((i, n) for i, n in plan["nodes"].items() if n["kind"] == "warmup" and n["config"]["seed"] == 0
                 and n["config"]["warmup"]["kind"] == "adversarial")
cfg = Config.from_dict(node["config"])
pid = next(i for i, n in plan["nodes"].items() if n["kind"] == "pseudo" and n["inputs"].get("model") == wid)
protos = ckpt.load(study / "nodes" / pid / "pseudo.pt")["protos"]  # the prototypes stage 1 starts from
model = load_model(cfg, study / "nodes" / wid).eval()
_, img, lab = next(iter(eval_batches(open_split(cfg, "target", "train"), 64)))
img, lab = to_device(img, lab, torch.device("cpu"))  # uint8 → float in [0, 1], int64 labels
tau, res = cfg.stage1.tau, (cfg.data.crop[0] // 4, cfg.data.crop[1] // 4)
with torch.no_grad():
    xw, pw = weak_view(img, cfg.data.crop, scale=cfg.data.crop_scale, generator=torch.Generator().manual_seed(0))
    z_t = proto_softmax(proto_distances(full_to_weak(model(normalize(img))["feat"].float(), pw, res), protos), tau)
    lab_w = full_to_weak(lab.float(), pw, res, mode="nearest").long()  # (n, h, w) ground truth in the weak frame
    print(f"seed-0 warm-up {wid}, tau {tau}, {img.shape[0]} target-train images, maps {res}")
    for name, ops in POOLS.items():
        xs, ps = strong_view(xw, generator=torch.Generator().manual_seed(1), ops=ops)
        zs_t, valid = weak_to_strong(z_t, ps)  # teacher replayed into the strong frame
        lab_s, _ = weak_to_strong(lab_w, ps, mode="nearest", fill=255)
        feat_s = resize(model(normalize(xs))["feat"], res).float()
        logz_s = F.log_softmax(proto_logits(proto_distances(feat_s, protos), tau), 1)
        kl = (torch.xlogy(zs_t, zs_t) - zs_t * logz_s).sum(1)  # (n, h, w)
        v = valid[:, 0]
        lv = v & (lab_s != 255)
        print(f"{name:26s} KL/pixel {kl[v].mean():.2f}  agreement {100 * (zs_t.argmax(1) == logz_s.argmax(1))[v].float().mean():5.1f} %"
              f"  teacher acc {100 * (zs_t.argmax(1) == lab_s)[lv].float().mean():5.1f} %"
              f"  strong-view acc {100 * (logz_s.argmax(1) == lab_s)[lv].float().mean():5.1f} %")
