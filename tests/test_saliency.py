"""Saliency on a smoke-trained default model (cnn_global): shapes, per-example independence,
integrated-gradients completeness, the hit attribution through the interpolation operator equal to
the image attribution shared back onto the cells, and scripts/saliency.py end to end."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from hgcal_jax import saliency, steps, train
from hgcal_jax.data import shards
from hgcal_jax.interpolation import operator
from tests.train_helpers import REPO, make_dataset, smoke_config


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A default-model run trained for 10 steps, restored as scripts see it, and 8 test events."""
    root = tmp_path_factory.mktemp("saliency")
    config = smoke_config(make_dataset(root / "data"), root / "cache", train__steps=10, train__eval_every=10,
                          train__checkpoint_every=10, train__histogram_every=0)
    assert config.model.name == "cnn_global"
    train.train_and_evaluate(config, root / "run")
    setup, graphdef, state, _ = train.restore(root / "run")
    paths, _ = shards.open_split(setup.config.data.dir, "test")
    host, truths = saliency.load_events(setup, paths, range(8))
    batch = jax.tree.map(jnp.asarray, {k: v for k, v in host.items() if k != "event_id"})
    inputs = steps.prepare(setup.table, setup.cell_weight, batch, target_spec=setup.target_spec,
                                 stats=setup.stats)
    return dict(root=root, setup=setup, graphdef=graphdef, state=state, batch=batch, truths=truths,
                inputs=inputs, model=(graphdef, state.params, state.rest))


def image_args(run):
    return (*run["model"], run["inputs"].image, run["inputs"].features)


def hits(run, method, **kw):
    setup = run["setup"]
    return saliency.hit_attribution(method, *run["model"], setup.table, setup.cell_weight, run["batch"],
                                    target_spec=setup.target_spec, stats=setup.stats, **kw)


@pytest.mark.parametrize("method", saliency.IMAGE_METHODS)
def test_image_attributions_have_the_shape_of_the_input(run, method):
    out = saliency.image_attribution(method, *image_args(run), output=1, steps=8)
    assert out.shape == run["inputs"].image.shape
    assert bool(jnp.all(jnp.isfinite(out))) and float(jnp.max(jnp.abs(out))) > 0


@pytest.mark.parametrize("method", saliency.HIT_METHODS)
def test_hit_attributions_have_the_shape_of_the_energies(run, method):
    out = hits(run, method, steps=8)
    mask = run["batch"]["mask"]
    assert out.shape == run["batch"]["energies"].shape
    assert bool(jnp.all(out[~mask] == 0)) and float(jnp.max(jnp.abs(out[mask]))) > 0


def test_gradients_are_per_example(run):
    """An example's attribution does not depend on the rest of the batch, and the vmapped gradient
    is the gradient of the batch sum (what the TensorBoard image used)."""
    args = image_args(run)
    full = saliency.gradient(*args)
    alone = saliency.gradient(*run["model"], args[3][2:3], args[4][2:3])
    np.testing.assert_allclose(full[2:3], alone, rtol=1e-4, atol=1e-7)
    summed = jax.grad(lambda x: saliency.predict(*run["model"], x, args[4]).sum())(args[3])
    np.testing.assert_allclose(full, summed, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("output", [0, 1, 2])
def test_integrated_gradients_are_complete(run, output):
    """sum(IG) = f(x) - f(empty image) within 1 % at the default steps (summed over the batch, so
    that an event whose output barely changes does not dominate); a 4-step integral is not."""
    args = image_args(run)
    change = saliency.predict(*args, output=output) - saliency.predict(
        *run["model"], jnp.zeros_like(args[3]), args[4], output=output)

    def gap(**steps):
        ig = saliency.integrated_gradients(*args, output=output, **steps)
        return float(jnp.sum(jnp.abs(ig.sum(axis=(1, 2, 3)) - change)) / jnp.sum(jnp.abs(change)))

    assert gap() < 0.01
    assert gap(steps=4) > 0.01  # the check can fail


@pytest.mark.parametrize("method", ["grad_x_input", "integrated_gradients"])
def test_hit_attribution_is_the_image_attribution_shared_back(run, method):
    """With the event features held, e_h df/de_h = sum_p (e_h w_hp / x_p) x_p df/dx_p: autodiff
    through the operator equals the image attribution shared back by `to_cells`, and totals match."""
    batch, setup = run["batch"], run["setup"]
    through = hits(run, method, steps=32)  # the identity holds for any path discretisation
    image = saliency.image_attribution(method, *image_args(run), steps=32)
    origin = operator.interpolate(setup.table, batch["cells"], batch["energies"], batch["mask"]).origin_cm
    back = saliency.to_cells(image, setup.table, batch["cells"], batch["energies"], batch["mask"], origin)
    scale = float(jnp.max(jnp.abs(back)))
    np.testing.assert_allclose(through, back, atol=1e-4 * scale)
    np.testing.assert_allclose(back.sum(axis=1), image.sum(axis=(1, 2, 3)), rtol=1e-4, atol=1e-6)


def test_hit_gradient_is_the_image_gradient_pulled_back(run):
    batch, setup = run["batch"], run["setup"]
    origin = operator.interpolate(setup.table, batch["cells"], batch["energies"], batch["mask"]).origin_cm
    back = saliency.pull_back(saliency.gradient(*image_args(run)), setup.table, batch["cells"], batch["mask"],
                              origin)
    np.testing.assert_allclose(hits(run, "gradient"), back, atol=1e-5 * float(jnp.max(jnp.abs(back))))


def test_hit_attribution_through_the_features_matches_a_finite_difference(run):
    """Scaling all energies by (1 + eps) changes the output by eps * sum_h e_h df/de_h (total
    derivative, features included); the held-feature attribution misses the raw-sum path."""
    batch, setup = run["batch"], run["setup"]
    total = hits(run, "grad_x_input", hold_features=False).sum(axis=1)
    held = hits(run, "grad_x_input").sum(axis=1)

    def output(scale):
        scaled = {**batch, "energies": batch["energies"] * scale}
        x = steps.prepare(setup.table, setup.cell_weight, scaled, target_spec=setup.target_spec,
                                stats=setup.stats)
        return saliency.predict(*run["model"], x.image, x.features)

    eps = 1e-2
    numeric = (output(1 + eps) - output(1 - eps)) / (2 * eps)
    np.testing.assert_allclose(total, numeric, rtol=0.05, atol=2e-3)
    assert float(jnp.max(jnp.abs(total - held))) > 10 * 2e-3


def test_select_events_by_index_and_energy(run):
    paths, _ = shards.open_split(run["setup"].config.data.dir, "test")
    truth = np.concatenate([shards.read_truth(p) for p in paths])
    np.testing.assert_array_equal(saliency.select_events(paths, [3, 1]), [3, 1])
    lo, hi = np.percentile(truth["energy"], [25, 75])
    chosen = saliency.select_events(paths, energy_range=(lo, hi), limit=3)
    assert len(chosen) == 3 and np.all((truth["energy"][chosen] >= lo) & (truth["energy"][chosen] <= hi))
    with pytest.raises(IndexError):
        saliency.select_events(paths, [len(truth)])


def test_explain_in_padded_chunks_equals_the_batch_functions(run):
    setup, (graphdef, _, _), state = run["setup"], run["model"], run["state"]
    host = jax.tree.map(lambda v: np.asarray(v)[:3], run["batch"])
    out = saliency.explain(setup, graphdef, state, host, ["gradient"], chunk=2)  # 2 + 1 padded to 2
    assert out["image_gradient"].shape == (3, *setup.grid.image_shape)
    assert out["hits_gradient"].shape == host["energies"].shape
    np.testing.assert_allclose(out["image"], run["inputs"].image[:3])
    np.testing.assert_allclose(out["image_gradient"], saliency.gradient(*image_args(run))[:3], rtol=1e-5,
                               atol=1e-8)


def test_saliency_script_on_a_smoke_run(run, tmp_path):
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, "scripts/saliency.py", "--workdir", str(run["root"] / "run"),
                           "--events", "2", "--method", "grad_x_input", "--output", "impact_x",
                           "--out", str(out)], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with np.load(out / "saliency.npz") as npz:
        assert npz["image_grad_x_input"].shape == (1, *run["setup"].grid.image_shape)
        assert str(npz["output"]) == "impact_x" and list(npz["event_index"]) == [2]
    for suffix in ("profile.png", "grad_x_input_layers.png", "grad_x_input_cells.png", "grad_x_input.html"):
        assert (out / f"event00002_{suffix}").stat().st_size > 0
    with Image.open(out / "event00002_grad_x_input.gif") as gif:
        assert gif.n_frames == len(run["setup"].grid.layers)
