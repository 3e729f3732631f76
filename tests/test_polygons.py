"""Vectorised polygon operations against closed forms and shapely."""

import numpy as np
import pytest
import shapely

from hgcal_jax.geometry import polygons


def test_hexagon_area_is_exact():
    sides = np.array([0.4761, 0.6493, 1.0, 7.14])
    verts, count = polygons.regular_hexagons(np.zeros((4, 2)) + [150.0, -80.0], sides)
    np.testing.assert_allclose(polygons.polygon_area(verts, count), 1.5 * np.sqrt(3) * sides**2,
                               rtol=1e-12)


def test_centroid_of_regular_hexagon_is_its_centre():
    centers = np.array([[0.0, 0.0], [123.4, -56.7]])
    verts, count = polygons.regular_hexagons(centers, 0.65)
    np.testing.assert_allclose(polygons.polygon_centroid(verts, count), centers, atol=1e-12)


@pytest.mark.parametrize("pointy_top", [True, False])
def test_clip_to_square_matches_shapely(pointy_top):
    rng = np.random.default_rng(0)
    n = 300
    centers = rng.uniform(-2, 2, size=(n, 2))
    sides = rng.uniform(0.3, 1.0, size=n)
    verts, count = polygons.regular_hexagons(centers, sides, pointy_top=pointy_top)
    square = np.array([[-0.35, -0.35], [0.35, -0.35], [0.35, 0.35], [-0.35, 0.35]])
    clipped, ccount = polygons.clip_to_convex(verts, count, square)
    ours = polygons.polygon_area(clipped, ccount)
    box = shapely.box(-0.35, -0.35, 0.35, 0.35)
    ref = [shapely.Polygon(v[:c]).intersection(box).area for v, c in zip(verts, count, strict=True)]
    np.testing.assert_allclose(ours, ref, atol=1e-12)
    assert (ours > 0).any() and (ours == 0).any()  # both cases exercised


def test_clip_through_centre_gives_exact_halves():
    verts, count = polygons.regular_hexagons(np.zeros((1, 2)), 1.0)
    half, hcount = polygons.clip_halfplane(verts, count, np.array([1.0, 0.0]), 0.0)
    assert int(hcount[0]) == 4
    np.testing.assert_allclose(polygons.polygon_area(half, hcount), 0.75 * np.sqrt(3), rtol=1e-14)


def test_trim_refuses_to_drop_vertices():
    verts, count = polygons.regular_hexagons(np.zeros((2, 2)), 1.0)
    with pytest.raises(ValueError, match="6 vertices"):
        polygons.trim(verts, count, 5)
