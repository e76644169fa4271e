"""The `focus` strategy: a short screen, then most of the budget on one long fit of the winner.

    strategy = "focus"
    archs = ["resnet", "xception", "transfer"]
    image_size = 96                # the screen's size, and where a long fit starts
    image_sizes = [96, 128, 160]   # the sizes a long fit may finish at
    epochs = 6                     # each screening trial's epochs

A 42-minute CPU budget holds a few dozen short trials, and wide, short searches pay off only
with hundreds. One long, well-scheduled fit of one good configuration did better than the whole
race (0.876 val accuracy for a ResNet at 128 px and 60 cosine epochs, against 0.80 for the race).
So this strategy spends about a quarter of the budget screening each architecture's learning
rate and knobs at a small size (an equal-budget KerasTuner search per architecture, as
`compare`), and the rest on one fit of the configuration that won on validation:

- **as long as the budget allows**, with a cosine schedule over its whole length, so the fit's
  length comes from the time left, not from a short trial's early stopping;
- **progressively resized** (fast.ai): the first half at the screen's size, the rest at the
  largest size the time left holds `finish.MIN_LONG_EPOCHS` at (short of that, a shorter
  finish at the next size up: `finish.finish_epochs`); the residual and separable
  models end in global pooling, so their weights, and the optimizer's state, carry over to the
  larger input (the notebook's Flatten-headed models stay at the screen's size);
- for a pretrained backbone, **a frozen phase, then fine-tuning** of its top layers at a tenth
  of the rate;
- validated every epoch on the validation split, so its best epoch and whether flip TTA stays
  part of it are decided there, and its best score is the kept weights' score. It is a trial
  like the screen's (trial id `long`), and `catdog.choose` ranks it with them. It is
  checkpointed every epoch: a kill costs at most an epoch, and a resumed sweep goes on from
  there. No final fit on train+val follows: it could not be validated.

The plan is `plan.FocusPlan`; the long fit is `longfit`, its finish size `finish`, and whether
flip TTA stays part of its model `tta`.
"""

from __future__ import annotations

import time

from catdog.errors import CatdogError
from catdog.search.strategies import register
from catdog.search.strategies.base import measure_all
from catdog.search.strategies.compare import Compare
from catdog.search.strategies.focus.plan import FocusPlan, make_plan


@register
class Focus(Compare):
    name = "focus"
    note = (
        "a short equal-budget screen, then one long fit of the winner: the ranking's top "
        "row had far more training than the others, so it names the model to ship, not the "
        "best architecture at equal cost"
    )
    searches_size = True
    distributable = False
    final_fit = False
    plan_type = FocusPlan

    def check(self, cfg, role: str) -> None:
        super().check(cfg, role)
        if cfg.repeats:
            raise CatdogError(
                "repeats measure an equal-budget comparison, and the focus "
                "strategy spends its budget on one long fit; use strategy = "
                '"compare" for repeats'
            )

    def plan(self, cfg, splits_at, spaces: dict, spent: float) -> FocusPlan:
        t0 = time.monotonic()
        speeds, precisions = measure_all(cfg, spaces, splits_at(cfg.image_size))
        # The finish sizes are estimated by pixel count here and measured for the winner alone
        # when its long fit starts (`longfit.measure_finish_sizes`).
        long_speeds = {
            arch: {
                str(size): per_epoch * (size / cfg.image_size) ** 2
                for size in [cfg.image_size] + finish_sizes(cfg, arch)
            }
            for arch, (per_epoch, _) in speeds.items()
        }
        plan = make_plan(cfg, speeds, long_speeds, spent + time.monotonic() - t0)
        plan.precisions = precisions
        return plan

    def total_trials(self, ctx) -> int:
        return super().total_trials(ctx) + 1  # the long fit

    def after_search(self, ctx, results: dict[str, dict]) -> dict[str, dict]:
        from catdog.search.strategies.focus import longfit

        arch, found = longfit.run(ctx)
        return {**results, arch: found} if found else results


def finish_sizes(cfg, arch: str) -> list[int]:
    """The sizes larger than the screen's that ARCH's long fit may finish at: none for a model
    whose weights fit one size only."""
    from catdog import models

    entry = models.get(arch)
    if not entry.any_size:
        return []
    return [s for s in entry.sizes_within(cfg.sizes) if s > cfg.image_size]
