"""catdog's performance benchmark: where the time goes, as ratios measured within one run.

    python -m benchmarks [--data PATH] [--out benchmarks/results/bench.json] [--quick]
                         [--only ITEM ...] [--serve-model URI]
    make bench [DATA=path]

Run it from the repository root. DATA (default ../shared/data/dogs-vs-cats-mini beside the
repository) is anything `catdog` accepts: a prepared dataset, a zip or an unpacked folder
(prepared once under ./data/prepared). The bench prints a plain-text table and writes the same
figures as JSON to benchmarks/results/bench-<UTC timestamp>.json (or --out), with a copy named
latest.json beside it. `--quick` shrinks everything (a few hundred images, tiny sizes, 1-epoch
sweep trials) so a smoke test finishes in a few minutes; its numbers only show that every item
runs.

Items (each a function returning a dict; the table is rendered from those dicts):

1. ceiling     matmul GFLOP/s in float32, bfloat16 and float16 (unless absurdly slow)
2. pipeline    images/s of the input pipeline alone: catdog's first pass (decode+resize into
               the cache), catdog's cached passes, and the notebook's image_dataset_from_directory
3. training    training images/s of every architecture at its default size, fp32 and bf16, and
               achieved GFLOP/s (counted from Conv/SeparableConv/Depthwise/Dense layers,
               training = 3x forward for trainable layers) as a fraction of the ceiling
4. notebook    epoch 2 wall time (training + validation) of the notebook as written against
               catdog's bn_dropout at the same size, batch and seed; validation accuracy of each
5. sweep       a tracked random-search sweep (8 trials): per-trial peak RSS, time outside
               model.fit, and decodes per image
6. scaling     one epoch of `baseline` and its cache memory at 1/4, 1/2 and all of the train
               split, at two image sizes
7. time_to_accuracy  the notebook as written (256 px, 10 epochs, train+val -> test) sets a val
               accuracy; catdog's CPU sweep (experiments/cpu.toml, its own process) is timed
               until a trial epoch reaches it, then stopped: the ratio of the two times.
               About 35 minutes for the notebook and the sweep's time on top (see accuracy.py)
8. serving     `mlflow models serve` answering one-photo requests (200 at 8 concurrent, 1,000
               at 32): answers/s, p50/p99 latency and requests lost, with 1 and 2 workers, next
               to the same model's floor (predict_on_batch, a direct call, model.predict, on one
               photo in this process). The model is xception at 128 px trained for one epoch
               here, flip TTA on, or `--serve-model URI` (e.g. models:/catdog@champion from the
               project's store); `--only serving` runs it alone, in a few minutes (serving.py)

Every run is self-contained: MLflow logs to a sqlite file in a scratch directory (also the
working directory, so tuner state and caches land there) that is deleted at the end. Absolute
numbers drift with whatever else runs on the machine; compare the ratios, which are measured
within the same run. The sweep runs right after the ceiling so that its trials' peak RSS
(ru_maxrss, a process-wide high-water mark) is not hidden by the larger caches of later items.

On a shared box, every measurement also records "others": the share of the machine's CPU that
other processes used meanwhile (/proc/stat minus this process). Throughput is the fastest of
three runs of steps in its window, a window where others took over 25% is measured once more,
and the table flags what stayed disturbed with '!'.

Modules: `settings` (sizes of a full and a quick run), `probes` (clocks, CPU share, FLOP
counts, precision), `measure` (items 1-6), `accuracy` (item 7), `serving` (item 8), `targets`
(goals and verdicts), `render` (the table), `run` (the command line; `__main__` calls it).
"""
