"""Does the warm-up's target feature space support prototypical denoising? (issue 12, item 5)

    python benchmarks/centroid_probe.py --study runs/default [--tau 1.0] [--thresholds 0,0.9] [--check]

For every finished adversarial warm-up node of a study (and its pseudo-label node), on target train at the
model's output resolution, one JSON line: pixel accuracy of the warm-up's argmax (``classifier``: ST's hard
labels), of the nearest class centroid under the ground-truth labels (``nearest_gt_centroid``: the features
cluster by class when it beats ``classifier``; uses target labels, trains nothing), of ξ(ω ⊙ p_{t,0}) with the
prototypes PD starts from (``rectified``); each rule's ``mean_class_accuracy`` (mean per-class recall); per
frequent class (≥ 3 % of pixels) precision, recall and ``confident_precision`` (max p ≥ 0.9); the largest
``confusions``; and ``labels``: at each threshold, what ST's ξ(p_{t,0}) and PD's ξ(ω ⊙ p_{t,0}) keep (``kept``, %
of pixels), how many of those are ``right``, and the mean per-class share labelled right (``class_recall``).
Nothing here is used for training or model selection.

``--check`` adds issue 12's benchmark check (item 5) per warm-up, one ``check:`` line each, and exits 1 when any
fails: the nearest ground-truth centroid more accurate than the classifier (pixel accuracy: the warm-up's target
features cluster by class), and the warm-up's pseudo labels — every pixel's argmax, what the preset's ST trains
on — at least ``--min-precision`` (80) % right on every frequent class (precision; ≥ 3 % of the pixels).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402,F401  (proda from a checkout without installing)

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from proda import checkpoint as ckpt  # noqa: E402
from proda.config import Config  # noqa: E402
from proda.data.augment import normalize  # noqa: E402
from proda.data.classes import class_names  # noqa: E402
from proda.data.stream import eval_batches, open_split, to_device  # noqa: E402
from proda.engine.nodes import load_model  # noqa: E402
from proda.evaluation import ConfusionMatrix  # noqa: E402
from proda.method.prototypes import (CentroidAccumulator, hard_label, proto_distances, proto_softmax,  # noqa: E402
                                    rectify)


def _mean_class_accuracy(cm: ConfusionMatrix) -> float:
    """The mean over the classes present of each class's recall: accuracy with every class weighing the same
    (as in mIoU), so a rule without class priors (nearest centroid) is not judged by road and sky alone."""
    m = cm.mat.double()
    rows = m.sum(1)
    return round(100 * float((m.diag()[rows > 0] / rows[rows > 0]).mean()), 2)


def _label_stats(hard: torch.Tensor, lab: torch.Tensor, k: int, ignore: int = 255) -> dict:
    """Coverage, pixel accuracy of the kept pixels, and mean per-class recall over all of a class's pixels."""
    keep, valid = hard != ignore, lab < k
    right = (hard == lab) & keep & valid
    per_class = [float(right[lab == c].float().mean()) for c in range(k) if (lab == c).any()]
    return {"kept": round(100 * float(keep[valid].float().mean()), 1),
            "right": round(100 * float(right.sum() / (keep & valid).sum().clamp_min(1)), 1),
            "class_recall": round(100 * sum(per_class) / len(per_class), 1)}


@torch.inference_mode()
def probe(cfg: Config, model_dir: Path, pseudo_dir: Path | None, tau: float, batch: int = 100,
          thresholds: tuple[float, ...] = (0.0, 0.9)) -> dict:
    model = load_model(cfg, model_dir).eval()
    k = cfg.data.num_classes
    split = open_split(cfg, "target", "train")
    feats, probs, labels = [], [], []
    for _, img, lab in eval_batches(split, batch):
        img, lab = to_device(img, lab, torch.device("cpu"))
        o = model(normalize(img))
        feats.append(o["feat"].float())
        probs.append(o["out"].float().softmax(1))
        labels.append(F.interpolate(lab[:, None].float(), size=o["out"].shape[-2:], mode="nearest")[:, 0].long())
    feat, prob, lab = torch.cat(feats), torch.cat(probs), torch.cat(labels)  # (N,C,h,w) (N,K,h,w) (N,h,w)
    gt_centroids = CentroidAccumulator(k, feat.shape[1])
    gt_centroids.add(feat, lab)
    protos_gt, counts_gt = gt_centroids.compute()
    d = proto_distances(feat, protos_gt)  # (N, K, h, w)
    d[:, counts_gt == 0] = float("inf")
    cms = {name: ConfusionMatrix(k) for name in ("classifier", "nearest_gt_centroid", "rectified")}
    hard = prob.max(1)[1]
    cms["classifier"].update(hard, lab)
    cms["nearest_gt_centroid"].update(d.min(1)[1], lab)
    if pseudo_dir is not None:
        pl = ckpt.load(pseudo_dir / "pseudo.pt")
        omega = proto_softmax(proto_distances(feat, pl["protos"]), tau)
        y_hat, _ = rectify(prob, omega)
        cms["rectified"].update(y_hat, lab)
        soft = pl["soft"].float()  # p_{t,0} as stage 1 reads it (flip-averaged)
        labels = {f"{t:g}": {"st": _label_stats(hard_label(soft, t), lab, k),
                             "pd": _label_stats(rectify(soft, omega, threshold=t)[0], lab, k)} for t in thresholds}
    m = cms["classifier"].mat.double()
    share = m.sum(1) / m.sum()
    names = class_names(k)
    conf = ConfusionMatrix(k)  # the confident labels: ξ(p) where max p ≥ 0.9
    conf.update(hard_label(prob, 0.9), lab)
    mc = conf.mat.double()
    frequent = {names[c]: {"share": round(100 * float(share[c]), 1),
                           "precision": round(100 * float(m[c, c] / m[:, c].sum().clamp_min(1)), 1),
                           "recall": round(100 * float(m[c, c] / m[c].sum().clamp_min(1)), 1),
                           "confident_precision": (round(100 * float(mc[c, c] / mc[:, c].sum()), 1)
                                                   if mc[:, c].sum() > 0 else None)}  # None: no confident label
                for c in range(k) if share[c] >= 0.03}
    off = m.clone()
    off.fill_diagonal_(0)
    top = torch.topk(off.flatten(), 6)
    confusions = [f"{names[int(i) // k]}→{names[int(i) % k]} {100 * float(v / m.sum()):.1f}%"
                  for v, i in zip(top.values, top.indices)]
    out = {name: round(100 * cm.pixel_accuracy(), 2) for name, cm in cms.items() if cm.mat.sum() > 0}
    out["mean_class_accuracy"] = {name: _mean_class_accuracy(cm) for name, cm in cms.items() if cm.mat.sum() > 0}
    out["classifier_miou"] = round(100 * cms["classifier"].miou(), 2)
    out["frequent"] = frequent
    out["confusions"] = confusions
    if pseudo_dir is not None:
        out["labels"] = labels
    return out


def check(res: dict, min_precision: float = 80.0) -> list[str]:
    """Item 5's benchmark check on one :func:`probe` result: the failures, each one line (empty: it passes). The
    pseudo labels judged are every pixel's argmax, the labels the preset's stage 1 trains on (threshold 0, S1)."""
    fails = []
    if res["nearest_gt_centroid"] <= res["classifier"]:
        fails.append(f"nearest ground-truth centroid {res['nearest_gt_centroid']:.2f} % <= classifier "
                     f"{res['classifier']:.2f} % (pixel accuracy): the features do not cluster by class")
    for name, st in res["frequent"].items():
        if st["precision"] < min_precision:
            fails.append(f"{name}: pseudo labels {st['precision']:.1f} % right < {min_precision:g} %")
    return fails


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--study", type=Path, required=True)
    ap.add_argument("--tau", type=float, default=None, help="ω's temperature (default: the node config's stage1.tau)")
    ap.add_argument("--thresholds", default="0,0.9", help="thresholds of the hard labels' table (default 0,0.9)")
    ap.add_argument("--check", action="store_true", help="issue 12's benchmark check; exit 1 when it fails")
    ap.add_argument("--min-precision", type=float, default=80.0,
                    help="--check: the least %% right of the frequent classes' pseudo labels (default 80)")
    args = ap.parse_args()
    failed = False
    torch.set_num_threads(2)
    nodes = json.loads((args.study / "plan.json").read_text())["nodes"]
    done = lambda nid: (args.study / "nodes" / nid / "done.json").is_file()  # noqa: E731
    for nid, node in nodes.items():
        cfg = Config.from_dict(node["config"])
        if node["kind"] != "warmup" or cfg.warmup.kind != "adversarial" or not done(nid):
            continue
        pseudo = next((p for p, n in nodes.items()
                       if n["kind"] == "pseudo" and n["inputs"].get("model") == nid and done(p)), None)
        res = probe(cfg, args.study / "nodes" / nid, args.study / "nodes" / pseudo if pseudo else None,
                    args.tau if args.tau is not None else cfg.stage1.tau,
                    thresholds=tuple(float(t) for t in args.thresholds.split(",")))
        print(json.dumps({"node": nid, "seed": cfg.seed, "synthetic_seed": cfg.data.synthetic_seed, **res}), flush=True)
        if args.check:
            fails = check(res, args.min_precision)
            failed |= bool(fails)
            print(f"check: warm-up {nid} (seed {cfg.seed}, images {cfg.data.synthetic_seed}): "
                  + ("PASS" if not fails else "FAIL — " + "; ".join(fails)), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
