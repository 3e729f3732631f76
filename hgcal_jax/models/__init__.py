"""Regression models on calorimeter images, built by name from the config's `model` section.

    model = models.build(config.model, image_shape=(H, W, L), n_features=F, n_outputs=T,
                         rngs=nnx.Rngs(params=seed))
    outputs_BxT, aux = model(image_BxHxWxL, features_BxF, train=True, rngs=nnx.Rngs(dropout=key))

`config.model.name` picks a class from `REGISTRY`; every other key is an option of that class
(`defaults(name)` lists them with their defaults; unknown names and keys raise ValueError).
Options every model takes (`layers.Options`): norm (batch | layer | none), dropout (on the head's
hidden layers), input_transform (log1p | linear) with input_scale (raw images are MIP or GeV,
up to thousands: the transform is inside the model so saliency is w.r.t. the raw image),
head_widths, activation (gelu | relu | silu), bn_momentum, coords (pixel-coordinate channels).

Contract for the training loop:
- call `model(image, features, *, train, rngs=None) -> (outputs_BxT, aux)`; aux always has
  "embedding" (B, D) and "first_conv"; the RNN also "sequence" (B, L, D). features may be None
  when n_features == 0.
- `rngs` is needed only when train=True and dropout > 0: pass `nnx.Rngs(dropout=key)` built inside
  the jitted step (e.g. from `jax.random.fold_in(rng, step)`). train=False is deterministic.
- state holds only `nnx.Param` and, with norm="batch", `nnx.BatchStat` (BatchNorm running mean
  and var, updated by train=True calls: take `nnx.state(model)` after the call). No rng state is
  stored in the model, so `nnx.split(model)` / `nnx.merge` round-trip cleanly under jit.
- BatchNorm has no axis_name: jit over a batch sharded on the data axis already computes global
  batch statistics.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import ml_collections
from flax import nnx

from hgcal_jax.models import cnn, layers, resnet, rnn

REGISTRY: dict[str, type[layers.Regressor]] = {
    "cnn_global": cnn.GlobalZCNN,
    "cnn_local3d": cnn.Local3DCNN,
    "cnn_inception": cnn.InceptionCNN,
    "cnn_resnet": resnet.ResNetCNN,
    "rnn": rnn.LayerRNN,
}


def _model_class(name: Any) -> type[layers.Regressor]:
    if name not in REGISTRY:
        raise ValueError(f"unknown model name {name!r} (known: {', '.join(REGISTRY)})")
    return REGISTRY[name]


def _freeze(value: Any) -> Any:
    """Lists (from flags or YAML-ish configs) become tuples so the options stay hashable."""
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value


def options_from_config(config: Mapping[str, Any] | ml_collections.ConfigDict) -> layers.Options:
    """The options dataclass of `config.name`, filled from the other keys of `config`."""
    values = dict(config.to_dict() if isinstance(config, ml_collections.ConfigDict) else config)
    cls = _model_class(values.pop("name", None))
    fields = {f.name for f in dataclasses.fields(cls.options_class)}
    unknown = sorted(set(values) - fields)
    if unknown:
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for model {config['name']!r} "
                         f"(known: {', '.join(sorted(fields))})")
    return cls.options_class(**{k: _freeze(v) for k, v in values.items()})


def build(config: ml_collections.ConfigDict | Mapping[str, Any], *, image_shape: Sequence[int],
          n_features: int, n_outputs: int, rngs: nnx.Rngs) -> layers.Regressor:
    """Build the model named by `config.name` with the remaining keys as its options."""
    options = options_from_config(config)
    cls = _model_class(config["name"])
    return cls(options, image_shape=tuple(image_shape), n_features=n_features, n_outputs=n_outputs,
               rngs=rngs)


def defaults(name: str) -> ml_collections.ConfigDict:
    """A model config section with every option of `name` at its default (for configs to override)."""
    options = dataclasses.asdict(_model_class(name).options_class())
    return ml_collections.ConfigDict({"name": name, **options})
