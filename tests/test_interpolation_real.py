"""The real CMSSW ntuple: both events, both endcaps, through the derived geometry."""

import awkward as ak
import numpy as np
import pytest
import uproot

from hgcal_jax import interpolation
from hgcal_jax.geometry import ntuple
from hgcal_jax.interpolation import operator, table
from tests.conftest import shared_data


@pytest.fixture(scope="module")
def real():
    path = shared_data("hgcal_ntuple_muons_35GeV_2ev.root")
    geometry = ntuple.from_ntuple(path)
    tab = table.build(geometry, interpolation.Grid.full(geometry))
    with uproot.open(path) as f:
        hits = f["ana/hgc"].arrays(["rechit_detid", "rechit_energy", "rechit_z"])
    return geometry, tab, hits


@pytest.mark.parametrize("event", [0, 1])
@pytest.mark.parametrize("zside", [1, -1])
def test_real_events_interpolate_with_energy_and_barycentres(real, event, zside):
    geometry, tab, hits = real
    ids = ak.to_numpy(hits["rechit_detid"][event]).astype(np.int64)
    energy = ak.to_numpy(hits["rechit_energy"][event]).astype(np.float32)
    z = ak.to_numpy(hits["rechit_z"][event])
    rows = geometry.index_of(ids)
    keep = (rows >= 0) & (np.sign(z) == zside)  # silicon hits of this endcap only
    cells, energy = rows[keep].astype(np.int32), energy[keep]
    assert len(cells) > 10_000 and (geometry.zside[cells] == zside).all()
    operator.validate_hits(len(geometry), cells[None], energy[None], np.ones((1, len(cells)), bool))
    out = operator.interpolate(operator.DeviceTable.from_table(tab), cells[None], energy[None],
                               np.ones((1, len(cells)), bool))
    image = np.asarray(out.image[0], np.float64)
    np.testing.assert_allclose(image.sum(), energy.sum(), rtol=1e-5)
    grid = tab.grid
    xs = grid.x0 + (np.arange(grid.nx) + 0.5) * grid.pixel_cm
    ys = grid.y0 + (np.arange(grid.ny) + 0.5) * grid.pixel_cm
    layer = grid.layer_index(geometry.layer[cells])
    per_layer = np.bincount(layer, energy.astype(np.float64), minlength=grid.n_layers)
    hit_x = np.bincount(layer, energy * geometry.x[cells], minlength=grid.n_layers)
    hit_y = np.bincount(layer, energy * geometry.y[cells], minlength=grid.n_layers)
    # Layers with a solid signal (noise-only layers can sum to ~0 with negative hits).
    solid = per_layer > 0.2 * per_layer.max()
    assert solid.sum() >= 5
    np.testing.assert_allclose(image.sum((0, 1))[solid], per_layer[solid], rtol=1e-4)
    img_x = np.einsum("hwl,w->l", image, xs)[solid] / per_layer[solid]
    img_y = np.einsum("hwl,h->l", image, ys)[solid] / per_layer[solid]
    np.testing.assert_allclose(img_x, hit_x[solid] / per_layer[solid], atol=0.1)
    np.testing.assert_allclose(img_y, hit_y[solid] / per_layer[solid], atol=0.1)
