"""Where a from-scratch long fit finishes: the size its last epochs train at, and how many epochs
it has there and at the screen's size, from the time it has and its seconds per epoch by size.

Progressive resizing (fast.ai): the first epochs at the screen's small size, the rest at a
larger one, where the photos show more. Half and half at the largest size that holds
MIN_LONG_EPOCHS; short of that, a shorter finish at the next size up (`finish_epochs`).
"""

from __future__ import annotations

MIN_LONG_EPOCHS = 30  # a long fit finishes at the largest size that holds this many epochs
MIN_FINISH_EPOCHS = 8  # ...or, short of time, with at least these at the next size up
SMALL_FRACTION = 0.5  # of a from-scratch long fit's epochs, at the screen's size


def finish_epochs(
    speeds: dict[int, float],
    screen: int,
    size: int,
    seconds: float,
    pretrained: bool,
    short: bool = False,
) -> tuple[int, int] | None:
    """(epochs, epochs at the screen's size) of a long fit that finishes at SIZE in SECONDS, at
    SPEEDS (seconds per epoch by size), or None when it cannot hold MIN_LONG_EPOCHS there.

    From scratch, SMALL_FRACTION of the epochs run at the screen's size. With SHORT, a fit too
    short for that still finishes at SIZE if MIN_LONG_EPOCHS hold with at least
    MIN_FINISH_EPOCHS of them at SIZE, the rest at the screen's size: so a slightly slower
    reading of SIZE shortens its finish rather than dropping it (two seeds of one build scored
    0.901 finishing at 128 px and 0.877 kept at 96 px, where 128 px had read 2% too slow for
    half the epochs). A pretrained model trains at one size throughout."""
    if pretrained or size == screen:
        total = int(seconds // speeds[size])
        return (total, 0) if total >= MIN_LONG_EPOCHS or size == screen else None
    small, large = speeds[screen], speeds[size]
    total = int(seconds // (SMALL_FRACTION * small + (1 - SMALL_FRACTION) * large))
    if total >= MIN_LONG_EPOCHS:
        return total, round(total * SMALL_FRACTION)
    late = int((seconds - MIN_LONG_EPOCHS * small) // (large - small)) if large > small else 0
    if short and late >= MIN_FINISH_EPOCHS:
        return MIN_LONG_EPOCHS, MIN_LONG_EPOCHS - late
    return None


def long_schedule(
    plan, arch: str, screen_size: int, seconds: float, pretrained: bool
) -> tuple[int, int, int]:
    """(finish size, epochs, epochs at the screen's size) of ARCH's long fit in SECONDS: the
    largest size at which MIN_LONG_EPOCHS fit with SMALL_FRACTION of them at the screen's size;
    failing that, a short finish at the smallest larger size (`finish_epochs`); else as many
    epochs as the time holds at the screen's size."""
    speeds = {int(s): v for s, v in plan.long_speeds[arch].items()}
    larger = sorted((s for s in speeds if s > screen_size), reverse=True)
    for size in larger:
        got = finish_epochs(speeds, screen_size, size, seconds, pretrained)
        if got:
            return size, *got
    if larger and not pretrained:
        got = finish_epochs(speeds, screen_size, larger[-1], seconds, pretrained, short=True)
        if got:
            return larger[-1], *got
    return screen_size, max(int(seconds // speeds[screen_size]), 1), 0
