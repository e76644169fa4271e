"""How TensorFlow runs here: a quiet start, the devices, numeric precision and the distribution
strategy, and memory between trials.

Precision and strategy are chosen explicitly (or by `auto` from what the hardware supports) and
logged as params, so a faster setting never changes results silently.
"""

from __future__ import annotations

import os
import sys
import tempfile

from catdog.errors import CatdogError
from catdog.log import get_logger, verbose_requested

log = get_logger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
DEVICES = ("any", "gpu")  # a sweep file's `device`: train on what TensorFlow sees, or on a GPU
# Comma-separated device names to mirror training across instead of every visible GPU.
MIRRORED_DEVICES = "CATDOG_MIRRORED_DEVICES"
_POLICY = {"fp32": "float32", "bf16": "mixed_bfloat16", "fp16": "mixed_float16"}
_started = False
_announced = False


def start(verbose: bool | None = None) -> None:
    """Import TensorFlow and Keras once, quietly, and configure catdog's own output.

    Call it before anything imports TensorFlow, in every entry point (the CLI, the benchmark, the
    serving model). TF 2.21's C++ start-up lines (oneDNN banners, "Could not find cuda drivers",
    "failed call to cuInit ... (303)" on a machine without a GPU) are written before its logging
    is initialised, so TF_CPP_MIN_LOG_LEVEL does not hide them (tensorflow#100442): they go to a
    scratch file instead of the terminal while TensorFlow loads and looks for devices. With
    `verbose` (CATDOG_VERBOSE=1, `catdog --verbose`) TensorFlow logs as it always does.
    """
    global _started
    if _started:
        return
    verbose = verbose_requested() if verbose is None else verbose
    if verbose or "tensorflow" in sys.modules:
        _import_tensorflow()
    else:
        # Later C++ lines too (grappler's "remapper failed" on some models); --verbose shows them.
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        _import_tensorflow_quietly()
    _started = True
    _quiet_python_logs(verbose)


def quiet_env(verbose: bool | None = None) -> dict[str, str]:
    """Environment for a child process (a distributed sweep's chief, workers and tracking server):
    TensorFlow's C++ logging down to errors, as `start` sets it here, unless verbose or set."""
    verbose = verbose_requested() if verbose is None else verbose
    if verbose:
        return {}
    return {"TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")}


def _import_tensorflow_quietly() -> None:
    """Import with fd 2 pointed at a scratch file; if the import fails, what TensorFlow wrote
    there is the explanation, so it is shown before the error."""
    global _startup_log
    try:
        sys.stderr.flush()
        scratch = tempfile.TemporaryFile()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreter): nothing to hide
        _import_tensorflow()
        return
    with scratch:
        os.dup2(scratch.fileno(), 2)
        failed = True
        try:
            _import_tensorflow()
            failed = False
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            scratch.seek(0)
            _startup_log = scratch.read().decode(errors="replace")
            if failed:
                sys.stderr.write(_startup_log)


_startup_log = ""  # what TensorFlow printed while starting, kept for announce_devices


def _import_tensorflow() -> None:
    import importlib

    importlib.import_module("keras")  # Keras 3 loads TensorFlow's second batch of libraries
    import tensorflow as tf

    tf.config.list_physical_devices("GPU")  # CUDA initialises (and complains) here


def _quiet_python_logs(verbose: bool) -> None:
    """catdog prints its own per-epoch and per-trial lines; silence the duplicates and noise."""
    import warnings

    import keras
    import tensorflow as tf

    keras.config.disable_interactive_logging()  # no progress bars from predict() calls
    if verbose:
        return
    tf.get_logger().setLevel("ERROR")  # retracing notices when trials rebuild models
    warnings.filterwarnings("ignore", message=".*`shuffle=True` was passed.*")
    warnings.filterwarnings("ignore", message=".*dataset source can be interpreted.*")
    warnings.filterwarnings("ignore", message=".*Inferred schema contains integer column.*")


def announce_devices() -> str:
    """Say once, in catdog's words, what training runs on ("no GPU found; training on 2 CPU
    cores"), instead of TensorFlow's CUDA errors."""
    global _announced
    found = gpus()
    if found:
        names = ", ".join(d.name.split("physical_device:")[-1] for d in found)
        text = f"training on {len(found)} GPU(s): {names}"
    else:
        text = f"no GPU found; training on {cpu_cores()} CPU cores"
        if os.path.exists("/proc/driver/nvidia"):  # a driver, but TensorFlow found no GPU
            cuda = [
                ln
                for ln in _startup_log.splitlines()
                if "cuda" in ln.lower() or "gpu" in ln.lower()
            ]
            text += (
                " although an NVIDIA driver is loaded; TensorFlow said: "
                + (" | ".join(cuda[-3:]) or "nothing")
                + " (see the README's GPU section; "
                "`catdog --verbose` shows all of its start-up lines)"
            )
    if not _announced:
        log.info(text)
        _announced = True
    return text


def cpu_cores() -> int:
    """The CPU cores this process may run on: its affinity where the OS keeps one (Linux; a
    container's or `taskset`'s limit), else every core (macOS has no sched_getaffinity)."""
    if hasattr(os, "process_cpu_count"):  # Python 3.13+
        return os.process_cpu_count() or 1
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def release_memory() -> None:
    """Between trials: collect garbage and hand freed heap back to the OS. TensorFlow's many
    threads fragment glibc's arenas, so without malloc_trim a long sweep's RSS creeps upward."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): nothing to trim
        pass


def rss_mb() -> tuple[float, float]:
    """(current, peak) resident set size of this process in MB. The current size comes from Linux's
    /proc; elsewhere (macOS) it is the peak."""
    import resource

    unit = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * unit / 2**20
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        current = peak
    return current, peak


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them in /proc/cpuinfo; none elsewhere (macOS,
    Windows), so nothing that depends on a flag is assumed there."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16() -> bool:
    """Native bf16 arithmetic: AVX512-BF16 or AMX."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def cpu_has_amx() -> bool:
    """Intel AMX's bf16 tiles: the only CPU feature bf16 training was measured to pay on."""
    return "amx_bf16" in cpu_flags()


def gpus() -> list:
    import tensorflow as tf

    return tf.config.list_physical_devices("GPU")


def allow_memory_growth() -> list:
    """Let TensorFlow take each GPU's memory as it needs it, not all of it at start, so processes
    can share a GPU (pytest's workers; TF_FORCE_GPU_ALLOW_GROWTH=true does it for children). Call
    it after `start` and before anything runs: TensorFlow refuses once its devices exist."""
    import tensorflow as tf

    found = tf.config.list_physical_devices("GPU")
    for gpu in found:
        tf.config.experimental.set_memory_growth(gpu, True)
    return found


def nvidia_gpus() -> int:
    """How many GPUs `nvidia-smi -L` lists (0 where it is missing or fails)."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "-L"],
            capture_output=True,
            text=True,
            timeout=20,
            stdin=subprocess.DEVNULL,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU") for line in out.splitlines())


def cuda_libraries() -> bool:
    """Whether the CUDA runtime and cuDNN this TensorFlow was built against can be found: NVIDIA's
    wheels (the `gpu` extra, tensorflow[and-cuda]) or the system's own libraries."""
    import ctypes
    from importlib import metadata

    import tensorflow as tf

    info = tf.sysconfig.get_build_info()
    if not info.get("is_cuda_build"):
        return False
    cuda = str(info.get("cuda_version", "12")).split(".")[0]
    cudnn = str(info.get("cudnn_version", "9")).split(".")[0]
    try:
        for wheel in (f"nvidia-cuda-runtime-cu{cuda}", f"nvidia-cudnn-cu{cuda}"):
            metadata.version(wheel)
        return True
    except metadata.PackageNotFoundError:
        pass
    try:
        for lib in (f"libcudart.so.{cuda}", f"libcudnn.so.{cudnn}"):
            ctypes.CDLL(lib)
        return True
    except OSError:
        return False


def require_gpu(device: str, sweep: str) -> None:
    """Stop a sweep whose file asks for a GPU (`device = "gpu"`) when TensorFlow sees none, in one
    sentence saying why and what to run, rather than let it train on the CPU for its whole budget.
    Call it after `start`."""
    if device not in DEVICES:
        raise CatdogError(f"unknown device {device!r}; choose one of {', '.join(DEVICES)}")
    if device != "gpu" or gpus():
        return
    listed = nvidia_gpus()
    cpu_file = "or run a CPU sweep file (make sweep EXP=experiments/cpu.toml)"
    if not listed:
        why, fix = "nvidia-smi lists no GPU either", f"run it on a GPU machine, {cpu_file}"
    elif not cuda_libraries():
        why = f"although nvidia-smi lists {listed}, TensorFlow has no CUDA libraries"
        fix = (
            f"run `make install` to add tensorflow[and-cuda] (pip install -c constraints.txt "
            f'-e ".[gpu]"), {cpu_file}'
        )
    else:
        said = [
            ln.strip()
            for ln in _startup_log.splitlines()
            if "cuda" in ln.lower() or "gpu" in ln.lower()
        ]
        why = f"although nvidia-smi lists {listed} and the CUDA libraries are installed" + (
            f"; TensorFlow said: {said[-1]}" if said else ""
        )
        fix = f"`catdog --verbose sweep ...` shows TensorFlow's start-up lines, {cpu_file}"
    raise CatdogError(
        f'sweep {sweep!r} needs a GPU (device = "gpu"), and TensorFlow sees none ({why}): {fix}'
    )


def resolve_precision(precision: str) -> str:
    """`auto` outside a sweep's plan: fp16 on GPUs (tensor cores), fp32 on CPUs.

    A sweep with `precision = "auto"` on a CPU with AMX times each architecture in both and
    keeps bf16 only where it pays (`precision_candidates`, `catdog.speed.measure_fastest`):
    bf16 training measured 0.77-1.03x of fp32 on an AVX-512-BF16 AMD EPYC, and up to 1.8x on an
    Intel Xeon with AMX, depending on the architecture.
    """
    if precision not in PRECISIONS:
        raise CatdogError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    return "fp16" if gpus() else "fp32"


def precision_candidates(precision: str) -> tuple[str, ...]:
    """The precisions a sweep's plan times for PRECISION, the first the fallback: `auto` on a
    CPU with AMX times fp32 and bf16; otherwise just the one. AVX512-BF16 alone is not enough:
    on an AMD EPYC bf16 trained no faster, and noisy readings chose it anyway."""
    resolved = resolve_precision(precision)
    if precision == "auto" and resolved == "fp32" and cpu_has_amx():
        return ("fp32", "bf16")
    return (resolved,)


def set_precision(precision: str) -> str:
    import keras

    chosen = resolve_precision(precision)
    keras.mixed_precision.set_global_policy(_POLICY[chosen])
    return chosen


def strategy():
    """MirroredStrategy across every visible GPU when there are several, or across the devices
    CATDOG_MIRRORED_DEVICES names; otherwise the default."""
    import tensorflow as tf

    named = mirrored_devices()
    if named:
        log.info("using MirroredStrategy across %s (%s)", ", ".join(named), MIRRORED_DEVICES)
        return tf.distribute.MirroredStrategy(devices=named)
    visible = gpus()
    if len(visible) > 1:
        log.info("using MirroredStrategy across %d GPUs", len(visible))
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


def mirrored_devices() -> list[str]:
    """The devices CATDOG_MIRRORED_DEVICES names (comma-separated TensorFlow device names, e.g.
    "/gpu:0,/gpu:1" for two GPUs of four, or logical CPUs configured before TensorFlow starts),
    each checked against the logical devices TensorFlow sees; empty where it is unset."""
    named = [d.strip() for d in os.environ.get(MIRRORED_DEVICES, "").split(",") if d.strip()]
    if not named:
        return []
    import tensorflow as tf

    def key(name: str) -> tuple[str, int]:
        try:
            spec = tf.DeviceSpec.from_string(name)
        except ValueError:
            return ("", -1)
        return (spec.device_type or "").upper(), spec.device_index or 0

    seen = [d.name for d in tf.config.list_logical_devices()]
    missing = [d for d in named if key(d) not in {key(s) for s in seen}]
    if missing:
        raise CatdogError(
            f"{MIRRORED_DEVICES} names {', '.join(missing)}, which TensorFlow does "
            f"not see; it sees {', '.join(seen) or 'no device'}"
        )
    return named


def strategy_name(strat) -> str:
    return f"{type(strat).__name__}x{strat.num_replicas_in_sync}"
