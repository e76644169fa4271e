"""The search: a sweep's run, its strategies, and the tuner that tracks every trial.

- `context`: what a sweep's parts read (settings, identity, data, plan), read-only.
- `progress`: the sweep's progress, with one owner: trials done, time spent on the budget's
  clock; it saves and restores itself (`get_state`/`set_state`).
- `tuner`: the tracked KerasTuner tuners and the architecture hypermodels, at module level.
- `strategies`: one registry; `base` does the wiring, and each strategy is one file (`compare`,
  `best`) or one folder (`focus`: its plan, its long fit and the long fit's checkpoint).
- `runtree`: the sweep's own runs in MLflow, the tree over the trials: the parent's params,
  the architecture runs, the best-trial tags, the budget's account.
- `resume`: the sweep's lock, and the check that its tuner state matches the tracking store.
- `retrain`: after the search, the winner's final fit and each architecture's repeats.
- `sweep`: the run of a sweep, top to bottom: guards, data, plan, search, repeats, final fit.

Nothing is imported here, so importing one part does not import the sweep.
"""
