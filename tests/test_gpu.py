"""The GPU path without a GPU: a sweep file that asks for one (`device = "gpu"`, as
experiments/gpu.toml does) stops before anything starts when TensorFlow sees none, in one sentence
saying why and what to run. The machines this cannot be run on (a GPU that TensorFlow sees, one
it cannot use) are played by replacing what catdog.runtime asks of TensorFlow and nvidia-smi.
Tests share a GPU by growing its memory as they need it; several GPUs are played by two logical
CPUs that a catdog model trains across under MirroredStrategy, in a child process."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from catdog import runtime, sweepfile
from catdog.errors import CatdogError

REPO = Path(__file__).resolve().parents[1]


def test_device_is_any_unless_the_file_says_gpu_and_leaves_the_sweep_key_alone(tmp_path):
    plain = sweepfile.load(None)
    assert plain.device == "any"
    gpu = sweepfile.load(REPO / "experiments" / "gpu.toml")
    assert gpu.device == "gpu"
    # The key names what a trial means; the device only checks the machine, so a sweep started
    # before the key existed (or without it) resumes under the same key.
    assert sweepfile.load(None, device="gpu").key("d1") == plain.key("d1")


def test_an_unknown_device_is_one_sentence_naming_the_choices(tmp_path):
    path = tmp_path / "tpu.toml"
    path.write_text('device = "tpu"\n')
    with pytest.raises(CatdogError) as err:
        sweepfile.load(path)
    assert str(err.value) == f"unknown device 'tpu'; choose 'any' or 'gpu' (in {path})"


@pytest.fixture
def machine(monkeypatch):
    """play(tensorflow_gpus, listed, libraries): what TensorFlow sees, how many GPUs nvidia-smi
    lists, whether CUDA's libraries are installed."""

    def play(tensorflow_gpus: int, listed: int, libraries: bool, said: str = "") -> None:
        monkeypatch.setattr(runtime, "gpus", lambda: ["/physical_device:GPU:0"] * tensorflow_gpus)
        monkeypatch.setattr(runtime, "nvidia_gpus", lambda: listed)
        monkeypatch.setattr(runtime, "cuda_libraries", lambda: libraries)
        monkeypatch.setattr(runtime, "_startup_log", said)

    return play


def _refusal(device="gpu") -> str:
    with pytest.raises(CatdogError) as err:
        runtime.require_gpu(device, "gpu")
    message = str(err.value)
    assert "\n" not in message and message.startswith(
        "sweep 'gpu' needs a GPU (device = \"gpu\"), and TensorFlow sees none ("
    ), message
    return message


def test_a_gpu_tensorflow_sees_lets_the_sweep_start(machine):
    machine(tensorflow_gpus=1, listed=1, libraries=True)
    runtime.require_gpu("gpu", "gpu")


def test_a_sweep_that_takes_any_device_never_asks(monkeypatch):
    def ask():
        raise AssertionError("asked TensorFlow for GPUs")

    monkeypatch.setattr(runtime, "gpus", ask)
    runtime.require_gpu("any", "cpu")


def test_no_gpu_listed_says_so_and_points_at_a_cpu_sweep_file(machine):
    machine(tensorflow_gpus=0, listed=0, libraries=False)
    message = _refusal()
    assert "(nvidia-smi lists no GPU either)" in message
    assert "make sweep EXP=experiments/cpu.toml" in message


def test_a_listed_gpu_without_cuda_libraries_says_to_run_make_install(machine):
    machine(tensorflow_gpus=0, listed=1, libraries=False)
    message = _refusal()
    assert "although nvidia-smi lists 1, TensorFlow has no CUDA libraries" in message
    assert "run `make install` to add tensorflow[and-cuda]" in message
    assert "experiments/cpu.toml" in message


def test_a_listed_gpu_tensorflow_cannot_use_quotes_tensorflow(machine):
    machine(
        tensorflow_gpus=0,
        listed=2,
        libraries=True,
        said="I0000 port.cc oneDNN custom operations are on\n"
        "E0000 cuda_executor.cc failed call to cuInit: CUDA_ERROR_NO_DEVICE (100)",
    )
    message = _refusal()
    assert "nvidia-smi lists 2 and the CUDA libraries are installed" in message
    assert "failed call to cuInit: CUDA_ERROR_NO_DEVICE" in message
    assert "`catdog --verbose sweep ...`" in message and "oneDNN" not in message


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None, reason="this machine has nvidia-smi")
def test_on_this_machine_nothing_is_listed_and_tensorflow_has_no_cuda_libraries():
    assert runtime.nvidia_gpus() == 0
    assert runtime.cuda_libraries() is False


def test_nvidia_gpus_counts_the_gpus_nvidia_smi_lists(tmp_path, monkeypatch):
    fake = tmp_path / "nvidia-smi"
    fake.write_text(
        "#!/bin/sh\necho 'GPU 0: NVIDIA A100 (UUID: GPU-1)'\n"
        "echo 'GPU 1: NVIDIA A100 (UUID: GPU-2)'\necho '  MIG 1g.5gb Device 0'\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    assert runtime.nvidia_gpus() == 2


def test_distributed_refuses_a_gpu_sweep_quietly_before_starting_anything(tmp_path):
    """The launcher checks once, before the tracking server, the chief and the workers, and
    starts as quietly as every other command: no oneDNN banner, no "Could not find cuda
    drivers"."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("TF_CPP_MIN_LOG_LEVEL", "CATDOG_VERBOSE", "MLFLOW_TRACKING_URI")
    }
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "catdog",
            "distributed",
            str(REPO / "experiments" / "gpu.toml"),
            "--tracking-port",
            "1",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if runtime.gpus():
        pytest.skip("TensorFlow sees a GPU here")
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""
    assert len(proc.stderr.splitlines()) == 1, f"more than one line:\n{proc.stderr}"
    assert proc.stderr.startswith("error: sweep 'gpu' needs a GPU"), proc.stderr
    assert not (tmp_path / "mlruns").exists(), "no tracking server was started"


def test_a_gpu_sweep_stops_before_any_data_when_tensorflow_sees_no_gpu(
    monkeypatch, tiny_prepared, workdir
):
    from catdog import runtime, sweepfile
    from catdog.errors import CatdogError
    from catdog.search import sweep

    monkeypatch.setattr(runtime, "gpus", lambda: [])
    monkeypatch.setattr(runtime, "nvidia_gpus", lambda: 1)
    monkeypatch.setattr(runtime, "cuda_libraries", lambda: False)
    with pytest.raises(CatdogError, match="no CUDA libraries"):
        sweep.run(sweepfile.load(None, device="gpu", archs=("baseline",), data=str(tiny_prepared)))


# ------------------------------------------------------------------------------- GPU memory growth
def test_tests_let_every_gpu_grow_its_memory_and_their_children_too(monkeypatch):
    """pytest's workers and the processes tests start share a GPU: conftest sets memory growth on
    each GPU before TensorFlow creates its devices, and TF_FORCE_GPU_ALLOW_GROWTH for children.
    Without a GPU the GPUs are played by what tf.config lists."""
    import tensorflow as tf

    assert os.environ.get("TF_FORCE_GPU_ALLOW_GROWTH") == "true"
    child = subprocess.run(
        [sys.executable, "-c", "import os; print(os.environ.get('TF_FORCE_GPU_ALLOW_GROWTH'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert child.stdout.strip() == "true"
    for gpu in tf.config.list_physical_devices("GPU"):  # a real GPU: conftest's call took effect
        assert tf.config.experimental.get_memory_growth(gpu) is True

    played = ["/physical_device:GPU:0", "/physical_device:GPU:1"]
    calls = []
    monkeypatch.setattr(
        tf.config, "list_physical_devices", lambda kind=None: played if kind == "GPU" else []
    )
    monkeypatch.setattr(
        tf.config.experimental,
        "set_memory_growth",
        lambda device, enable: calls.append((device, enable)),
    )
    assert runtime.allow_memory_growth() == played
    assert calls == [(gpu, True) for gpu in played]


# ----------------------------------------------------------------------------- several GPUs
# Logical devices exist only if configured before TensorFlow creates its devices, so the mirrored
# run is a child process: two logical CPUs stand in for two GPUs.
MIRRORED_SETUP = """
import json, sys
import numpy as np
from catdog import runtime
runtime.start()
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()])
from catdog import models, pipeline
strategy = runtime.strategy()
splits = pipeline.load(sys.argv[1], 32, 8)
"""
MIRRORED_CHILD = (
    MIRRORED_SETUP
    + """
with strategy.scope():
    model = models.get("baseline").build(image_size=32, num_classes=splits.num_classes)
before = [w.copy() for w in model.get_weights()]
history = model.fit(splits.train, validation_data=splits.val, epochs=1, verbose=0)
changed = any(not np.allclose(a, b) for a, b in zip(before, model.get_weights()))
variable = model.trainable_variables[0].value  # Keras's wrapper around TensorFlow's variable
print(json.dumps({
    "strategy": runtime.strategy_name(strategy),
    "replicas": strategy.num_replicas_in_sync,
    "devices": list(strategy.extended.worker_devices),
    "copies": len(strategy.experimental_local_results(variable)),
    "loss": history.history["loss"], "val_accuracy": history.history["val_accuracy"],
    "changed": changed, "n_train": splits.sizes["train"]}))
"""
)


def _child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "CATDOG_MIRRORED_DEVICES"}
    return {**env, "TF_FORCE_GPU_ALLOW_GROWTH": "true", **extra}


def run_mirrored(script: str, cwd, *args: str) -> dict:
    """The JSON SCRIPT prints last, run in a child mirrored across two logical CPUs."""
    proc = subprocess.run(
        [sys.executable, "-c", script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=240,
        env=_child_env(CATDOG_MIRRORED_DEVICES="/cpu:0,/cpu:1"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_two_devices_train_a_catdog_model_under_mirrored_strategy(tiny_prepared, tmp_path):
    """CATDOG_MIRRORED_DEVICES names the devices: runtime.strategy() mirrors across both, and a
    registry model trains an epoch of generated photos from catdog's pipeline with a copy of each
    weight on each device."""
    result = run_mirrored(MIRRORED_CHILD, tmp_path, str(tiny_prepared))
    assert result["strategy"] == "MirroredStrategyx2" and result["replicas"] == 2
    assert [d.rsplit("/", 1)[-1] for d in result["devices"]] == ["device:CPU:0", "device:CPU:1"]
    assert result["copies"] == 2, "each weight is mirrored on both devices"
    assert result["n_train"] > 0 and len(result["loss"]) == 1
    assert math.isfinite(result["loss"][0]) and 0 <= result["val_accuracy"][0] <= 1
    assert result["changed"], "an epoch under the strategy changed no weight"


def test_without_the_setting_or_several_gpus_there_is_no_mirroring(monkeypatch):
    monkeypatch.delenv(runtime.MIRRORED_DEVICES, raising=False)
    monkeypatch.setattr(runtime, "gpus", lambda: [])
    assert runtime.strategy_name(runtime.strategy()).endswith("x1")
    assert runtime.mirrored_devices() == []


def test_a_device_tensorflow_does_not_see_is_one_sentence(monkeypatch):
    monkeypatch.setenv(runtime.MIRRORED_DEVICES, "/cpu:0, /gpu:97")
    with pytest.raises(CatdogError) as err:
        runtime.strategy()
    message = str(err.value)
    assert message.startswith(
        "CATDOG_MIRRORED_DEVICES names /gpu:97, which TensorFlow does not "
        "see; it sees /device:CPU:0"
    ), message
    assert "\n" not in message
