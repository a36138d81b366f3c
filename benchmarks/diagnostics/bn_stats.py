"""How much of the domain shift do BatchNorm statistics carry? Source-only and warm-up models of a study
evaluated on target val as trained, and with their BN running statistics re-estimated on 400 source or
400 target training images (no training).

    python benchmarks/diagnostics/bn_stats.py        # PRODA_STUDY=runs/default

One-off diagnostic behind benchmarks/RESULTS.md ("bug or benchmark?", point 4).
"""

import os
import torch, copy
from pathlib import Path
from proda.ablation.results import load_plan
from proda.config import Config
from proda.data.stream import open_split, unit_float
from proda.data.augment import normalize
from proda.engine.nodes import load_model
from proda.engine.trainer import evaluate
torch.set_num_threads(2)
st=Path(os.environ.get("PRODA_STUDY", "runs/default")); plan=load_plan(st)
dev=torch.device("cpu")
for v in ("source-only","warmup"):
    row=[r for r in plan.rows if r.variant==v and r.seed==0][0]
    cfg=Config.from_dict(plan.nodes[row.nodes[0]].config)
    val=open_split(cfg,"target","val")
    base=load_model(cfg, st/"nodes"/row.nodes[0])
    res={"as trained": 100*evaluate(base,val,19,dev,100).miou()}
    for dom in ("source","target"):
        m=copy.deepcopy(base)
        for mod in m.modules():
            if isinstance(mod, torch.nn.BatchNorm2d): mod.reset_running_stats(); mod.momentum=None
        m.train(); sp=open_split(cfg,dom,"train")
        with torch.no_grad():
            for i in range(0, 400, 50):
                img,_=sp.get(torch.arange(i,i+50)); m(normalize(unit_float(img)))
        res[f"BN stats from {dom}"]=100*evaluate(m,val,19,dev,100).miou()
    print(v, {k: round(x,1) for k,x in res.items()})
