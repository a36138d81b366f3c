"""Are the hard pseudo labels where they belong? Agreement of the stage-1 hard labels in the weak view with
the ground truth replayed through the same view, on the full image, and of the warm-up model itself.

    python benchmarks/diagnostics/pseudo_alignment.py        # PRODA_STUDY=runs/default (a finished default study)

One-off diagnostic behind benchmarks/RESULTS.md ("bug or benchmark?", point 2); seed 0's `st` row.
"""

import os
import torch, torch.nn.functional as F
from pathlib import Path
from proda import checkpoint as ckpt
from proda.ablation.results import load_plan
from proda.config import Config
from proda.data.stream import open_split, to_device
from proda.data.augment import full_to_weak, weak_view, normalize
from proda.engine.nodes import load_model
from proda.method.stages import Stage1, resize
torch.set_num_threads(1)
st=Path(os.environ.get("PRODA_STUDY", "runs/default")); plan=load_plan(st)
row=[r for r in plan.rows if r.variant=="st" and r.seed==0][0]
wid, pid, sid = row.nodes[:3]
cfg=Config.from_dict(plan.nodes[sid].config)
model=load_model(cfg, st/"nodes"/wid)
pl=ckpt.load(st/"nodes"/pid/"pseudo.pt")
tgt=open_split(cfg,"target","train")
stage=Stage1(cfg, model, open_split(cfg,"source","train"), tgt, pl["soft"], pl["protos"], pl["counts"], torch.device("cpu"), 0)
K=19; agree=tot=agree_id=tot_id=0; macc=0; mt=0
for _ in range(10):
    idx, t_img, _ = stage.tgt.next()
    _, lab = tgt.get(idx)
    t_img, lab = to_device(t_img, lab, torch.device("cpu"))
    soft = stage.soft[idx].float()
    xw, pw = weak_view(t_img, cfg.data.crop, scale=cfg.data.crop_scale, generator=stage.gen)
    res=stage.res
    soft_w = full_to_weak(soft, pw, res)
    yhat = soft_w.max(1)[1]
    oh = F.one_hot(lab, K).permute(0,3,1,2).float()
    gt_w = full_to_weak(oh, pw, res).max(1)[1]
    agree += (yhat==gt_w).sum().item(); tot += yhat.numel()
    # identity: soft at full res vs GT downsampled
    gt_full = F.interpolate(oh, size=soft.shape[-2:], mode="area").max(1)[1]
    agree_id += (soft.max(1)[1]==gt_full).sum().item(); tot_id += gt_full.numel()
    with torch.no_grad():
        model.eval(); o = resize(model(normalize(xw))["out"], res).max(1)[1]
    macc += (o==gt_w).sum().item(); mt += o.numel()
    # consistency: model prediction on weak view vs yhat
print("pseudo vs GT in weak view:", agree/tot, " full image:", agree_id/tot_id, " model on weak view vs GT:", macc/mt)
