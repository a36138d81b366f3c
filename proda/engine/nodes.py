"""Stage nodes: the chain of a variant, and running one node with its artifacts in a folder.

A variant's chain is derived from its config (:func:`proda.chain.chain`): (``ssl``) → ``warmup`` →
(``warmup+``) → (``pseudo0`` → ``stage1``) → (``pseudoR`` → ``distillR``) × rounds. A node reads its
upstream nodes' folders and writes its own: ``model.pt`` (final weights; the adversarial warm-up also
``disc.pt``, its discriminator), ``backbone.pt`` (ssl nodes), ``pseudo.pt`` (pseudo-label nodes),
``checkpoint.pt`` while running, and ``done.json`` (final metrics) last — a node with ``done.json`` is
complete and never runs again.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any, Callable

import torch

from proda.chain import NODE_SECTIONS, Node, chain  # noqa: F401 - re-exported
from proda.config import Config
from proda import checkpoint as ckpt
from proda import distributed as ddp
from proda.data.stream import open_split
from proda.engine.folder import DONE, is_done, read_done, write_json
from proda.engine.trainer import Reporter, run_stage
from proda.models import DeepLabV2, build_model

def device_of(cfg: Config) -> torch.device:
    if cfg.device == "cpu" or (cfg.device == "auto" and not torch.cuda.is_available()):
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise ValueError("device='cuda': no CUDA device is available")
    return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))


def new_model(cfg: Config) -> DeepLabV2:
    m = cfg.model
    return build_model(m.backbone, cfg.data.num_classes, pretrained=m.pretrained, dilations=m.dilations,
                       feat_channels=m.feat_channels, dropout=m.dropout, image_branch=m.image_branch,
                       squeeze_excite=m.squeeze_excite, width=m.width, output_stride=m.output_stride,
                       norm=m.norm)


def load_model(cfg: Config, node_dir: Path) -> DeepLabV2:
    model = new_model(cfg)
    path = node_dir / "model.pt"
    ckpt.load_model_state(model, ckpt.load(path)["model"], str(path))
    return model


def load_ssl_backbone(model: DeepLabV2, ssl_dir: Path) -> None:
    """Start ``model``'s backbone from an ssl node's weights (its head stays as built: fresh)."""
    path = ssl_dir / "backbone.pt"
    ckpt.load_model_state(model.backbone, ckpt.load(path)["backbone"], str(path))


def _unlabelled(split):
    """The split without its labels (the in-memory embedded benchmark holds them): ssl never reads any."""
    return dataclasses.replace(split, labels=None) if split.images is not None else split


def run_node(node: Node, cfg: Config, out_dir: str | Path, inputs: dict[str, str | Path],
             reporter: Reporter | None = None, resume: bool = True, log: Callable[[str], None] = print,
             metrics_log: Path | None = None, stop_after: int | None = None) -> dict[str, Any]:
    """Run one node; ``inputs`` maps each role of ``node.inputs`` to the upstream node's folder.

    Returns the node's final metrics (also in ``out_dir/done.json``). A finished node returns its
    stored metrics at once.
    """
    out_dir = Path(out_dir)
    if is_done(out_dir):
        done = read_done(out_dir)
        if done is None:
            raise RuntimeError(f"{out_dir / 'done.json'}: not a JSON object; delete the node folder to rerun it")
        return done
    out_dir.mkdir(parents=True, exist_ok=True)
    device = device_of(cfg)
    ins = {k: Path(v) for k, v in inputs.items()}
    for role, d in ins.items():
        if not is_done(d):
            raise RuntimeError(f"node '{node.name}': its input '{role}' ({d}) is not complete")
    # distinct, reproducible seeds per node kind
    seed = cfg.seed * 1000 + {"warmup": 1, "pseudo": 2, "stage1": 3, "distill": 4, "ssl": 5, "extend": 6}[node.kind] * 10
    ckpt.seed_everything(seed)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
    val = open_split(cfg, "target", "val")
    common = dict(reporter=reporter, resume=resume, log=log, metrics_log=metrics_log, stop_after=stop_after,
                  stage_name=node.name)
    from proda.method import stages  # noqa: PLC0415 - keeps `import proda.engine` light

    if node.kind == "pseudo":
        from proda.method.pseudo import generate, pseudo_text  # noqa: PLC0415

        model = load_model(cfg, ins["model"]).to(device)
        res = generate(model, open_split(cfg, "target", "train"), cfg.data.num_classes, device,
                       flip=cfg.pseudo.flip, batch_size=cfg.eval.batch_size, threshold=cfg.pseudo.threshold)
        if ddp.is_main():
            ckpt.save(out_dir / "pseudo.pt", {k: res[k] for k in ("soft", "protos", "counts")})
        result = {"stage": node.name, "kind": "pseudo", "pseudo_label_accuracy": 100 * float(res["accuracy"]),
                  "pseudo_label_kept": 100 * float(res["kept"]), "pseudo_label_threshold": cfg.pseudo.threshold,
                  "pseudo_label_accuracy_all": 100 * float(res["accuracy_all"]),
                  "classes_without_prototype": int((res["counts"] == 0).sum())}
        log(f"[{node.name}] pseudo labels on target train: {pseudo_text(result)}")
        if reporter is not None:
            reporter(result)
    elif node.kind == "ssl":
        from proda.method.ssl import SSLStage  # noqa: PLC0415

        stage = SSLStage(cfg, new_model(cfg).backbone, _unlabelled(open_split(cfg, "source", "train")),
                         _unlabelled(open_split(cfg, "target", "train")), device, seed)
        last = run_stage(stage, cfg.ssl.steps, out_dir, **common)
        if "stopped_at" in last:
            return last
        if ddp.is_main():
            ckpt.save(out_dir / "backbone.pt", {"backbone": stage.backbone.state_dict()})
        result = {"stage": node.name, "kind": "ssl", "loss_ntxent": float(stage.last_loss)}
        log(f"[{node.name}] SimCLR pretraining done: NT-Xent {result['loss_ntxent']:.4f}")
    else:
        source = open_split(cfg, "source", "train")
        target = open_split(cfg, "target", "train")
        if node.kind == "warmup":
            model = new_model(cfg)
            if cfg.model.init == "ssl":
                load_ssl_backbone(model, ins["ssl"])
            if cfg.warmup.kind == "source":
                stage = stages.SourceStage(cfg, model, source, device, seed)
            else:
                stage = stages.AdversarialWarmup(cfg, model, source, target, device, seed)
            steps = cfg.warmup.steps
        elif node.kind == "extend":
            from proda.method import control  # noqa: PLC0415

            model = load_model(cfg, ins["model"])
            if cfg.warmup.kind == "source":
                stage = control.ContinuedSource(cfg, model, source, device, seed)
            else:
                disc = ins["model"] / "disc.pt"
                if not disc.is_file():
                    raise RuntimeError(f"node '{node.name}': its warm-up '{ins['model']}' has no disc.pt (it finished "
                                       f"before warm-ups saved their discriminator); delete that folder to retrain it")
                stage = control.ContinuedAdversarial(cfg, model, source, target, device, seed, ckpt.load(disc)["disc"])
            steps = cfg.stage1.steps
        elif node.kind == "stage1":
            model = load_model(cfg, ins["model"])
            pl = ckpt.load(ins["pseudo"] / "pseudo.pt")
            stage = stages.Stage1(cfg, model, source, target, pl["soft"], pl["protos"], pl["counts"], device, seed)
            steps = cfg.stage1.steps
        elif node.kind == "distill":
            teacher = load_model(cfg, ins["teacher"])
            student = _student(cfg, teacher, ins.get("ssl"))
            pl = ckpt.load(ins["pseudo"] / "pseudo.pt")
            stage = stages.DistillStage(cfg, student, teacher, source, target, pl["soft"], device, seed)
            steps = cfg.distill.steps
        else:
            raise ValueError(f"unknown node kind '{node.kind}'")
        last = run_stage(stage, steps, out_dir, val, **common)
        if "stopped_at" in last:
            return last
        if ddp.is_main():
            ckpt.save(out_dir / "model.pt", {"model": stage.eval_model.state_dict()})
            if node.kind == "warmup" and hasattr(stage, "disc"):  # for the warm-up's continuation (warmup+)
                ckpt.save(out_dir / "disc.pt", {"disc": stage.disc.state_dict()})
        result = {"stage": node.name, "kind": node.kind, **last}
    if ddp.is_main():
        write_json(out_dir / DONE, result, indent=1)
        (out_dir / "checkpoint.pt").unlink(missing_ok=True)
    ddp.barrier()
    return result


def _student(cfg: Config, teacher: DeepLabV2, ssl_dir: Path | None = None) -> DeepLabV2:
    """The distillation student, its head always fresh: its backbone from the seed's ssl node
    (``distill.student_init="ssl"``) or from a self-supervised checkpoint file (a path) when given; else
    ImageNet weights from ``model.pretrained``; else, when neither exists, the teacher's weights (the
    official code's ``student_init=stage1``, and ``"teacher"``)."""
    init = cfg.distill.student_init
    student = new_model(cfg)
    if init == "ssl":
        if ssl_dir is None:
            raise ValueError("distill.student_init='ssl': the distillation node has no 'ssl' input")
        load_ssl_backbone(student, ssl_dir)
    elif init and init != "teacher":
        from proda.models.backbones import load_backbone_weights  # noqa: PLC0415

        load_backbone_weights(student.backbone, init)
    elif init == "teacher" or not cfg.model.pretrained:
        student.load_state_dict(teacher.state_dict())
    return student
