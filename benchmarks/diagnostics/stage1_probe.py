"""Stage 1 from a study's warm-up model with one thing changed, evaluated every 50 steps on target val.

    python benchmarks/diagnostics/stage1_probe.py VARIANT MODE [field=value ...]   # PRODA_STUDY=runs/default

MODE: ``pl`` (the soft pseudo labels, as the study), ``gt`` (one-hot ground truth in their place: does the
path learn when the labels are right?), ``src`` (a source-only continuation with a fresh optimiser; set
``warmup.lr=...`` for its learning rate). Overrides are Python literals (``ast.literal_eval``; anything else
is taken as a string), e.g. ``stage1.lr=1e-4``, ``pseudo.threshold=0.0`` (the first default study's setting; the shipped preset thresholds at 0.9).
Starts from the row's warm-up and pseudo-label nodes, with the row's stage-1 config. One-off diagnostic behind benchmarks/RESULTS.md ("bug or benchmark?", points 1, 3, 5, 6).
"""

import argparse
import ast
import os
import torch, torch.nn.functional as F, tempfile
from pathlib import Path
from proda import checkpoint as ckpt
from proda.ablation.results import load_plan
from proda.config import Config
from proda.data.stream import open_split
from proda.engine.nodes import load_model
from proda.engine.trainer import run_stage, evaluate
from proda.method.stages import Stage1, SourceStage


def literal(text):
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text  # a bare word: a string field's value, e.g. stage1.regulariser=mrkld


def override(arg):
    field, sep, value = arg.partition("=")
    if not sep:
        raise argparse.ArgumentTypeError(f"override {arg!r}: expected field=value")
    return field, literal(value)


ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
ap.add_argument("variant")
ap.add_argument("mode", choices=("pl", "gt", "src"))
ap.add_argument("overrides", nargs="*", type=override, metavar="field=value")
args = ap.parse_args()
variant, mode, over = args.variant, args.mode, dict(args.overrides)
torch.set_num_threads(1)
st=Path(os.environ.get("PRODA_STUDY", "runs/default")); plan=load_plan(st)
row=[r for r in plan.rows if r.variant==variant and r.seed==0][0]
wid, pid, sid = row.nodes[:3]
d = plan.nodes[sid].config
cfg=Config.from_dict(d).override({"eval.interval": 50, "checkpoint_interval": 10**6, **over})
model=load_model(cfg, st/"nodes"/wid)
pl=ckpt.load(st/"nodes"/pid/"pseudo.pt")
tgt=open_split(cfg,"target","train"); src=open_split(cfg,"source","train"); val=open_split(cfg,"target","val")
soft = pl["soft"]
if mode == "gt":
    K=19; lab=tgt.labels.long()
    soft = F.interpolate(F.one_hot(lab, K).permute(0,3,1,2).float(), size=soft.shape[-2:], mode="area").half()
ckpt.seed_everything(1)
dev=torch.device("cpu")
print("start", 100*evaluate(model, val, 19, dev, 100).miou())
if mode == "src":
    stage = SourceStage(cfg, model, src, dev, 0)
else:
    stage=Stage1(cfg, model, src, tgt, soft, pl["protos"], pl["counts"], dev, 0)
with tempfile.TemporaryDirectory() as t:
    run_stage(stage, cfg.stage1.steps, Path(t), val, log=print)
