"""The bench's fixed constants and the sizes of every item, for a full run and a quick one."""

from __future__ import annotations

from dataclasses import dataclass

SEED = 1337
BATCH = 32
WARMUP_STEPS = 4  # the first traces the train function; the others calibrate the timed window
SKIP_STEPS = 1  # steps at the start of a timed fit left out (iterator start-up)
CHUNKS = 3  # a timed window is cut into this many runs of steps; the fastest is reported
DISTURBED = 0.25  # other processes' CPU share above which a measurement is retried / flagged
CONV_FAMILIES = ("notebook", "vgg", "resnet", "xception")  # from scratch; `transfer` is frozen
NO_AUGMENT = {"augment": 0.0}


@dataclass(frozen=True)
class Settings:
    """Sizes of every item; FULL is the real bench, QUICK a smoke run."""

    quick: bool
    matmul_n: int
    matmul_reps: int
    matmul_budget_seconds: float
    pipeline_sizes: tuple[int, ...]  # ascending; the largest is the notebook's size
    arch_size: int | None  # None: each architecture's default size
    throughput_seconds: float  # timed window of one training-throughput measurement
    max_steps: int
    notebook_epochs: int
    sweep_trials: int  # per architecture
    sweep_epochs: int
    sweep_size: int
    scaling_sizes: tuple[int, ...]
    scaling_fractions: tuple[float, ...] = (0.25, 0.5, 1.0)
    quick_per_class: int = 0  # quick: train+val images per class in the subset
    # Time to accuracy: the notebook's fit that sets the target, and the sweep that chases it.
    accuracy_size: int = 256
    accuracy_epochs: int = 10
    accuracy_sweeps: tuple[tuple[str, tuple[str, ...]], ...] = (
        ("experiments/cpu.toml", ()),
        ("experiments/cpu-compare.toml", ()),
    )
    # Serving: the model trained to serve (unless serve_model names one), the loads sent to
    # `mlflow models serve` as (one-photo requests, concurrent clients), its worker counts.
    serve_arch: str = "xception"
    serve_size: int = 128
    serve_epochs: int = 1
    serve_sweep: str = "experiments/cpu.toml"  # whose fixed hyperparameters it is built with
    serve_tta: tuple[bool, ...] = (False, True)  # served without and with flip TTA
    serve_loads: tuple[tuple[int, int], ...] = ((200, 8), (1000, 32))
    serve_workers: tuple[int, ...] = (1, 2)
    serve_seconds: float = 120.0  # no request of a load is started after this long
    serve_model: str | None = None  # --serve-model: this model (in serve_store) instead
    serve_store: str | None = None

    @property
    def notebook_size(self) -> int:
        return max(self.pipeline_sizes)


FULL = Settings(
    quick=False,
    matmul_n=2048,
    matmul_reps=20,
    matmul_budget_seconds=8.0,
    pipeline_sizes=(128, 256),
    arch_size=None,
    throughput_seconds=15.0,
    max_steps=400,
    notebook_epochs=2,
    sweep_trials=4,
    sweep_epochs=2,
    sweep_size=64,
    scaling_sizes=(64, 128),
)
QUICK = Settings(
    quick=True,
    matmul_n=1024,
    matmul_reps=10,
    matmul_budget_seconds=1.0,
    pipeline_sizes=(32, 64),
    arch_size=48,
    throughput_seconds=1.0,
    max_steps=40,
    notebook_epochs=2,
    sweep_trials=2,
    sweep_epochs=1,
    sweep_size=32,
    scaling_sizes=(32, 48),
    quick_per_class=100,
    accuracy_size=64,
    accuracy_epochs=1,
    accuracy_sweeps=(("experiments/quick.toml", ("--arch", "baseline", "--budget", "2m")),),
    serve_arch="baseline",
    serve_size=32,
    serve_loads=((40, 4), (100, 8)),
    serve_workers=(1,),
    serve_seconds=60.0,
)
