"""Training: configs run, steps compile once and learn, resume == straight, 1 == 2 devices,
TensorBoard tags. (A NaN batch is in the fault suite, tests/test_faults.py.)"""

import json
import os
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest

from hgcal_jax import train
from tests.train_helpers import REPO, smoke_config


def leaves(state):
    return [np.asarray(x) for x in jax.tree.leaves(jax.device_get(state.params))]


@pytest.mark.parametrize("name", ["default.py:smoke", "cnn_local3d.py:smoke", "cnn_inception.py:smoke",
                                  "rnn.py:lstm,smoke", "rnn.py:gru,smoke", "rnn.py:rnn,smoke",
                                  "full_detector.py:smoke"])
def test_every_config_runs_two_steps(name, data_dir, cache_dir, tmp_path):
    config = smoke_config(data_dir, cache_dir, name)
    result = train.train_and_evaluate(config, tmp_path)
    assert int(result["state"].step) == 2
    metrics = result["metrics"]
    assert np.isfinite(metrics["loss"]) and np.isfinite(metrics["energy_resolution"])
    assert (tmp_path / "checkpoints" / "2").is_dir()
    assert json.loads((tmp_path / "final_metrics.json").read_text())["loss"] == metrics["loss"]


def steps_and_batch(config):
    """(setup, initial state, jitted train and eval steps, one train batch) of a config."""
    from hgcal_jax import optim

    setup = train.Setup(config)
    tx, schedule = optim.make(config.optim, 100)
    graphdef, state = train.initial_state(setup, tx)
    train_fn, eval_fn = train.jit_steps(setup, graphdef, tx, schedule)
    batch = next(setup.train_iterator())
    batch.pop("event_id")
    return setup, state, train_fn, eval_fn, batch


def test_steps_lower_the_loss_on_a_fixed_batch_and_compile_once(data_dir, cache_dir):
    setup, state, fn, _, batch = steps_and_batch(smoke_config(data_dir, cache_dir))
    key = jax.device_put(jax.random.key(0), setup.repl)
    losses = []
    for _ in range(15):
        state, metrics = fn(state, batch, setup.table, setup.cell_weight, key)
        losses.append(float(metrics["loss"]))
    assert losses[-1] < 0.5 * losses[0], losses
    assert fn._cache_size() == 1  # one compilation for all 15 steps


def test_eval_loss_is_the_training_loss_with_its_target_weights(data_dir, cache_dir):
    # No BatchNorm, so training and evaluation mode compute the same function of the batch.
    setup, state, train_fn, eval_fn, batch = steps_and_batch(
        smoke_config(data_dir, cache_dir, model__norm="none", targets__weights="4,1,0.5"))
    out = eval_fn(state, batch, setup.table, setup.cell_weight)  # before the update below
    _, metrics = train_fn(state, batch, setup.table, setup.cell_weight, jax.random.key(0))
    weight = np.asarray(batch["weight"])
    eval_loss = float(np.sum(np.asarray(out["loss"]) * weight) / weight.sum())
    assert eval_loss == pytest.approx(float(metrics["loss"]), rel=1e-5)


def test_resume_equals_straight_run(data_dir, cache_dir, tmp_path):
    kw = dict(train__steps=20, train__checkpoint_every=10, train__eval_every=20, train__log_every=5,
              train__histogram_every=0)
    straight = train.train_and_evaluate(smoke_config(data_dir, cache_dir, **kw), tmp_path / "a")
    half = dict(kw, train__stop_after=10)  # interrupted at step 10 of the same 20-step schedule
    train.train_and_evaluate(smoke_config(data_dir, cache_dir, **half), tmp_path / "b")
    resumed = train.train_and_evaluate(smoke_config(data_dir, cache_dir, **kw), tmp_path / "b")
    assert int(resumed["state"].step) == 20
    for a, b in zip(leaves(straight["state"]), leaves(resumed["state"]), strict=True):
        np.testing.assert_array_equal(a, b)
    # Same data order: the logged training losses of steps 15 and 20 agree.
    def losses(path):
        rows = [json.loads(x) for x in (path / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    assert losses(tmp_path / "a")[15] == losses(tmp_path / "b")[15]


def test_tensorboard_has_the_expected_tags(data_dir, cache_dir, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train.train_and_evaluate(smoke_config(data_dir, cache_dir), tmp_path)
    acc = EventAccumulator(str(tmp_path / "tb"), size_guidance={"histograms": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    for tag in ("train/loss", "train/loss_energy", "train/rms_energy", "train/lr", "train/grad_norm",
                "train/param_norm", "train/events_per_s", "eval/loss", "eval/energy_resolution"):
        assert tag in tags["scalars"], tag
    assert any(t.startswith("params/") for t in tags["histograms"])
    assert {"input/image_layer_sum", "saliency/energy_gradient_x_input"} <= set(tags["images"])
    assert (tmp_path / "config.json").is_file() and (tmp_path / "metrics.jsonl").is_file()


SCRIPT = textwrap.dedent("""
    import sys, numpy as np, jax
    from hgcal_jax import train
    from tests.train_helpers import smoke_config
    from pathlib import Path
    data, cache, out = map(Path, sys.argv[1:4])
    config = smoke_config(data, cache, train__steps=3, train__histogram_every=0, optim__name=sys.argv[4])
    result = train.train_and_evaluate(config, out / "run")
    leaves = [np.asarray(x) for x in jax.tree.leaves(jax.device_get(result["state"].params))]
    np.savez(out / "params.npz", *leaves, loss=result["metrics"]["train_loss"], n=jax.device_count())
""")


@pytest.mark.parametrize("optimizer", ["sgd", "adamw"])
def test_one_device_equals_two_devices(optimizer, data_dir, cache_dir, tmp_path):
    results = {}
    for n in (1, 2):
        out = tmp_path / f"d{n}"
        out.mkdir()
        env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={n}",
               "PYTHONPATH": str(REPO)}
        proc = subprocess.run([sys.executable, "-c", SCRIPT, str(data_dir), str(cache_dir), str(out),
                               optimizer], env=env, capture_output=True, text=True, timeout=600, cwd=REPO)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[n] = dict(np.load(out / "params.npz"))
    assert int(results[1]["n"]) == 1 and int(results[2]["n"]) == 2
    np.testing.assert_allclose(results[1]["loss"], results[2]["loss"], rtol=1e-5)
    keys = [k for k in results[1] if k.startswith("arr_")]
    assert keys
    if optimizer == "sgd":
        # 1 and 2 devices sum the batch in another float32 order (~1e-7 relative); SGD passes that on
        # unamplified, so every parameter agrees to rtol 1e-5. The one exception is an element whose
        # gradient is a near-total cancellation over the batch (a head bias measured at -8e-11 among
        # elements of 1e-4): its relative error is that of the cancellation, so each leaf also gets
        # an absolute floor of 1e-6 of its own largest element.
        for key in keys:
            scale = float(np.abs(results[1][key]).max())
            np.testing.assert_allclose(results[1][key], results[2][key], rtol=1e-5, atol=1e-6 * scale)
    else:
        # Adam divides by sqrt(v): a parameter whose gradient is ~0 (float32 noise of either sum
        # order) moves by up to lr * m / sqrt(v) ~ lr either way. One such element differed by
        # 1.5e-6 at rtol 1e-5, so Adam is held to atol 1e-5: 1e-4 of the parameters' scale and
        # well below one update (lr = 1e-3). The loss still agrees to rtol 1e-5.
        for key in keys:
            np.testing.assert_allclose(results[1][key], results[2][key], rtol=1e-5, atol=1e-5)


def test_profile_writes_a_perfetto_trace(data_dir, cache_dir, tmp_path):
    config = smoke_config(data_dir, cache_dir, train__steps=3, train__profile_start=1,
                          train__profile_steps=1, train__histogram_every=0)
    config.profile = True
    train.train_and_evaluate(config, tmp_path)
    traces = list((tmp_path / "profile").rglob("*.trace.json.gz"))
    assert traces and traces[0].stat().st_size > 100
