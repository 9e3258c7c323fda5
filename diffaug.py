"""DiffAugment (Zhao et al. 2020) for NHWC images in [-1, 1].

Same semantics as the DiffAugment TF code LadaGAN uses (SPEC §5):

- color: per sample, brightness + U[-0.5, 0.5), then saturation x U[0, 2) around
  the channel mean, then contrast x U[0.5, 1.5) around the per-image mean.
- translation: integer shifts in [-shift, shift], shift = int(0.125 * size + 0.5),
  out[i, j] = in[i + tx, j + ty], zero outside the image.
- cutout: a square of int(0.5 * size + 0.5) per axis centred at a random offset,
  clipped to the image, set to zero.

Each op exists twice: a pure function taking its random values explicitly (for
tests) and a `rand_*` wrapper drawing them. Everything is built from gather and
mask multiplies so it compiles under XLA with any batch size and stays
differentiable w.r.t. x.

Randomness: with `seed=None` the stateful `tf.random` ops are used (like the
original). Passing a shape-[2] integer `seed` uses the stateless ops instead,
which makes a call reproducible.
"""
import tensorflow as tf

import config

# Sub-seed tags, so the ops fed from one user seed draw independent values.
_BRIGHTNESS, _SATURATION, _CONTRAST, _TX, _TY, _CUT_X, _CUT_Y = range(7)


# ---------------------------------------------------------------------------------------
# Random helpers
# ---------------------------------------------------------------------------------------

def _sub_seed(seed, tag):
    """Derives an independent stateless seed; None stays None (stateful draws)."""
    if seed is None:
        return None
    return tf.random.experimental.stateless_fold_in(tf.cast(seed, tf.int64), tag)


def _uniform(shape, minval, maxval, dtype, seed):
    """U[minval, maxval); integer draws exclude maxval as in tf.random.uniform."""
    if seed is None:
        return tf.random.uniform(shape, minval, maxval, dtype=dtype)
    return tf.random.stateless_uniform(shape, seed, minval, maxval, dtype=dtype)


def _batch_size(x):
    return tf.shape(x)[0]


def _spatial(x):
    """(H, W): Python ints when static, so ratios are computed exactly as in Python."""
    static = x.shape[1:3]
    dynamic = tf.shape(x)[1:3]
    return tuple(static[i] if static[i] is not None else dynamic[i] for i in range(2))


def _scaled(size, ratio):
    """int(size * ratio + 0.5), for a Python int or an int tensor."""
    if isinstance(size, int):
        return int(size * ratio + 0.5)
    return tf.cast(tf.cast(size, tf.float32) * ratio + 0.5, tf.int32)


def _per_sample(v, dtype):
    """(B,) -> (B, 1, 1, 1) in x's dtype, so it broadcasts over H, W, C."""
    return tf.reshape(tf.cast(v, dtype), [-1, 1, 1, 1])


# ---------------------------------------------------------------------------------------
# Pure ops (random values given explicitly, each of shape (B,))
# ---------------------------------------------------------------------------------------

def brightness(x, delta):
    """x + delta per sample."""
    return x + _per_sample(delta, x.dtype)


def saturation(x, factor):
    """Scales each pixel's deviation from its channel mean by factor per sample."""
    mean = tf.reduce_mean(x, axis=3, keepdims=True)
    return (x - mean) * _per_sample(factor, x.dtype) + mean


def contrast(x, factor):
    """Scales the deviation from the per-image mean (over H, W, C) by factor."""
    mean = tf.reduce_mean(x, axis=[1, 2, 3], keepdims=True)
    return (x - mean) * _per_sample(factor, x.dtype) + mean


def _shift_axis(x, shift, axis):
    """out[.., i, ..] = x[.., i + shift, ..] along axis (1 or 2), 0 where out of range."""
    size = tf.shape(x)[axis]
    src = tf.range(size)[None, :] + tf.reshape(tf.cast(shift, tf.int32), [-1, 1])  # (B, size)
    valid = tf.logical_and(src >= 0, src < size)
    # Clip so the gather stays in range; the mask then zeroes the clipped rows.
    # Gather + multiply keeps the op differentiable and XLA-compilable.
    out = tf.gather(x, tf.clip_by_value(src, 0, size - 1), axis=axis, batch_dims=1)
    mask = tf.cast(valid, x.dtype)
    mask = mask[:, :, None, None] if axis == 1 else mask[:, None, :, None]
    return out * mask


def translate(x, tx, ty):
    """out[b, i, j] = x[b, i + tx[b], j + ty[b]], zero outside the image."""
    return _shift_axis(_shift_axis(x, tx, axis=1), ty, axis=2)


def _cut_range(offset, cut, size):
    """(B, size) bool: positions inside [offset - cut//2, offset - cut//2 + cut)."""
    start = tf.reshape(tf.cast(offset, tf.int32), [-1, 1]) - cut // 2
    pos = tf.range(size)[None, :]
    return tf.logical_and(pos >= start, pos < start + cut)


def cutout(x, offset_x, offset_y, size):
    """Zeroes per sample rows [offset_x - cut_h//2, offset_x - cut_h//2 + cut_h) x
    cols [offset_y - cut_w//2, ...) clipped to the image; size is cut or (cut_h, cut_w)."""
    cut_h, cut_w = size if isinstance(size, (tuple, list)) else (size, size)
    h, w = _spatial(x)
    rows = _cut_range(offset_x, cut_h, h)  # (B, H)
    cols = _cut_range(offset_y, cut_w, w)  # (B, W)
    hole = tf.logical_and(rows[:, :, None], cols[:, None, :])  # (B, H, W)
    mask = 1 - tf.cast(hole, x.dtype)
    return x * mask[..., None]


# ---------------------------------------------------------------------------------------
# Random draws
# ---------------------------------------------------------------------------------------

def draw_color(batch_size, seed=None):
    """(delta, sat_factor, con_factor), each (B,) float32 in
    [-0.5, 0.5), [0, 2), [0.5, 1.5)."""
    shape = [batch_size]
    delta = _uniform(shape, 0.0, 1.0, tf.float32, _sub_seed(seed, _BRIGHTNESS)) - 0.5
    sat = _uniform(shape, 0.0, 1.0, tf.float32, _sub_seed(seed, _SATURATION)) * 2.0
    con = _uniform(shape, 0.0, 1.0, tf.float32, _sub_seed(seed, _CONTRAST)) + 0.5
    return delta, sat, con


def draw_translation(batch_size, height, width, ratio=0.125, seed=None):
    """(tx, ty), each (B,) int32, uniform on [-shift, shift] (inclusive) with
    shift = int(ratio * size + 0.5); tx uses H and ty uses W."""
    sx, sy = _scaled(height, ratio), _scaled(width, ratio)
    tx = _uniform([batch_size], -sx, sx + 1, tf.int32, _sub_seed(seed, _TX))
    ty = _uniform([batch_size], -sy, sy + 1, tf.int32, _sub_seed(seed, _TY))
    return tx, ty


def cutout_size(height, width, ratio=0.5):
    """(cut_h, cut_w) = int(ratio * size + 0.5) per axis."""
    return _scaled(height, ratio), _scaled(width, ratio)


def draw_cutout(batch_size, height, width, ratio=0.5, seed=None):
    """(offset_x, offset_y), each (B,) int32, offset_x in [0, H + (1 - cut_h % 2))
    and offset_y likewise with W; the extra value for even cuts keeps the hole
    distribution symmetric, as in the original code."""
    cut_h, cut_w = cutout_size(height, width, ratio)
    ox = _uniform([batch_size], 0, height + (1 - cut_h % 2), tf.int32, _sub_seed(seed, _CUT_X))
    oy = _uniform([batch_size], 0, width + (1 - cut_w % 2), tf.int32, _sub_seed(seed, _CUT_Y))
    return ox, oy


# ---------------------------------------------------------------------------------------
# Random ops
# ---------------------------------------------------------------------------------------

def rand_brightness(x, seed=None):
    delta, _, _ = draw_color(_batch_size(x), seed)
    return brightness(x, delta)


def rand_saturation(x, seed=None):
    _, sat, _ = draw_color(_batch_size(x), seed)
    return saturation(x, sat)


def rand_contrast(x, seed=None):
    _, _, con = draw_color(_batch_size(x), seed)
    return contrast(x, con)


def rand_color(x, seed=None):
    """Brightness, then saturation, then contrast (the original order)."""
    delta, sat, con = draw_color(_batch_size(x), seed)
    return contrast(saturation(brightness(x, delta), sat), con)


def rand_translation(x, ratio=0.125, seed=None):
    h, w = _spatial(x)
    tx, ty = draw_translation(_batch_size(x), h, w, ratio, seed)
    return translate(x, tx, ty)


def rand_cutout(x, ratio=0.5, seed=None):
    h, w = _spatial(x)
    ox, oy = draw_cutout(_batch_size(x), h, w, ratio, seed)
    return cutout(x, ox, oy, cutout_size(h, w, ratio))


# One entry per name of config.POLICY_OPS (tests/test_config.py checks).
AUGMENT_FNS = {
    'color': rand_color,
    'translation': rand_translation,
    'cutout': rand_cutout,
}


def parse_policy(policy):
    """'color,translation' -> ['color', 'translation']; '' -> []. Raises ValueError
    on unknown ops, before anything is traced."""
    ops = config.policy_ops(policy or '')
    for op in ops:
        if op not in AUGMENT_FNS:
            raise ValueError(
                f"Unknown DiffAugment op '{op}' in policy '{policy}'; "
                f"expected some of {sorted(AUGMENT_FNS)}")
    return ops


def diff_augment(x, policy='color,translation', seed=None):
    """Applies the policy's ops in the order they appear in `policy` (NHWC, dtype kept).

    With a shape-[2] int `seed`, every op draws statelessly from a sub-seed of it.
    """
    for i, op in enumerate(parse_policy(policy)):
        x = AUGMENT_FNS[op](x, seed=_sub_seed(seed, 100 + i))
    return x
