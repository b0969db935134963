"""The fast backend's compiled pieces against highway-env's own objects: lanes, lane search, numerics,
collision geometry."""

from __future__ import annotations

import numpy as np

from intersection_meta.envs.fast import kernel as K
from intersection_meta.envs.fast.collision import is_colliding, polygon, polygons_intersecting
from intersection_meta.envs.fast import numerics
from intersection_meta.envs.fast.numerics import dot2, dot_is_fused, norm2, round_half_even, wrap_to_pi
from intersection_meta.envs.fast.road import L_CIRCULAR, lane_table, reference_network


def test_lane_geometry_and_closest_lane_match_highway_env():
    tab, net, fused = lane_table(), reference_network(), dot_is_fused()
    geo = tab.geometry
    rng = np.random.default_rng(0)
    pts = rng.uniform(-60, 60, size=(300, 2))
    pts[:150] = rng.uniform(-15, 15, size=(150, 2))  # dense in the junction
    heading = rng.uniform(-np.pi, np.pi, size=300)
    for k, name in enumerate(tab.names):
        lane = net.get_lane(name)
        # Straight lanes are bit-identical; arcs go through libm's atan2, which differs from NumPy's SIMD
        # arctan2 in the last bit for a few percent of arguments on AVX-512 machines.
        tol = 1e-12 if geo[k, L_CIRCULAR] else 0.0
        for p, h in zip(pts[:60], heading[:60], strict=True):
            s, r = K.local_coordinates(geo, k, p[0], p[1], fused)
            np.testing.assert_allclose((s, r), lane.local_coordinates(p), rtol=0, atol=tol * 100)
            assert K.heading_at(geo, k, s) == lane.heading_at(s)
            np.testing.assert_allclose(K.position(geo, k, s), lane.position(s, 0), rtol=0, atol=1e-12)
            d = K.lane_distance(geo, k, p[0], p[1], h, fused)
            np.testing.assert_allclose(d, lane.distance_with_heading(p, h), rtol=0, atol=tol * 100)
    for p, h in zip(pts, heading, strict=True):
        expected = tab.index(net.get_closest_lane_index(p, h))
        assert K.closest_lane(geo, p[0], p[1], h, -1, fused) == expected
        for prev in (0, 7, expected, len(tab.names) - 1):  # the pruned search, from any previous lane
            assert K.closest_lane(geo, p[0], p[1], h, prev, fused) == expected


def test_dot_norm_wrap_round_are_bitwise_numpy():
    rng = np.random.default_rng(0)
    fused = dot_is_fused()
    u, w = rng.normal(size=(2000, 2)) * 10, rng.normal(size=(2000, 2))
    for a, b in zip(u, w, strict=True):
        assert dot2(a[0], a[1], b[0], b[1], fused) == np.dot(a, b)
        assert norm2(a[0], a[1], fused) == np.linalg.norm(a)
    x = np.concatenate([np.linspace(-20, 20, 10001), [-np.pi, np.pi, -3 * np.pi, 3 * np.pi, 0.0, -0.0, 1e3]])
    for v in x:
        assert wrap_to_pi(v) == ((v + np.pi) % (2 * np.pi)) - np.pi
    for v in np.concatenate([np.arange(-6, 6, 0.25), rng.uniform(-9, 9, 200)]):
        assert round_half_even(v) == np.round(v)


def test_polygons_and_separating_axis_test_are_bitwise_highway_env():
    from highway_env import utils
    from highway_env.vehicle.kinematics import Vehicle

    rng = np.random.default_rng(0)
    fused, dt = dot_is_fused(), 1 / 15
    will_count = 0
    for _ in range(400):
        xa, ya, ha, va = rng.uniform(-20, 20), rng.uniform(-20, 20), rng.uniform(-7, 7), rng.uniform(0, 10)
        xb, yb = xa + rng.uniform(-4, 4), ya + rng.uniform(-4, 4)
        hb, vb = rng.uniform(-7, 7), rng.uniform(0, 10)
        a, b = Vehicle(None, [xa, ya], ha, va), Vehicle(None, [xb, yb], hb, vb)
        pa, pb = polygon(xa, ya, ha), polygon(xb, yb, hb)
        assert np.array_equal(np.reshape(pa, (4, 2)), a.polygon()[:4])
        da, db = a.velocity * dt, b.velocity * dt
        ref_i, ref_w, ref_t = utils.are_polygons_intersecting(a.polygon(), b.polygon(), da, db)
        inter, will, tx, ty = polygons_intersecting(pa, pb, da[0], da[1], db[0], db[1], fused)
        assert (ref_i, ref_w) == (inter, will)
        if ref_w:
            will_count += 1
            assert (tx, ty) == tuple(ref_t)
        ref = a._is_colliding(b, dt)
        got = is_colliding(xa, ya, ha, va, xb, yb, hb, vb, dt, fused)
        assert (ref[0], ref[1]) == got[:2]
    assert will_count > 100


def test_tiny_argument_shortcuts_equal_libm_and_numpy():
    """asin/atan/tan/sin skip the library call below 2**-30: both libm and NumPy return x there."""
    import math

    rng = np.random.default_rng(1)
    x = np.exp(rng.uniform(np.log(1e-300), np.log(2.0**-30), 20_000))
    x = np.concatenate([x, -x, [0.0, -0.0, np.nextafter(2.0**-30, 0.0)]])
    for ours, ref, ref_np in (
        (numerics.asin, math.asin, np.arcsin),
        (numerics.atan, math.atan, np.arctan),
        (numerics.tan, math.tan, np.tan),
        (numerics.sin, math.sin, np.sin),
    ):
        assert np.array_equal(ref_np(x), x)
        for v in x[::50]:
            assert ours(v) == ref(v) == v
        for v in (2.0**-30, 0.1, -0.7):  # above the threshold: the library's value
            assert ours(v) == ref(v)
