"""Runs an ablation plan on Ray: the study is one Tune experiment, each node a trial that runs a TorchTrainer (DDP).

Train V2 pattern: a Tune *function* trainable per node launches a ``TorchTrainer`` whose workers run
:func:`proda.engine.nodes.run_node`; ``TuneReportCallback`` forwards the workers' reports to Tune. A node of
one CPU worker runs in Train's local mode instead: inside the trial process, no worker group, reporting to
Tune directly (:func:`scaling`).
Node artifacts live in ``STUDY/nodes/<node_id>/`` (a path every worker can reach: local disk on one
machine, a shared file system such as NFS/EFS on a cluster); Tune/Train bookkeeping lives in
``STUDY/tune/``. The experiment's searcher (:mod:`proda.ablation.scheduler`) starts a node as soon as its
inputs are done — no barrier between chain positions. A node with ``done.json`` never runs again — that is how an
interrupted study resumes; the Tune experiment an interrupted driver left is restored with ``Tuner.restore``.
A node that raises is recorded at once by the process that caught the exception: its type and first line in
the node's ``error.json``, the full traceback in ``traceback.txt``; the driver copies the record into
``failed.json`` when the trial ends without ``done.json`` (after Tune's retries).
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from pathlib import Path
from typing import Any, Callable

from proda.ablation import study
from proda.ablation.grid import Plan
from proda.checkpoint import atomic_write


class StudyError(RuntimeError):
    """The study cannot start (storage, cluster, resources); the message says why in one line."""


# ---------------------------------------------------------------------------------------------
# code that runs on the Ray workers


def _flat(metrics: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in metrics.items():
        if isinstance(v, dict):
            out.update({f"{k}/{kk}": vv for kk, vv in v.items()})
        elif isinstance(v, (int, float, str, bool)):
            out[k] = v
    return out


def _train_worker(config: dict) -> None:
    """One Train worker (rank) of one node."""
    import ray.train
    import ray.tune
    import torch

    from proda.config import Config
    from proda.engine.nodes import run_node
    from proda.engine.trainer import NonFiniteLoss, Notice, eval_class_names

    torch.set_num_threads(config["threads"])
    study_dir, node = Path(config["study_dir"]), config["node"]
    node_dir = study.node_dir(study_dir, node.id)
    inputs = {role: study.node_dir(study_dir, up) for role, up in node.inputs.items()}

    # in Train's local mode the function runs inside the Tune trial, which takes tune.report
    report = ray.tune.report if config["local"] else ray.train.report

    def log(s: str) -> None:  # quiet (no --verbose): steps and evaluations are in the driver's live view;
        if not config.get("quiet") or isinstance(s, Notice):  # a Notice (e.g. a resume) is not
            print(f"[{node.id[:8]}] {s}", flush=True)

    # every report has the evaluation's columns (NaN until there is one): Tune's progress.csv takes its columns
    # from a trial's first report, a train step, and would drop mIoU and the per-class IoU of later ones
    cfg = Config.from_dict(node.config)
    columns = {"miou": math.nan, **{f"iou/{c}": math.nan for c in eval_class_names(cfg.data.num_classes)}}

    def reporter(metrics: dict) -> None:
        report({**columns, **_flat({**metrics, "node_id": node.id})})

    try:
        res = run_node(node, cfg, node_dir, inputs, reporter=reporter, resume=True,
                       metrics_log=node_dir / "metrics.jsonl", log=log)
    except NonFiniteLoss as e:  # deterministic: retrying cannot help; mark failed, stop this branch
        study.mark_failed(node_dir, study.record_error(node_dir, e), node.name)
        report({"failed": 1, "error": f"{type(e).__name__}: {e}", "node_id": node.id})
        return
    except Exception as e:  # recorded here, where the traceback is; Tune/Train retry the node (max_failures)
        study.record_error(node_dir, e)
        raise
    report({**columns, **_flat({**res, "node_id": node.id, "done": 1})})


def _node_trial(config: dict) -> None:
    """The Tune function trainable of one node: launches its TorchTrainer."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.tune.integration.ray_train import TuneReportCallback

    from proda.ablation import progress

    node = study.load_plan(config["study_dir"]).nodes[config["node_id"]]
    node_dir = study.node_dir(config["study_dir"], node.id)
    study.clear_error(node_dir)
    sc = config["scaling"]
    if config.get("quiet"):
        progress.quiet_trial_process()
    loop_config = {"node": node, "study_dir": config["study_dir"], "threads": sc["threads"], "local": sc["local"],
                   "quiet": config.get("quiet", False)}
    run_config = dict(name=f"node-{node.id}", storage_path=str(study.tune_dir(config["study_dir"]) / "train"))
    if sc["local"]:  # Train's local mode: the node runs in this (reused) trial process, no worker group
        trainer = TorchTrainer(_train_worker, train_loop_config=loop_config,
                               scaling_config=ray.train.ScalingConfig(num_workers=0),
                               run_config=ray.train.RunConfig(**run_config))
    else:
        trainer = TorchTrainer(
            _train_worker, train_loop_config=loop_config,
            scaling_config=ray.train.ScalingConfig(num_workers=sc["workers"], use_gpu=sc["gpus"] > 0,
                                                   resources_per_worker=sc["resources"]),
            run_config=ray.train.RunConfig(
                **run_config, failure_config=ray.train.FailureConfig(max_failures=config["max_failures"]),
                callbacks=[TuneReportCallback()]),
        )
    try:
        trainer.fit()
    except Exception as e:  # e.g. the worker group could not start; a worker's own error is already recorded
        if not study.has_error(node_dir):
            study.record_error(node_dir, e)
        raise


# ---------------------------------------------------------------------------------------------
# the driver


def probe_storage(study_dir: Path) -> None:
    """Fail at the start, not in hour three, when the study folder is not writable or the disk is full."""
    try:
        study_dir.mkdir(parents=True, exist_ok=True)
        probe = study_dir / ".write-probe"
        atomic_write(probe, lambda f: f.write(b"x" * 1024 * 1024))
        probe.unlink()
    except OSError as e:
        raise StudyError(f"--storage '{study_dir}': not writable ({e.strerror or e})") from None


def connect(address: str | None, timeout_s: float = 30.0) -> None:
    import ray

    if ray.is_initialized():
        return
    if address in (None, "") and os.environ.get("RAY_ADDRESS"):  # e.g. a `ray job submit` entrypoint
        address = os.environ["RAY_ADDRESS"]
    if address in (None, "", "local"):
        # address="local": a new Ray of our own — plain ray.init() silently joins a cluster that some
        # `ray start` left on this machine (and dies with its `ray stop`). The dashboard stays on: Ray
        # Train's placement-group cleaner queries the state API through it
        ray.init(address="local", log_to_driver=True, configure_logging=False, dashboard_host="127.0.0.1")
        return
    # fail within the timeout with the address named, instead of Ray's retries (ray.init on an address where
    # nothing listens retries for ever): first a plain TCP connect to the GCS port
    host, _, port = address.rpartition(":")
    if address != "auto" and "://" not in address and port.isdigit():
        try:
            socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s).close()
        except OSError as e:
            why = f"no answer within {timeout_s:g} s" if isinstance(e, TimeoutError) else e.strerror or type(e).__name__
            raise StudyError(f"--address {address}: no Ray cluster answers there ({why}; "
                             f"expected the head's GCS address, host:6379, or 'auto' on a cluster node)") from None
    os.environ.setdefault("RAY_gcs_rpc_server_connect_timeout_s", str(int(timeout_s)))
    os.environ.setdefault("RAY_gcs_rpc_server_reconnect_timeout_s", str(int(timeout_s)))
    t0 = time.monotonic()
    try:
        ray.init(address=address, log_to_driver=True, configure_logging=False)
    except Exception as e:  # noqa: BLE001 - one clear line
        raise StudyError(f"--address {address}: no Ray cluster answered within {time.monotonic() - t0:.0f} s "
                         f"({type(e).__name__})") from None


TRIAL_CPU = 0.01  # the Tune trial that drives a node's TorchTrainer (Tune refuses a zero request)


def scaling(workers: int, gpus_per_worker: float, cpus_per_worker: float, local: bool | None = None) -> dict:
    """How a node runs. ``local`` (default: one CPU worker) runs it in Train's local mode inside the
    trial process — a worker group costs ~15–25 s of process start-up per node on a small machine,
    more than a node of the embedded benchmark; several workers or GPUs always get a worker group."""
    if local is None:
        local = workers == 1 and gpus_per_worker == 0
    # the trial's share is taken from its workers' CPUs, so N trials of W workers fit N·W·cpus exactly
    res = {"CPU": round(cpus_per_worker - (0 if local else TRIAL_CPU / workers), 6)}
    if gpus_per_worker > 0:
        res["GPU"] = gpus_per_worker
    return {"workers": workers, "gpus": gpus_per_worker, "resources": res, "local": local,
            "threads": max(1, int(cpus_per_worker))}


def check_fits(sc: dict) -> int:
    """How many trials the cluster can run at once; an error when one trial can never fit."""
    import ray

    total = ray.cluster_resources()
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    extra = 0 if sc["local"] else TRIAL_CPU / sc["workers"]
    per_worker = {k: (v + extra if k == "CPU" else v) for k, v in sc["resources"].items()}
    fits_per_node = [min(int(n.get(k, 0) // v + 1e-9) if v > 0 else 10**6 for k, v in per_worker.items())
                     for n in nodes]
    capacity = sum(fits_per_node)
    if capacity < sc["workers"]:
        need = ", ".join(f"{v:g} {k}" for k, v in per_worker.items())
        have = ", ".join(f"{total.get(k, 0):g} {k}" for k in per_worker)
        raise StudyError(f"--workers-per-trial {sc['workers']} × ({need}) can never fit this cluster "
                         f"(it has {have} in all, room for {capacity} such workers)")
    return max(1, capacity // sc["workers"])


# ---------------------------------------------------------------------------------------------
# the DAG as one Tune experiment: a searcher hands out each node as soon as its inputs are done

def interrupted_experiment(plan: Plan, study_dir: Path) -> Path | None:
    """The Tune experiment a driver of this same plan, in this same folder, left unfinished (its
    ``tune/running.json`` is removed when an experiment ends); ``None`` when there is none to restore —
    e.g. the study's spec changed since (more seeds, another variant): its searcher would not know the new
    nodes, so a new experiment runs the unfinished ones, each from its own checkpoint."""
    from ray import tune

    m = study.read_running(study_dir)
    if m is None or not isinstance(m.get("name"), str):
        return None
    path = study.tune_dir(study_dir) / m["name"]
    return path if m == _running_marker(plan, study_dir, m["name"]) and tune.Tuner.can_restore(str(path)) else None


def _running_marker(plan: Plan, study_dir: Path, name: str) -> dict:
    """What ``tune/running.json`` holds while experiment ``name`` runs ``plan`` in ``study_dir``."""
    return {"name": name, "plan": _digest(sorted(plan.nodes)), "study_dir": str(study_dir)}


def run_dag(plan: Plan, study_dir: Path, sc: dict, concurrent: int, max_failures: int,
            log: Callable[[str], None], verbose: bool = False) -> None:
    """Every unfinished node of ``plan`` as one Tune experiment (one trial per node), restored when an
    earlier driver was interrupted while it ran. The driver shows :mod:`proda.ablation.progress`'s view;
    ``verbose``: Tune's own reporter and each node's log lines as well."""
    from ray import tune

    from proda.ablation import progress, scheduler, tensorboard

    todo = [i for i in plan.nodes if study.node_status(study_dir, i) != "done"]
    if not todo:
        return
    for i in todo:  # a node that failed before is tried again, and its branch with it
        study.retry(study.node_dir(study_dir, i))
    local = sc["local"]
    trainable = tune.with_resources(_node_trial, {"cpu": sc["resources"]["CPU"]} if local else {"cpu": TRIAL_CPU})
    exp_dir = study.tune_dir(study_dir)
    tuner = None
    path = interrupted_experiment(plan, study_dir)
    if path is not None:
        log(f"restoring the interrupted Tune experiment {path}")
        try:
            tuner = tune.Tuner.restore(str(path), trainable=trainable, resume_errored=True)
        except Exception as e:  # noqa: BLE001 - the nodes' own checkpoints still hold their progress
            log(f"could not restore {path} ({type(e).__name__}: {e}); a new Tune experiment runs the unfinished "
                f"nodes instead, each resuming from its own checkpoint")
    if tuner is None:
        name = stem = f"study-{_digest(sorted(todo))}"
        k = 1
        while (exp_dir / name).exists():  # a later run of the same nodes (e.g. retrying failed ones)
            k += 1
            name = f"{stem}-{k}"
        exp_dir.mkdir(parents=True, exist_ok=True)
        study.write_running(study_dir, _running_marker(plan, study_dir, name))
        base = {"study_dir": str(study_dir), "scaling": sc, "max_failures": max_failures, "quiet": not verbose}
        tuner = tune.Tuner(
            trainable,
            tune_config=tune.TuneConfig(search_alg=scheduler.NodeScheduler(plan, study_dir, todo, base),
                                        num_samples=len(todo), max_concurrent_trials=concurrent, reuse_actors=local,
                                        trial_name_creator=scheduler.trial_name,
                                        trial_dirname_creator=scheduler.trial_name),
            run_config=tune.RunConfig(name=name, storage_path=str(exp_dir), verbose=1 if verbose else 0,
                                      callbacks=[*tensorboard.tune_loggers(study_dir), progress.TuneFeed()],
                                      # local mode: Tune retries the trial (the node resumes from its checkpoint)
                                      failure_config=tune.FailureConfig(max_failures=max_failures if local else 0)),
        )
    view = progress.StudyProgress(plan, study_dir, todo, concurrent, write=log)
    with tensorboard.without_tune_tensorboard(), progress.tune_output(verbose), progress.shown(view):
        tuner.fit()
    study.clear_running(study_dir)
    for i in todo:  # e.g. a trial the restored experiment had finished before the kill, without its node
        if study.node_status(study_dir, i) not in ("done", "failed"):
            study.mark_unfinished(study.node_dir(study_dir, i), plan.nodes[i].name)


def _digest(ids: list[str]) -> str:
    from proda.config import stable_hash

    return stable_hash(ids, 8)


def check_inputs(plan: Plan) -> None:
    """The datasets of every node, checked on the driver before anything starts (one line on error)."""
    from proda.config import Config
    from proda.data.stream import check_data

    seen = set()
    for n in plan.nodes.values():
        key = json.dumps(n.config["data"], sort_keys=True)
        if key not in seen:
            seen.add(key)
            check_data(Config.from_dict(n.config))


def run_study(plan: Plan, study_dir: str | Path, *, address: str | None = None, workers_per_trial: int = 1,
              gpus_per_worker: float = 0.0, cpus_per_worker: float = 1.0, max_concurrent: int | None = None,
              max_failures: int = 2, local: bool | None = None, log: Callable[[str], None] = print,
              verbose: bool = False) -> Path:
    """Run every unfinished node of ``plan``, each as soon as its inputs are done; return the study folder.
    ``verbose``: Tune's own reporter and the nodes' log lines besides the live view."""
    study_dir = Path(study_dir).expanduser().resolve()
    check_inputs(plan)
    probe_storage(study_dir)
    study.write_plan(study_dir, plan)
    done_cost = sum(n.est_cost for n in plan.nodes.values() if study.node_status(study_dir, n.id) == "done")
    if done_cost >= plan.cost:
        log("every node of this study is already finished: nothing to run")
        return study_dir
    connect(address)
    sc = scaling(workers_per_trial, gpus_per_worker, cpus_per_worker, local)
    concurrent = check_fits(sc)
    if max_concurrent:
        concurrent = min(concurrent, max_concurrent)
    mode = "in the trial process (Train local mode)" if sc["local"] else "as a DDP worker group"
    log(f"running up to {concurrent} node(s) at once, {workers_per_trial} worker(s) each, {mode}")
    run_dag(plan, study_dir, sc, concurrent, max_failures, log, verbose)
    return study_dir


def run_study_local(plan: Plan, study_dir: str | Path, log: Callable[[str], None] = print) -> Path:
    """Run every unfinished node of ``plan`` in this process, in the order of their chain positions (no Ray): for
    benchmarks that compare against the Ray runner, and for machines without Ray. Same folder layout."""
    from proda.config import Config
    from proda.engine.nodes import run_node

    study_dir = Path(study_dir).expanduser().resolve()
    check_inputs(plan)
    probe_storage(study_dir)
    study.write_plan(study_dir, plan)
    for name in plan.positions:
        for node in plan.nodes_at(name):
            if study.node_status(study_dir, node.id) == "done":
                continue
            node_dir = study.node_dir(study_dir, node.id)
            if any(study.node_status(study_dir, up) != "done" for up in node.inputs.values()):
                study.mark_failed(node_dir, study.SKIPPED, name)
                continue
            study.retry(node_dir)  # failed before: tried again
            try:
                run_node(node, Config.from_dict(node.config), node_dir,
                         {role: study.node_dir(study_dir, up) for role, up in node.inputs.items()},
                         metrics_log=node_dir / "metrics.jsonl", log=lambda s, i=node.id: log(f"[{i[:8]}] {s}"))
            except Exception as e:  # noqa: BLE001 - as on Ray: the node fails, its branch is skipped, the rest runs
                rec = study.record_error(node_dir, e)
                study.mark_failed(node_dir, rec, name)
                log(f"[{node.id[:8]}] [{name}] FAILED: {rec['type']}: {rec['error']} "
                    f"(traceback: {node_dir / rec['traceback']})")
    return study_dir
