"""Whether flip test-time augmentation stays part of a long fit's model: a paired test on
validation, not a bare comparison of two figures."""

from __future__ import annotations

import numpy as np

from catdog import metrics

TTA_DROP_P = 0.05  # flip TTA is dropped only where it is worse than plain at this level


def keep_tta(labels, plain, flipped) -> tuple[bool, dict]:
    """Flip TTA stays part of the model unless it is worse than the plain model on validation
    beyond chance (McNemar's exact test, p < TTA_DROP_P); (keep, the figures).

    Requiring TTA to beat the plain model outright dropped it on noise: the plain figure is the
    best epoch's, picked on these very photos, so it is biased upward, while TTA's is measured
    once on the same weights. This release's four clean-clone sweeps saw TTA - plain of -0.4,
    +0.6, -0.8 and +0.1 points on 800 photos: a few photos each way."""
    truth = np.asarray(labels).astype(int)
    plain_right = metrics.predicted(plain) == truth
    tta_right = metrics.predicted(flipped) == truth
    test = metrics.mcnemar(plain_right, tta_right)
    figures = {"plain": float(plain_right.mean()), "tta": float(tta_right.mean()), **test}
    worse = figures["tta"] < figures["plain"] and test["p_value"] < TTA_DROP_P
    return not worse, figures
