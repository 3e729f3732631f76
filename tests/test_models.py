"""Models: the (outputs, aux) contract, train/eval behaviour, the jitted functional pattern, and that
every family (the 2018 LSTM included) actually learns a simple target."""

import functools

import chex
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest
from flax import nnx

from hgcal_jax import models

B, SHAPE, T = 4, (16, 16, 8), 3
NAMES = tuple(models.REGISTRY)
# Tiny widths, shared across models where possible: eager init compiles one random draw per
# parameter shape, so shared shapes keep each model's first build cheap on CPU.
TINY = {
    "cnn_global": dict(channels=(8, 8), head_widths=(16,)),
    "cnn_local3d": dict(channels=(8, 8), head_widths=(16,)),
    "cnn_inception": dict(local_channels=(4, 4), global_channels=(4, 4), head_widths=(16,)),
    "cnn_resnet": dict(widths=(8, 8), blocks=1, stem_kernel=3, head_widths=(16,)),
    "rnn": dict(encoder_channels=(8,), embed=8, hidden=8, head_widths=(16,)),
}


def config(name: str, **options) -> ml_collections.ConfigDict:
    cfg = models.defaults(name)
    cfg.update({**TINY[name], **options})
    return cfg


def make(name: str, n_features: int = 0, shape=SHAPE, **options) -> models.layers.Regressor:
    return models.build(config(name, **options), image_shape=shape, n_features=n_features,
                        n_outputs=T, rngs=nnx.Rngs(params=0))


def batch(n: int = B, shape=SHAPE, seed: int = 0) -> tuple[jax.Array, jax.Array]:
    """Images in MIP-like units (per-event scales from 1 to 1000 MIP) and 3 features."""
    k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
    scale = jnp.exp(jax.random.uniform(k1, (n, 1, 1, 1), minval=0.0, maxval=7.0))
    image = jax.random.exponential(k2, (n, *shape)) * scale
    return image, jax.random.normal(k3, (n, 3))


def expected_aux(name: str) -> set[str]:
    return {"embedding", "first_conv"} | ({"sequence"} if name == "rnn" else set())


@pytest.mark.parametrize("norm", ["batch", "layer", "none"])
@pytest.mark.parametrize("name", NAMES)
def test_outputs_and_aux_for_every_option_combination(name, norm):
    # Shapes only (nnx.eval_shape traces without compiling); the runs below check values.
    image = jax.ShapeDtypeStruct((B, *SHAPE), jnp.float32)
    for dropout, n_features in ((0.0, 0), (0.5, 3)):
        model = nnx.eval_shape(functools.partial(make, name, n_features, norm=norm, dropout=dropout))
        features = jax.ShapeDtypeStruct((B, n_features), jnp.float32)
        for train in (True, False):
            # The Rngs is made inside the trace: one made outside cannot be advanced from inside.
            call = functools.partial(
                lambda m, x, f, train: m(x, f, train=train, rngs=nnx.Rngs(dropout=1) if train else None),
                train=train)
            out, aux = nnx.eval_shape(call, model, image, features)
            assert out.shape == (B, T)
            assert set(aux) == expected_aux(name)
            assert aux["embedding"].shape[0] == B and len(aux["embedding"].shape) == 2
            # The head reads exactly the embedding plus the features.
            assert model.head.hidden[0].in_features == aux["embedding"].shape[1] + n_features


# One jitted training run per family, shared by the tests below (one compile each) in the training
# loop's pattern: split once, merge inside jit, grads w.r.t. nnx.Param, Adam, new BatchStats.
# Between them the families cover every model, cell, readout, norm and both directions.
FAMILIES = {
    "cnn_global": ("cnn_global", {}),
    "cnn_local3d-pool-layernorm": ("cnn_local3d", dict(norm="layer", downsample="pool", pool="mean")),
    "cnn_inception-nonorm": ("cnn_inception", dict(norm="none")),
    "cnn_resnet": ("cnn_resnet", {}),
    "rnn-lstm": ("rnn", dict(cell="lstm")),
    "rnn-gru-last-bidirectional": ("rnn", dict(cell="gru", readout="last", bidirectional=True, norm="layer")),
    "rnn-tanh-nonorm": ("rnn", dict(cell="rnn", norm="none", coords=False)),
}
FIT_BATCH, FIT_SHAPE, STEPS = 8, (8, 8, 8), 40


# Tiny programs: XLA compile time dominates the runs, so skip the LLVM backend optimisations.
FAST_COMPILE = {"xla_backend_optimization_level": 0}


@functools.cache
def train_family(family: str) -> dict:
    name, options = FAMILIES[family]
    model = make(name, 3, shape=FIT_SHAPE, dropout=0.1, **options)
    image, features = batch(FIT_BATCH, FIT_SHAPE, seed=3)
    # Target: a simple function of the image, the standardised log of the total energy.
    log_e = jnp.log(image.sum(axis=(1, 2, 3)))
    log_e = (log_e - log_e.mean()) / log_e.std()
    targets = jnp.stack([log_e, -log_e, 0.5 * log_e], axis=1)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    optimizer = optax.adam(3e-3)
    chex.clear_trace_counter()

    @functools.partial(jax.jit, compiler_options=FAST_COMPILE)
    @chex.assert_max_traces(n=1)
    def step(params, rest, opt_state, key):
        def loss_fn(params, image):
            # copy=True: BatchNorm updates its stats under the grad trace, not the jit trace that
            # created the Variables of `rest`.
            model = nnx.merge(graphdef, params, rest, copy=True)
            out, _ = model(image, features, train=True, rngs=nnx.Rngs(dropout=key))
            return jnp.mean((out - targets) ** 2), (out, nnx.state(model, nnx.BatchStat))
        (loss, (out, stats)), grads = jax.value_and_grad(loss_fn, (0, 1), has_aux=True)(params, image)
        updates, opt_state = optimizer.update(grads[0], opt_state, params)
        # The eval output rides along so that determinism is checked without another compile.
        out_eval, _ = nnx.merge(graphdef, params, rest)(image, features, train=False)
        params = optax.apply_updates(params, updates)
        return (params, nnx.merge_state(rest, stats), opt_state), dict(
            loss=loss, grads=grads[0], image_grad=grads[1], stats=stats, out=out, out_eval=out_eval)

    start = (params, rest, jax.jit(optimizer.init)(params))  # one compile, not one per leaf shape
    state, first = step(*start, jax.random.key(0))
    run = dict(params=params, stats_before=nnx.state(model, nnx.BatchStat), first=first,
               again=step(*start, jax.random.key(0))[1], other_key=step(*start, jax.random.key(1))[1],
               losses=[float(first["loss"])])
    for i in range(1, STEPS):
        state, metrics = step(*state, jax.random.key(i))
        run["losses"].append(float(metrics["loss"]))
    return run


@pytest.mark.parametrize("family", FAMILIES)
def test_grads_reach_every_parameter(family):
    run = train_family(family)
    leaves = jax.tree_util.tree_leaves_with_path(run["first"]["grads"])
    assert len(leaves) == len(jax.tree.leaves(run["params"]))
    assert all(bool(jnp.all(jnp.isfinite(g))) for _, g in leaves)
    # Relative to the largest leaf: a parameter that cancels (a conv bias before BatchNorm) gets
    # rounding noise of ~1e-8 of it, where every live leaf here gets a few percent or more.
    largest = max(float(jnp.max(jnp.abs(g))) for _, g in leaves)
    for path, g in leaves:
        assert float(jnp.max(jnp.abs(g))) > 1e-4 * largest, f"dead parameter {jax.tree_util.keystr(path)}"
    # Saliency: the gradient w.r.t. the raw image flows through the in-model transform.
    image_grad = run["first"]["image_grad"]
    assert bool(jnp.all(jnp.isfinite(image_grad))) and bool(jnp.any(image_grad != 0))


@pytest.mark.parametrize("family", [f for f, (_, o) in FAMILIES.items() if o.get("norm", "batch") == "batch"])
def test_batch_stats_update_in_train_mode(family):
    run = train_family(family)
    old, new = jax.tree.leaves(run["stats_before"]), jax.tree.leaves(run["first"]["stats"])
    assert old and len(old) == len(new)
    assert all(not np.allclose(a, b) for a, b in zip(old, new, strict=True))


@pytest.mark.parametrize("family", FAMILIES)
def test_adam_lowers_the_loss_on_a_fixed_batch(family):
    # The property the 2018 LSTM lacked: a few optimiser steps fit a simple target.
    losses = train_family(family)["losses"]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.3 * losses[0], losses


@pytest.mark.parametrize("family", FAMILIES)
def test_eval_is_deterministic_and_dropout_follows_the_key(family):
    run = train_family(family)
    first, again, other_key = run["first"], run["again"], run["other_key"]
    np.testing.assert_array_equal(first["out_eval"], again["out_eval"])
    np.testing.assert_array_equal(first["out_eval"], other_key["out_eval"])  # eval ignores the key
    np.testing.assert_array_equal(first["out"], again["out"])
    assert not np.allclose(first["out"], other_key["out"])
    assert not np.allclose(first["out"], first["out_eval"])


def test_train_with_dropout_needs_rngs():
    model = make("cnn_global", dropout=0.5)
    image, _ = batch()
    with pytest.raises(ValueError, match="rngs"):
        model(image, None, train=True)


@pytest.mark.parametrize("name", NAMES)
def test_state_holds_only_params_and_batch_stats(name):
    model = nnx.eval_shape(functools.partial(make, name, 3, dropout=0.5))
    state = nnx.state(model)
    kinds = {type(v) for v in jax.tree.leaves(state, is_leaf=lambda v: isinstance(v, nnx.Variable))}
    assert kinds == {nnx.Param, nnx.BatchStat}


@pytest.mark.parametrize("bidirectional", [False, True])
def test_lstm_init_forget_bias_and_orthogonal_recurrence(bidirectional):
    model = make("rnn", cell="lstm", bidirectional=bidirectional)
    cells = [model.rnn_forward] + ([model.rnn_backward] if bidirectional else [])
    h = model.options.hidden
    for cell in cells:
        bias = np.asarray(cell.bias[...])
        np.testing.assert_array_equal(bias[h:2 * h], 1.0)
        np.testing.assert_array_equal(np.delete(bias, np.s_[h:2 * h]), 0.0)
        w = np.asarray(cell.recurrent_kernel[...])
        for gate in range(4):
            block = w[:, gate * h:(gate + 1) * h]
            np.testing.assert_allclose(block.T @ block, np.eye(h), atol=1e-5)


@pytest.mark.parametrize("readout", ["all", "last"])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_rnn_readout_sizes(readout, bidirectional):
    model = make("rnn", readout=readout, bidirectional=bidirectional, norm="none")
    image, _ = batch()
    out, aux = model(image, None, train=False)
    h, n_layers = model.options.hidden, SHAPE[-1]
    d = h * (2 if bidirectional else 1)
    assert out.shape == (B, T)
    assert aux["sequence"].shape == (B, n_layers, d)
    assert aux["embedding"].shape == (B, d * n_layers if readout == "all" else d)
    if readout == "last":
        # Forward state after the last layer; backward state after the first.
        np.testing.assert_array_equal(aux["embedding"][:, :h], aux["sequence"][:, -1, :h])
        if bidirectional:
            np.testing.assert_array_equal(aux["embedding"][:, h:], aux["sequence"][:, 0, h:])
    else:
        np.testing.assert_array_equal(aux["embedding"], aux["sequence"].reshape(B, -1))


def test_build_accepts_plain_dicts_and_lists():
    model = models.build({"name": "cnn_global", "channels": [8, 8], "head_widths": [16]}, image_shape=SHAPE,
                         n_features=0, n_outputs=T, rngs=nnx.Rngs(0))
    assert model.options.channels == (8, 8) and model.options.head_widths == (16,)
    assert models.defaults("rnn").cell == "lstm"


def test_unknown_name_and_option_are_named():
    with pytest.raises(ValueError, match="unknown model name 'cnn_globl'"):
        models.build(ml_collections.ConfigDict({"name": "cnn_globl"}), image_shape=SHAPE, n_features=0,
                     n_outputs=T, rngs=nnx.Rngs(0))
    cfg = config("rnn")
    cfg.hiden = 8
    with pytest.raises(ValueError, match="hiden"):
        models.build(cfg, image_shape=SHAPE, n_features=0, n_outputs=T, rngs=nnx.Rngs(0))
    for bad in (dict(norm="group"), dict(cell="mlstm"), dict(readout="first"), dict(dropout=1.5),
                dict(encoder_channels=(8, 0))):
        with pytest.raises(ValueError, match=next(iter(bad))):
            make("rnn", **bad)


def test_wrong_input_shapes_are_rejected():
    model = make("cnn_global", n_features=3)
    image, features = batch()
    with pytest.raises(ValueError, match="features"):
        model(image, features[:, :2], train=False)
    with pytest.raises(ValueError, match="image"):
        model(image[..., :4], features, train=False)


@pytest.mark.parametrize("shape, kernel, strides", [
    ((2, 8, 8, 10, 3), (3, 3, 3), (1, 1, 1)),
    ((2, 8, 8, 10, 3), (3, 3, 3), (2, 2, 2)),
    ((2, 7, 9, 5, 2), (3, 3, 5), (2, 2, 2)),  # odd sizes, a deep kernel, depth < kernel
    ((1, 6, 6, 9, 4), (1, 1, 3), (1, 1, 2)),
])
def test_depth_unfolded_conv3d_equals_the_native_one(shape, kernel, strides):
    kx, kk = jax.random.split(jax.random.key(0))
    x = jax.random.normal(kx, shape)
    k = jax.random.normal(kk, (*kernel, shape[-1], 5))

    def native(x, k):
        return jax.lax.conv_general_dilated(x, k, strides, "SAME",
                                            dimension_numbers=("NHWDC", "HWDIO", "NHWDC"))

    def loss(conv):
        return lambda x, k: jnp.sum(jnp.sin(conv(x, k)))

    unfolded = functools.partial(models.layers.conv3d_depth_unfold, strides=strides)
    np.testing.assert_allclose(unfolded(x, k), native(x, k), rtol=1e-5, atol=1e-5)
    grads = [jax.grad(loss(conv), argnums=(0, 1))(x, k) for conv in (unfolded, native)]
    for a, b in zip(*grads, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["cnn_local3d", "cnn_inception"])
def test_3d_models_give_the_same_outputs_with_either_conv3d(name):
    image, features = batch()
    outs = [make(name, n_features=3, conv3d=impl)(image, features, train=False)[0]
            for impl in ("native", "unfold")]
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)
