"""DiffAugment: each op against its definition, the random draws' ranges, policy parsing
and XLA compilation with gradients."""
import os
import sys

import numpy as np
import pytest
import tensorflow as tf

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import diffaug  # noqa: E402


def _images(b, h, w, c=3, seed=0):
    """Distinct, nonzero pixel values, so every moved or zeroed pixel is visible."""
    rng = np.random.default_rng(seed)
    return rng.uniform(0.1, 1.0, size=(b, h, w, c)).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Reference implementations, written straight from the definitions (loops, no tricks)
# ---------------------------------------------------------------------------------------

def np_translate(x, tx, ty):
    b, h, w, _ = x.shape
    out = np.zeros_like(x)
    for n in range(b):
        for i in range(h):
            for j in range(w):
                si, sj = i + tx[n], j + ty[n]
                if 0 <= si < h and 0 <= sj < w:
                    out[n, i, j] = x[n, si, sj]
    return out


def np_cutout(x, ox, oy, cut_h, cut_w):
    b, h, w, _ = x.shape
    out = x.copy()
    for n in range(b):
        r0, c0 = ox[n] - cut_h // 2, oy[n] - cut_w // 2
        for i in range(max(r0, 0), min(r0 + cut_h, h)):
            for j in range(max(c0, 0), min(c0 + cut_w, w)):
                out[n, i, j] = 0
    return out


# ---------------------------------------------------------------------------------------
# Pure ops
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize('tx,ty', [
    (0, 0), (1, 0), (0, 1), (-1, 0), (0, -1), (2, -3), (-3, 2),
    (4, 4), (-4, -4), (4, -4), (-4, 4),  # the extremes for size 32 (shift 4) scaled down
    (8, 0), (0, -6),                      # whole image shifted out -> all zero
])
def test_translate_matches_definition(tx, ty):
    x = _images(2, 8, 6)
    txs, tys = np.array([tx, tx]), np.array([ty, ty])
    out = diffaug.translate(tf.constant(x), tf.constant(txs), tf.constant(tys)).numpy()
    np.testing.assert_array_equal(out, np_translate(x, txs, tys))


def test_translate_single_pixel_moves_by_minus_shift():
    # out[i, j] = in[i + tx, j + ty]: a pixel at (r, c) ends up at (r - tx, c - ty).
    x = np.zeros((1, 8, 8, 1), np.float32)
    x[0, 4, 3, 0] = 1.0
    out = diffaug.translate(tf.constant(x), tf.constant([2]), tf.constant([-3])).numpy()
    assert out[0, 2, 6, 0] == 1.0
    assert out.sum() == 1.0


def test_translate_per_sample_shifts():
    x = _images(5, 7, 9)
    tx = np.array([0, 3, -2, -7, 1])
    ty = np.array([-4, 4, 0, 1, -9])
    out = diffaug.translate(tf.constant(x), tf.constant(tx), tf.constant(ty)).numpy()
    np.testing.assert_array_equal(out, np_translate(x, tx, ty))
    # sanity: the samples really got different shifts
    for n in range(5):
        np.testing.assert_array_equal(
            out[n], np_translate(x[n:n + 1], tx[n:n + 1], ty[n:n + 1])[0])


def test_brightness_matches_formula():
    x = _images(3, 4, 5)
    delta = np.array([-0.5, 0.0, 0.37], np.float32)
    out = diffaug.brightness(tf.constant(x), tf.constant(delta)).numpy()
    np.testing.assert_allclose(out, x + delta[:, None, None, None], rtol=0, atol=1e-6)


def test_saturation_matches_formula():
    x = _images(3, 4, 5)
    f = np.array([0.0, 1.0, 1.7], np.float32)
    out = diffaug.saturation(tf.constant(x), tf.constant(f)).numpy()
    m = x.mean(axis=3, keepdims=True)
    np.testing.assert_allclose(out, (x - m) * f[:, None, None, None] + m, atol=1e-6)
    # factor 0 makes every pixel gray (all channels equal to its channel mean)
    np.testing.assert_allclose(out[0], np.broadcast_to(m[0], x[0].shape), atol=1e-6)


def test_contrast_matches_formula():
    x = _images(3, 4, 5)
    f = np.array([0.5, 1.0, 1.4], np.float32)
    out = diffaug.contrast(tf.constant(x), tf.constant(f)).numpy()
    m = x.mean(axis=(1, 2, 3), keepdims=True)
    np.testing.assert_allclose(out, (x - m) * f[:, None, None, None] + m, atol=1e-6)
    # the per-image mean is preserved
    np.testing.assert_allclose(out.mean(axis=(1, 2, 3)), m.ravel(), atol=1e-6)


@pytest.mark.parametrize('h,w,ox,oy,cut', [
    (8, 8, 4, 4, 4),        # centred, fully inside
    (8, 8, 0, 0, 4),        # top-left corner, clipped to rows/cols 0..1
    (8, 8, 8, 8, 4),        # offset == H (allowed for even cut), clipped
    (8, 8, 7, 0, 3),        # odd cut at the bottom edge
    (9, 6, 2, 5, (5, 3)),   # non-square image and cut
])
def test_cutout_zeroes_exactly_the_clipped_square(h, w, ox, oy, cut):
    x = _images(1, h, w)
    cut_h, cut_w = cut if isinstance(cut, tuple) else (cut, cut)
    out = diffaug.cutout(tf.constant(x), tf.constant([ox]), tf.constant([oy]), cut).numpy()
    np.testing.assert_array_equal(out, np_cutout(x, [ox], [oy], cut_h, cut_w))


def test_cutout_corner_area_and_per_sample():
    x = np.ones((3, 8, 8, 2), np.float32)
    ox, oy = np.array([0, 4, 8]), np.array([0, 4, 3])
    out = diffaug.cutout(tf.constant(x), tf.constant(ox), tf.constant(oy), 4).numpy()
    zeros = (out[..., 0] == 0)
    # corner: rows/cols [-2, 2) clipped -> 2x2; centre: 4x4 at [2, 6); bottom: rows [6, 8)
    assert zeros[0].sum() == 4 and zeros[0, :2, :2].all()
    assert zeros[1].sum() == 16 and zeros[1, 2:6, 2:6].all()
    assert zeros[2].sum() == 8 and zeros[2, 6:8, 1:5].all()
    assert (out[..., 1] == out[..., 0]).all()  # all channels masked alike


def test_ops_keep_low_precision_dtype():
    for dtype in (tf.bfloat16, tf.float16):
        x = tf.cast(_images(2, 8, 8), dtype)
        out = diffaug.diff_augment(x, 'color,translation,cutout')
        assert out.dtype == dtype


# ---------------------------------------------------------------------------------------
# Gradients of the pure ops (every op must pass gradients to x)
# ---------------------------------------------------------------------------------------

def _grad_of_sum(fn, x):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = tf.reduce_sum(fn(x))
    return tape.gradient(y, x).numpy()


def test_translate_gradient_is_one_on_visible_source_pixels():
    x = _images(2, 6, 6)
    tx, ty = np.array([2, -1]), np.array([-3, 0])
    g = _grad_of_sum(lambda v: diffaug.translate(v, tx, ty), x)
    # pixel (r, c) is used iff it lands inside: 0 <= r - tx < H and 0 <= c - ty < W
    for n in range(2):
        for r in range(6):
            for c in range(6):
                used = 0 <= r - tx[n] < 6 and 0 <= c - ty[n] < 6
                assert (g[n, r, c] == (1.0 if used else 0.0)).all()


def test_cutout_gradient_is_the_mask():
    x = _images(1, 8, 8)
    g = _grad_of_sum(lambda v: diffaug.cutout(v, tf.constant([3]), tf.constant([5]), 4), x)
    expected = np_cutout(np.ones_like(x), [3], [5], 4, 4)
    np.testing.assert_array_equal(g, expected)


def test_color_gradients_flow():
    x = _images(2, 4, 4)
    w = tf.constant(_images(2, 4, 4, seed=1))  # non-uniform weights: sum alone is blind to contrast
    for fn in (lambda v: diffaug.brightness(v, [0.2, -0.3]),
               lambda v: diffaug.saturation(v, [0.5, 1.5]),
               lambda v: diffaug.contrast(v, [0.7, 1.3])):
        g = _grad_of_sum(lambda v: fn(v) * w, x)
        assert np.isfinite(g).all() and np.abs(g).sum() > 0


# ---------------------------------------------------------------------------------------
# Random draws and the rand_* wrappers
# ---------------------------------------------------------------------------------------

def test_draw_color_ranges():
    delta, sat, con = (v.numpy() for v in diffaug.draw_color(20000))
    for v, lo, hi in ((delta, -0.5, 0.5), (sat, 0.0, 2.0), (con, 0.5, 1.5)):
        assert v.shape == (20000,) and v.dtype == np.float32
        assert v.min() >= lo and v.max() < hi
        # spread over the whole range, not a sub-range or a constant
        assert v.min() < lo + 0.01 * (hi - lo) and v.max() > hi - 0.01 * (hi - lo)
        assert abs(v.mean() - (lo + hi) / 2) < 0.02 * (hi - lo)
    assert not np.allclose(delta + 0.5, sat / 2)  # independent draws


@pytest.mark.parametrize('h,w,sx,sy', [(32, 32, 4, 4), (32, 16, 4, 2), (28, 20, 4, 3), (4, 4, 1, 1)])
def test_draw_translation_range_and_coverage(h, w, sx, sy):
    tx, ty = (v.numpy() for v in diffaug.draw_translation(4000, h, w))
    assert tx.dtype == np.int32 and ty.dtype == np.int32
    assert set(np.unique(tx)) == set(range(-sx, sx + 1))
    assert set(np.unique(ty)) == set(range(-sy, sy + 1))


@pytest.mark.parametrize('h,w,cut_h,cut_w', [(32, 32, 16, 16), (6, 7, 3, 4)])
def test_draw_cutout_range_and_coverage(h, w, cut_h, cut_w):
    assert diffaug.cutout_size(h, w) == (cut_h, cut_w)
    ox, oy = (v.numpy() for v in diffaug.draw_cutout(4000, h, w))
    # [0, size + (1 - cut % 2)): size itself is reachable only for even cuts
    assert set(np.unique(ox)) == set(range(h + 1 - cut_h % 2))
    assert set(np.unique(oy)) == set(range(w + 1 - cut_w % 2))


def test_rand_translation_is_a_shift_in_range_and_covers_all():
    x = _images(300, 8, 8, c=1)  # shift = int(8 * 0.125 + 0.5) = 1
    out = diffaug.rand_translation(tf.constant(x)).numpy()
    seen = set()
    for n in range(len(x)):
        hits = [(a, b) for a in (-1, 0, 1) for b in (-1, 0, 1)
                if np.array_equal(out[n:n + 1], np_translate(x[n:n + 1], [a], [b]))]
        assert len(hits) == 1, f'sample {n} is not a shift within [-1, 1]'
        seen.add(hits[0])
    assert len(seen) == 9


def test_rand_cutout_is_a_square_in_range_and_covers_all():
    x = _images(1000, 6, 6, c=1)  # cut = 3 (odd) -> offsets in [0, 6)
    out = diffaug.rand_cutout(tf.constant(x)).numpy()
    seen_x, seen_y = set(), set()
    for n in range(len(x)):
        hits = [(a, b) for a in range(7) for b in range(7)
                if np.array_equal(out[n:n + 1], np_cutout(x[n:n + 1], [a], [b], 3, 3))]
        assert len(hits) == 1, f'sample {n} is not a clipped 3x3 hole'
        seen_x.add(hits[0][0])
        seen_y.add(hits[0][1])
    assert seen_x == set(range(6)) and seen_y == set(range(6))


def test_rand_brightness_and_rand_color():
    x = tf.constant(_images(64, 4, 4))
    d = (diffaug.rand_brightness(x) - x).numpy()
    per_sample = d.reshape(64, -1)
    np.testing.assert_allclose(per_sample, per_sample[:, :1].repeat(48, 1), atol=1e-6)
    assert per_sample.min() >= -0.5 - 1e-6 and per_sample.max() < 0.5 + 1e-6
    assert per_sample.std() > 0.1  # per sample, not one delta for the batch
    # with a seed, rand_color applies all three ops with the drawn values. (The three are
    # affine maps that commute, so the order only matters for rounding.)
    seed = tf.constant([3, 7])
    delta, sat, con = diffaug.draw_color(64, seed)
    expected = diffaug.contrast(diffaug.saturation(diffaug.brightness(x, delta), sat), con)
    np.testing.assert_allclose(diffaug.rand_color(x, seed).numpy(), expected.numpy(), atol=1e-6)


def test_seeded_calls_are_reproducible_and_unseeded_vary():
    x = tf.constant(_images(8, 16, 16))
    pol = 'color,translation,cutout'
    a = diffaug.diff_augment(x, pol, seed=tf.constant([1, 2]))
    b = diffaug.diff_augment(x, pol, seed=tf.constant([1, 2]))
    c = diffaug.diff_augment(x, pol, seed=tf.constant([1, 3]))
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert not np.allclose(a.numpy(), c.numpy())
    assert not np.allclose(diffaug.diff_augment(x, pol).numpy(),
                           diffaug.diff_augment(x, pol).numpy())


# ---------------------------------------------------------------------------------------
# Policy
# ---------------------------------------------------------------------------------------

def test_empty_policy_is_identity():
    x = tf.constant(_images(4, 8, 8))
    np.testing.assert_array_equal(diffaug.diff_augment(x, '').numpy(), x.numpy())
    np.testing.assert_array_equal(diffaug.diff_augment(x, None).numpy(), x.numpy())


def test_policy_applies_only_listed_ops():
    x = tf.constant(_images(16, 8, 8))
    # translation only: every sample is a pure shift (values drawn from x or 0, no color change)
    t = diffaug.diff_augment(x, 'translation').numpy()
    xs = set(np.round(x.numpy().ravel(), 6)) | {0.0}
    assert set(np.round(t.ravel(), 6)) <= xs
    # cutout only: x where not zeroed
    cu = diffaug.diff_augment(x, 'cutout').numpy()
    assert ((cu == x.numpy()) | (cu == 0)).all() and (cu == 0).any()
    # color only: shape kept, values changed, no shifting of zeros
    co = diffaug.diff_augment(x, 'color').numpy()
    assert co.shape == x.shape and not np.allclose(co, x.numpy())


def test_policy_order_follows_the_string():
    assert diffaug.parse_policy('color,translation,cutout') == ['color', 'translation', 'cutout']
    assert diffaug.parse_policy('translation, color') == ['translation', 'color']
    assert diffaug.parse_policy('') == []


def test_unknown_op_raises_value_error_naming_it():
    x = tf.constant(_images(2, 8, 8))
    with pytest.raises(ValueError, match='flip'):
        diffaug.diff_augment(x, 'color,flip')


# ---------------------------------------------------------------------------------------
# XLA
# ---------------------------------------------------------------------------------------

def test_full_policy_compiles_with_xla_and_has_gradients():
    w = tf.constant(_images(1, 16, 16, seed=3))

    @tf.function(jit_compile=True,
                 input_signature=[tf.TensorSpec([None, 16, 16, 3], tf.float32)])
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = diffaug.diff_augment(x, 'color,translation,cutout')
            loss = tf.reduce_sum(y * w)
        return y, tape.gradient(loss, x)

    for b in (4, 3):
        x = tf.constant(_images(b, 16, 16, seed=b))
        y, g = step(x)
        assert y.shape == (b, 16, 16, 3)
        g = g.numpy()
        assert np.isfinite(g).all() and np.abs(g).sum() > 0
        # proves it went through XLA, not a silent TF fallback
        hlo = step.experimental_get_compiler_ir(x)(stage='hlo')
        assert 'HloModule' in hlo


def test_seeded_bfloat16_compiles_with_xla():
    @tf.function(jit_compile=True)
    def aug(x, seed):
        return diffaug.diff_augment(x, 'color,translation,cutout', seed=seed)

    x = tf.cast(_images(2, 8, 8), tf.bfloat16)
    seed = tf.constant([5, 6])
    y = aug(x, seed)
    assert y.dtype == tf.bfloat16
    np.testing.assert_array_equal(y.numpy(), aug(x, seed).numpy())


def test_dynamic_spatial_shape_in_graph():
    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.float32)])
    def aug(x):
        return diffaug.diff_augment(x, 'color,translation,cutout')

    assert aug(tf.constant(_images(2, 10, 12))).shape == (2, 10, 12, 3)
