"""The control row the paper lacks: the warm-up continued for as many steps as stage 1 (node ``warmup+``).

Every ProDA row after the warm-up trains for ``stage1.steps`` more steps with a fresh optimiser; this row
does the same with no ProDA component — the warm-up's own losses, a fresh optimiser of stage 1's type and
learning rate (``stage1.optimizer``, ``stage1.lr``, poly schedule over ``stage1.steps``; ``stage1.freeze_bn`` as
stage 1) — so each component's gain can be read against more training instead of against less. The adversarial
warm-up's discriminator is carried over from the warm-up (its weights; its optimiser starts afresh at
``warmup.disc_lr``, like the model's).
"""

from __future__ import annotations

from proda.method.stages import AdversarialWarmup, SourceStage


class _AsStage1:
    """The control trains as stage 1 does: its section is ``stage1`` (learning rate, optimiser, ``freeze_bn``)."""

    lr_field = "stage1"

    def micro_step(self, accum):
        self.freeze_bn()  # with stage1.freeze_bn, as in Stage1.micro_step
        return super().micro_step(accum)


class ContinuedSource(_AsStage1, SourceStage):
    """Source-only training continued with stage 1's learning rate."""

    name = "warmup+"


class ContinuedAdversarial(_AsStage1, AdversarialWarmup):
    """The adversarial warm-up continued with stage 1's learning rate and the warm-up's discriminator."""

    name = "warmup+"

    def __init__(self, cfg, model, source, target, device, seed, disc_state: dict):
        super().__init__(cfg, model, source, target, device, seed)
        self.disc.load_state_dict(disc_state)
