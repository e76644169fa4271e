"""The one way catdog writes to and reads from MLflow, one concern per module.

- `store`: which tracking store (URI) and which experiment.
- `tags`: every `catdog.*` tag key and run kind, defined once, and the environment tags.
- `runs`: a run's lifecycle: it always ends FINISHED, FAILED or KILLED.
- `runlog`: reading and writing one run by its id (params, metrics, tags, text, status).
- `queries`: finding runs by their tags (a sweep's runs, orphans, the latest sweep).
- `callbacks`: the Keras callback that logs each epoch (imports Keras; import it only to train).
- `artifacts`: figures, evaluations, datasets and models logged to the active run.
- `fitlog`: what every finished fit logs, in one place (`record_fit`).
- `modelstore`: the model registry: versions, aliases, the champion.
- `mlflow_fixes`: scoped work-arounds for MLflow bugs, each naming its upstream issue.

No autolog: params, per-epoch metrics (step = epoch), figures and models are logged through these
modules and only these, so nothing is logged twice.
"""
