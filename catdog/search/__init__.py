"""The search: a sweep's run, its strategies, and the tuner that tracks every trial.

- `context`: the state a sweep's parts share, the objective, and the time-limit signal.
- `tuner`: the tracked KerasTuner tuner and the architecture hypermodel, at module level.
- `strategies`: one file per strategy (equal budgets, the race, ...), one registry.
- `records`: the sweep's own runs in MLflow (the architecture runs, the best-trial tags).
- `retrain`: after the search, the winner's final fit and each architecture's repeats.
- `sweep`: the run of a sweep, top to bottom: guards, data, plan, search, repeats, final fit.

Nothing is imported here, so a module below the sweep (`compare`, say) can read the strategy
registry without importing the sweep.
"""
