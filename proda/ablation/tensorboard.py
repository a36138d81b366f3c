"""Every node's learning curves as TensorBoard event files in the study folder.

A Tune callback on the driver: it sees every result a node reports (its losses, images/s and lr at each log
step, mIoU and per-class IoU at each evaluation; :func:`proda.engine.trainer.run_stage`) and writes them with
tensorboardX — the writer Tune's own logger uses, a dependency of ``ray[tune]`` — to
``STUDY/tensorboard/<node>-<variants>-seed<k>-<id8>/`` (:func:`proda.ablation.scheduler.tensorboard_name`),
so ``tensorboard --logdir STUDY`` shows each node's curves under its name, with the optimiser step as x.
Tune's own TensorBoard logger is left out of the experiment (:func:`tune_loggers`): it would write every
trial a second time, under ``STUDY/tune/…``, and point the user at a folder under ``/tmp/ray/session_…``.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from ray.tune.logger import CSVLoggerCallback, JsonLoggerCallback, LoggerCallback
from ray.tune.result import AUTO_RESULT_KEYS

from proda.ablation.scheduler import tensorboard_name

# Tune's bookkeeping and the identity keys of a report: not curves
_NOT_CURVES = {*AUTO_RESULT_KEYS, "done", "step", "kind", "stage", "node_id", "trial_id", "experiment_tag",
               "should_checkpoint", "failed", "pseudo_label_threshold"}


class StudyTensorBoard(LoggerCallback):
    """One event file folder per node under ``STUDY/tensorboard/``; scalars named ``<kind>/<metric>``
    (``train/loss_ce``, ``train/images_per_s``, ``eval/miou``, ``eval/iou/road``, ``pseudo/pseudo_label_accuracy``)."""

    def __init__(self, study_dir: str | Path):
        self.root = Path(study_dir) / "tensorboard"
        self._writers: dict = {}  # trial → SummaryWriter, open while the trial runs

    def __getstate__(self) -> dict:  # Tune pickles its run config (tuner.pkl): no open writers in it
        return {"root": self.root, "_writers": {}}

    def log_trial_start(self, trial) -> None:
        from tensorboardX import SummaryWriter

        self.log_trial_end(trial)  # a retried or restored trial appends to its node's run
        self._writers[trial] = SummaryWriter(str(self.root / tensorboard_name(trial.config)), flush_secs=30)

    def log_trial_result(self, iteration: int, trial, result: dict) -> None:
        # the final report (done) repeats the last evaluation; a report without a kind is a verdict (failed)
        if result.get("done") or "kind" not in result:
            return
        if trial not in self._writers:
            self.log_trial_start(trial)
        # x: the stage's optimiser step; a pseudo-label node reports once, at its first iteration
        w, step = self._writers[trial], int(result.get("step", result.get("training_iteration", 1)))
        for k, v in result.items():
            if k in _NOT_CURVES or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if v != v:  # not a point of a curve: an evaluation column the reporter pads, an accuracy without labels
                continue
            w.add_scalar(f"{result['kind']}/{k}", v, global_step=step)
        w.flush()

    def log_trial_end(self, trial, failed: bool = False) -> None:
        w = self._writers.pop(trial, None)
        if w is not None:
            w.close()


def tune_loggers(study_dir: Path) -> list:
    """The experiment's loggers: Tune's CSV and JSON (``progress.csv``, ``result.json``: what
    ``ExperimentAnalysis`` reads) and :class:`StudyTensorBoard` instead of Tune's TensorBoard logger."""
    return [CSVLoggerCallback(), JsonLoggerCallback(), StudyTensorBoard(study_dir)]


@contextlib.contextmanager
def environ(key: str, value: str | None):
    """``os.environ[key] = value`` for the block (``None``: leave it as it is), restored after."""
    old = os.environ.get(key)
    if value is not None:
        os.environ[key] = value
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = old


def without_tune_tensorboard():
    """While Tune runs: it adds its own TensorBoard logger to the callbacks unless told not to add any
    default logger (our list has the other two; see :func:`tune_loggers`)."""
    return environ("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
