"""Data pipeline, checkpoints in the authors' format, and model loading."""
import concurrent.futures
import glob
import json
import os
import struct
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

# ---------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
# Image formats TensorFlow cannot decode: listed with a warning instead of ignored in silence.
UNSUPPORTED_IMAGE_EXTENSIONS = ('.tif', '.tiff', '.heic', '.heif', '.avif', '.jp2', '.jxl',
                                '.ppm', '.pgm', '.pbm', '.ico', '.psd', '.exr', '.dng')
# Decoded float32 training images are cached in memory below this size (CIFAR-10 at 32 px:
# 0.6 GiB); bigger sets (CelebA 64: 9.8 GiB) are decoded again every epoch.
CACHE_LIMIT_BYTES = 2 * 1024 ** 3
SHAPES_MARKER = '_complete.json'  # written last by make_shapes_dataset
_SHAPES_VERSION = 1  # bump when the drawing changes, so old folders are regenerated
_PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'


class DataError(ValueError):
    """Unusable data input; the message says what to do about it."""


class DataWarning(UserWarning):
    """Some image files are skipped; the message names them."""


def list_image_files(file_pattern):
    """Sorted image files (IMAGE_EXTENSIONS, any case) matching a glob or inside a directory.

    A directory is searched recursively; a glob may use '**'. Raises DataError when
    nothing usable matches, naming the pattern; images in formats TensorFlow cannot decode
    (TIFF, HEIC, ...) are left out with a DataWarning.
    """
    pattern = os.path.expanduser(os.fspath(file_pattern))
    if os.path.isdir(pattern):
        files = [os.path.join(root, name)
                 for root, _, names in os.walk(pattern, followlinks=True) for name in names]
        where = f"Directory '{file_pattern}' holds"
    else:
        files = [f for f in glob.glob(pattern, recursive=True) if os.path.isfile(f)]
        if not files:
            raise DataError(f"No file matches '{file_pattern}': check the path, or give a "
                            f"directory or a glob such as 'data/*.png'.")
        where = f"'{file_pattern}' matches {len(files)} files but"
    images = sorted(f for f in files if f.lower().endswith(IMAGE_EXTENSIONS))
    unsupported = sorted(f for f in files if f.lower().endswith(UNSUPPORTED_IMAGE_EXTENSIONS))
    convert = 'convert them to PNG or JPEG to use them'
    if not images and unsupported:
        raise DataError(f"{where} only images in formats TensorFlow cannot decode "
                        f"(e.g. {unsupported[0]}): {convert}.")
    if not images:
        raise DataError(f"{where} no image files ({' '.join(IMAGE_EXTENSIONS)}): "
                        f"point it at the images.")
    if unsupported:
        warnings.warn(f"Leaving out {len(unsupported)} images in formats TensorFlow cannot decode "
                      f"(e.g. {unsupported[0]}); {convert}.", DataWarning, stacklevel=2)
    return images


def check_images(files, max_workers=8):
    """Split files into (good_files, bad_files) by a fast header and trailer check.

    Per file only the first 2 KiB and the last 4 KiB are read (threads hide the I/O
    latency; 100k files take seconds): the content must be JPEG, PNG, GIF, BMP or WebP (by
    signature, whatever the extension), not truncated (JPEG end marker, PNG IEND chunk,
    GIF trailer, BMP pixel-array size, WebP RIFF size) and decodable by TensorFlow (BMP:
    uncompressed 24/32-bit, or 8-bit grayscale; 1/4/16-bit and colour-palette BMPs are not
    decoded correctly by tf.io.decode_image; WebP: not animated, as TensorFlow's animated
    WebP decoder corrupts memory). Damage in the middle of the compressed data is
    not detected here; `make_dataset` skips such files when decoding fails.

    Policy: bad files are skipped with a DataWarning that gives their count and names
    up to 5 of them; if no file is left, DataError.
    """
    files = [os.fspath(f) for f in files]
    chunks = [files[i:i + 256] for i in range(0, len(files), 256)]  # one future per chunk, not per file
    with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
        problems = [p for chunk in pool.map(lambda c: [_image_file_problem(f) for f in c], chunks)
                    for p in chunk]
    good = [f for f, problem in zip(files, problems) if problem is None]
    bad = [(f, problem) for f, problem in zip(files, problems) if problem is not None]
    if bad:
        named = '; '.join(f'{f} ({problem})' for f, problem in bad[:5])
        more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
        warnings.warn(f'Skipping {len(bad)} of {len(files)} image files that cannot be decoded: '
                      f'{named}{more}.', DataWarning, stacklevel=2)
    if not good:
        raise DataError(f'None of the {len(files)} image files can be decoded (e.g. {bad[0][0]}: '
                        f'{bad[0][1]}): check that the files are complete JPEG/PNG/GIF/BMP/WebP images.')
    return good, [f for f, _ in bad]


def _image_file_problem(path):
    """Why the file cannot be decoded, or None when its header and end look right."""
    try:
        with open(path, 'rb') as f:
            head = f.read(2048)  # enough for a BMP header with a 256-colour palette
            size = os.fstat(f.fileno()).st_size
            f.seek(max(0, size - 4096))
            tail = f.read()
    except OSError as e:
        return f'unreadable: {e.strerror}'
    if size == 0:
        return 'empty file'
    if head.startswith(b'\xff\xd8\xff'):
        # Entropy-coded data escapes 0xFF, so FF D9 (end of image) only appears as the marker.
        return None if b'\xff\xd9' in tail else 'truncated JPEG (no end marker)'
    if head.startswith(_PNG_SIGNATURE):
        return None if b'IEND' in tail else 'truncated PNG (no IEND chunk)'
    if head[:6] in (b'GIF87a', b'GIF89a'):
        return None if tail.rstrip(b'\0').endswith(b';') else 'truncated GIF (no trailer)'
    if head.startswith(b'BM'):
        return _bmp_problem(head, size)
    if head[:4] == b'RIFF' and head[8:12] == b'WEBP':
        return _webp_problem(head, size)
    return 'not a JPEG, PNG, GIF, BMP or WebP file'


def _bmp_problem(head, size):
    """What tf.io.decode_image gets wrong with this BMP (it reads only uncompressed 24/32-bit
    pixels, and 8-bit ones as gray levels, ignoring the palette), or None."""
    if len(head) < 34:
        return 'truncated BMP header'
    data_offset, header_size = struct.unpack_from('<II', head, 10)
    width, height, _, bits, compression = struct.unpack_from('<iiHHI', head, 18)
    if compression != 0:
        return f'compressed BMP (compression type {compression}) is not supported'
    if bits == 8:
        palette = head[14 + header_size:data_offset]
        if palette != bytes(b for i in range(len(palette) // 4) for b in (i, i, i, 0)):
            return 'colour-palette BMP is not supported'
    elif bits not in (24, 32):
        return f'{bits}-bit BMP is not supported'
    row_bytes = (abs(width) * bits + 31) // 32 * 4
    if size < data_offset + row_bytes * abs(height):
        return 'truncated BMP (pixel data too short)'
    return None


def _webp_problem(head, size):
    """Truncation (the RIFF header gives the file size) or animation, else None."""
    if len(head) < 21:
        return 'truncated WebP header'
    if size < struct.unpack_from('<I', head, 4)[0] + 8:
        return 'truncated WebP (shorter than its RIFF size)'
    if head[12:16] == b'VP8X' and head[20] & 0x02:
        return 'animated WebP is not supported (TensorFlow cannot decode it safely)'
    return None


def decode_image(path_or_bytes, img_size, antialias=False):
    """One image file -> float32 (img_size, img_size, 3) in [-1, 1], as the authors do.

    path_or_bytes: a path (str, os.PathLike or string tensor) or the encoded file (bytes).
    JPEG, PNG (8/16-bit, palette), BMP, GIF (first frame) and still WebP; gray -> RGB,
    alpha dropped.
    Bilinear resize to a square (aspect ratio not kept; no crop, no flip), skipped at
    the right size, then x / 127.5 - 1.
    """
    if isinstance(path_or_bytes, bytes):
        contents = tf.constant(path_or_bytes)
    else:
        contents = tf.io.read_file(os.fspath(path_or_bytes)
                                   if isinstance(path_or_bytes, (str, os.PathLike)) else path_or_bytes)
    return _resize_square(_decode_rgb_0_255(contents), img_size, antialias) / 127.5 - 1.0


def _decode_rgb_0_255(contents):
    """Encoded image -> float32 RGB (H, W, 3) with values in [0, 255]."""
    head = tf.io.decode_raw(tf.strings.substr(contents, 0, 25), tf.uint8, fixed_length=25)
    starts_with = lambda signature: tf.reduce_all(head[:len(signature)] == list(signature))
    is_png16 = tf.logical_and(starts_with(_PNG_SIGNATURE), head[24] == 16)  # IHDR bit depth
    image = tf.case([
        # uint8 decoding of 16-bit PNGs truncates (v >> 8); v / 257 is the exact 0-255 value.
        (is_png16, lambda: tf.cast(tf.io.decode_png(contents, channels=0, dtype=tf.uint16),
                                   tf.float32) / 257.0),
        # TF's default JPEG IDCT (INTEGER_FAST) is off by up to ~15 levels at sharp edges;
        # the accurate one matches libjpeg/PIL.
        (starts_with(b'\xff\xd8\xff'),
         lambda: tf.cast(tf.io.decode_jpeg(contents, channels=0, dct_method='INTEGER_ACCURATE'),
                         tf.float32))],
        default=lambda: tf.cast(tf.io.decode_image(contents, channels=0, expand_animations=False),
                                tf.float32))
    # Channels: 1 gray, 2 gray+alpha, 3 RGB, 4 RGBA (palette PNGs arrive as RGB/RGBA).
    # Alpha is dropped, not composited: the colour under transparent pixels is kept.
    image = tf.cond(tf.shape(image)[-1] < 3,
                    lambda: tf.tile(image[..., :1], [1, 1, 3]),
                    lambda: image[..., :3])
    return tf.ensure_shape(image, [None, None, 3])


def _resize_square(image, img_size, antialias):
    """Bilinear resize to (img_size, img_size), skipped when already that size."""
    same_size = tf.reduce_all(tf.shape(image)[:2] == img_size)
    image = tf.cond(same_size, lambda: image,
                    lambda: tf.image.resize(image, [img_size, img_size], method='bilinear',
                                            antialias=antialias))
    return tf.ensure_shape(image, [img_size, img_size, 3])


def _usable_image_files(file_pattern_or_files):
    """A glob, a directory or a list of files -> the files that pass check_images."""
    if isinstance(file_pattern_or_files, (str, os.PathLike)):
        files = list_image_files(file_pattern_or_files)
    else:
        files = [os.fspath(f) for f in file_pattern_or_files]
        if not files:
            raise DataError('The list of image files is empty: pass at least one file.')
    return check_images(files)[0]


def make_dataset(file_pattern_or_files, img_size, batch_size, antialias=False, seed=None,
                 shuffle=True, repeat=True, cache=None):
    """Training images as a tf.data pipeline; `dataset.n_files` is the number of files used.

    Batches are float32 (batch_size, img_size, img_size, 3) in [-1, 1], always full
    (drop_remainder), decoded by `decode_image`. Files: a glob, a directory or a list;
    undecodable ones are skipped (see check_images). shuffle: a new order every epoch over
    all files. seed: a reproducible order (and deterministic parallel decoding). cache:
    keep decoded images in memory; None = when they fit in CACHE_LIMIT_BYTES.
    """
    files = _usable_image_files(file_pattern_or_files)
    if len(files) < batch_size:
        raise DataError(f'Only {len(files)} usable image files, fewer than one batch '
                        f'(batch_size={batch_size}): lower batch_size or add images.')
    if cache is None:
        cache = len(files) * img_size * img_size * 3 * 4 < CACHE_LIMIT_BYTES
    ds = tf.data.Dataset.from_tensor_slices(files)
    if shuffle and not cache:
        ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    ds = ds.map(lambda path: decode_image(path, img_size, antialias),
                num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None)
    # Backstop for damage check_images cannot see: skip the file (TF logs a warning)
    # instead of stopping a long training run.
    ds = ds.ignore_errors(log_warning=True)
    if cache:
        ds = ds.cache()
        if shuffle:  # after the cache, or every epoch would replay the first epoch's order
            ds = ds.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=True)  # fixed shapes for the XLA train step
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.n_files = len(files)  # a plain attribute: gone after further transformations
    return ds


def decode_uint8_images(file_pattern_or_files, img_size, batch_size=50, antialias=False):
    """Yield uint8 numpy batches (n, img_size, img_size, 3), in file order, for FID.

    Same decoding and resize as training (`decode_image`) without the [-1, 1] scaling;
    the resized values are clipped to [0, 255] and rounded half to even. Undecodable
    files are skipped (see check_images); the last batch may be smaller.
    """
    files = _usable_image_files(file_pattern_or_files)

    def decode_uint8(path):
        image = _resize_square(_decode_rgb_0_255(tf.io.read_file(path)), img_size, antialias)
        return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)

    ds = (tf.data.Dataset.from_tensor_slices(files)
          .map(decode_uint8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    yield from ds.as_numpy_iterator()


def make_shapes_dataset(out_dir, n_images=4000, img_size=32, seed=0):
    """Write a procedural RGB dataset of coloured shapes once; return its glob pattern.

    Each image has one or two circles, squares or triangles (random colour, size,
    position, rotation) on a plain or linear-gradient background, drawn at 4x and
    box-downsampled for smooth edges. Image i depends only on (seed, i, img_size).
    Images are written atomically (temp file + rename) and a marker file with the
    parameters last: with a matching marker and all files present nothing is written;
    otherwise (new parameters, killed or damaged run) the set is regenerated.
    """
    out_dir = os.fspath(out_dir)
    params = {'n_images': int(n_images), 'img_size': int(img_size), 'seed': int(seed),
              'version': _SHAPES_VERSION}
    names = [f'shape_{i:06d}.png' for i in range(n_images)]
    pattern = os.path.join(out_dir, 'shape_*.png')
    marker = os.path.join(out_dir, SHAPES_MARKER)
    if _shapes_complete(out_dir, marker, params, names):
        return pattern
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(marker):
        os.remove(marker)  # incomplete until the last image is written again
    for old in glob.glob(os.path.join(out_dir, 'shape_*.png*')):  # stale images and temp files
        os.remove(old)
    for i, name in enumerate(names):
        image = _draw_shapes_image(np.random.default_rng([seed, i]), img_size)
        path = os.path.join(out_dir, name)
        image.save(path + '.tmp', format='PNG')
        os.replace(path + '.tmp', path)
    with open(marker + '.tmp', 'w') as f:
        json.dump(params, f)
    os.replace(marker + '.tmp', marker)
    return pattern


def _shapes_complete(out_dir, marker, params, names):
    try:
        with open(marker) as f:
            if json.load(f) != params:
                return False
        return set(names) <= set(os.listdir(out_dir))
    except (OSError, ValueError):
        return False


def _draw_shapes_image(rng, img_size):
    scale = 4  # supersampling factor for anti-aliased edges
    size = img_size * scale
    background = _random_colour(rng)
    if rng.random() < 0.5:
        pixels = np.broadcast_to(background, (size, size, 3))
    else:  # linear gradient between two colours along a random direction
        angle = rng.uniform(0, 2 * np.pi)
        yy, xx = np.mgrid[0:size, 0:size] / (size - 1) - 0.5
        t = xx * np.cos(angle) + yy * np.sin(angle)
        t = ((t - t.min()) / (t.max() - t.min()))[..., None]
        pixels = background * (1 - t) + _random_colour(rng) * t
    image = Image.fromarray(np.round(pixels).astype(np.uint8), 'RGB')
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 3)):
        colour = _random_colour(rng)
        while np.abs(colour - background).sum() < 150:  # keep shapes visible
            colour = _random_colour(rng)
        radius = rng.uniform(0.12, 0.3) * size
        cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, size=2)
        kind = rng.integers(3)
        fill = tuple(int(c) for c in colour)
        if kind == 0:
            draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        else:  # square (4 corners) or triangle (3), randomly rotated
            corners = 4 if kind == 1 else 3
            angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
            draw.polygon([(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles],
                         fill=fill)
    return image.resize((img_size, img_size), Image.Resampling.BOX)


def _random_colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float64)


# (end of data section)

# ---------------------------------------------------------------------------------------
# Checkpoints and loading
# ---------------------------------------------------------------------------------------
CONFIG_FILE = 'config.json'
TRAINING_DIR = 'training-checkpoints'
BEST_DIR = 'best-training-checkpoints'
_VALUE_SUFFIX = '/.ATTRIBUTES/VARIABLE_VALUE'


class CheckpointError(Exception):
    """A model directory or checkpoint that cannot be used; the message says why."""


def checkpoint_variables(layer, prefix=''):
    """{object path: variable} of a Keras layer, with the paths of the authors' checkpoints.

    Keras 2 named a layer's children by attribute name, list items by index and the
    sub-layers of a Sequential that own weights `layer_with_weights-<i>`; our layers
    use the same attribute names, so walking them gives the same paths.
    """
    found = {f'{prefix}{v.name}': v
             for v in layer._trainable_variables + layer._non_trainable_variables}
    for name, child in _child_layers(layer):
        found.update(checkpoint_variables(child, f'{prefix}{name}/'))
    return found


def _child_layers(layer):
    import keras
    if isinstance(layer, keras.Sequential):
        with_weights = [sub for sub in layer.layers if sub.weights]
        return [(f'layer_with_weights-{i}', sub) for i, sub in enumerate(with_weights)]
    children = []
    for name, value in vars(layer).items():
        if name.startswith('_'):
            continue
        if isinstance(value, keras.layers.Layer):
            children.append((name, value))
        elif isinstance(value, (list, tuple)) and value and all(
                isinstance(v, keras.layers.Layer) for v in value):
            children.extend((f'{name}/{i}', v) for i, v in enumerate(value))
    return children


def optimizer_variables(optimizer, model):
    """{object path: variable} of a Keras 3 Adam in the authors' (Keras 2.11+) layout.

    `_variables/{2i+1}` and `/{2i+2}` are m and v of the i-th trainable weight of the
    model, matched by position, as the authors' optimizer stores them. A Keras
    LossScaleOptimizer (fp16) is saved as its inner Adam.
    """
    optimizer = getattr(optimizer, 'inner_optimizer', optimizer)
    found = {'_iterations': optimizer.iterations, '_learning_rate': optimizer._learning_rate}
    for i, weight in enumerate(model.trainable_weights):
        index = optimizer._get_variable_index(weight)
        found[f'_variables/{2 * i + 1}'] = optimizer._momentums[index]
        found[f'_variables/{2 * i + 2}'] = optimizer._velocities[index]
    return found


def _trackable_tree(variables):
    """Nested trackable objects whose checkpoint keys are the given paths."""
    root = tf.__internal__.tracking.AutoTrackable()
    for path, variable in variables.items():
        node = root
        *parents, leaf = path.split('/')
        for part in parents:
            if not hasattr(node, part):
                setattr(node, part, tf.__internal__.tracking.AutoTrackable())
            node = getattr(node, part)
        setattr(node, leaf, getattr(variable, 'value', variable))
    return root


def make_checkpoint(**objects):
    """tf.train.Checkpoint in the authors' format.

    `objects` maps checkpoint names to {path: variable} dicts (from checkpoint_variables
    or optimizer_variables) or to plain tf.Variables (n_images, fid, best_fid).
    """
    return tf.train.Checkpoint(**{
        name: _trackable_tree(value) if isinstance(value, dict) else value
        for name, value in objects.items()})


def check_checkpoint_matches(checkpoint_path, name, variables):
    """Raises CheckpointError naming the first variable missing or of another shape."""
    shapes = tf.train.load_checkpoint(checkpoint_path).get_variable_to_shape_map()
    for path, variable in variables.items():
        key = f'{name}/{path}{_VALUE_SUFFIX}'
        if key not in shapes:
            raise CheckpointError(
                f'{checkpoint_path} has no variable {name}/{path}: config.json does not '
                f'describe the model in this checkpoint')
        if list(shapes[key]) != list(variable.shape):
            raise CheckpointError(
                f'config.json does not match {checkpoint_path}: {name}/{path} has shape '
                f'{list(shapes[key])} in the checkpoint but {list(variable.shape)} for '
                f'this config')


def restore_checkpoint(checkpoint_path, **objects):
    """Restores the named objects (as for make_checkpoint) from one checkpoint file."""
    for name, value in objects.items():
        variables = value if isinstance(value, dict) else {'': value}
        if isinstance(value, dict):
            check_checkpoint_matches(checkpoint_path, name, variables)
    status = make_checkpoint(**objects).restore(checkpoint_path)
    status.expect_partial().assert_existing_objects_matched()


def find_checkpoint(model_dir, prefer_best=True):
    """Newest checkpoint of model_dir: best-training-checkpoints/ first (the one the
    authors release), else training-checkpoints/. Raises CheckpointError if none."""
    if not os.path.isdir(model_dir):
        raise CheckpointError(f'model directory {model_dir} does not exist')
    subdirs = (BEST_DIR, TRAINING_DIR) if prefer_best else (TRAINING_DIR, BEST_DIR)
    for subdir in subdirs:
        path = newest_checkpoint_in(os.path.join(model_dir, subdir))
        if path:
            return path
    raise CheckpointError(
        f'no checkpoint in {model_dir}: expected {BEST_DIR}/ckpt-<n>.index or '
        f'{TRAINING_DIR}/ckpt-<n>.index')


def newest_checkpoint_in(directory):
    """Path prefix of the newest ckpt-<n> in directory, or None.

    Uses the `checkpoint` state file when present, else the highest n on disk (files
    downloaded one by one may come without the state file)."""
    if not os.path.isdir(directory):
        return None
    path = tf.train.latest_checkpoint(directory)
    if path and os.path.exists(path + '.index'):
        return path
    numbers = [int(f[5:-6]) for f in os.listdir(directory)
               if f.startswith('ckpt-') and f.endswith('.index') and f[5:-6].isdigit()]
    return os.path.join(directory, f'ckpt-{max(numbers)}') if numbers else None


def load_config(model_dir):
    """The validated config of model_dir/config.json (the authors' or ours)."""
    import config as config_lib
    if not os.path.isdir(model_dir):
        raise CheckpointError(f'model directory {model_dir} does not exist')
    path = os.path.join(model_dir, CONFIG_FILE)
    if not os.path.isfile(path):
        raise CheckpointError(f'{path} not found: a model directory needs its config.json')
    try:
        with open(path) as f:
            saved = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise CheckpointError(f'cannot read {path}: {e}') from None
    try:
        return config_lib.from_saved(saved)
    except config_lib.ConfigError as e:
        raise CheckpointError(f'{path}: {e}') from None


def load_generator(model_dir, ema=True, checkpoint_path=None):
    """The generator of a trained model directory, ready to sample.

    ema=True gives the EMA generator (used for samples and FID), ema=False the raw one.
    The newest checkpoint of best-training-checkpoints/ is used, else of
    training-checkpoints/, unless checkpoint_path is given.
    """
    import model as model_lib
    conf = load_config(model_dir)
    checkpoint_path = checkpoint_path or find_checkpoint(model_dir)
    generator = model_lib.build_generator(conf, name='ema_generator' if ema else 'generator')
    name = 'ema_generator' if ema else 'generator'
    restore_checkpoint(checkpoint_path, **{name: checkpoint_variables(generator)})
    return generator


def load_discriminator(model_dir, checkpoint_path=None):
    """The discriminator of a trained model directory (see load_generator)."""
    import model as model_lib
    conf = load_config(model_dir)
    checkpoint_path = checkpoint_path or find_checkpoint(model_dir)
    discriminator = model_lib.build_discriminator(conf)
    restore_checkpoint(checkpoint_path, discriminator=checkpoint_variables(discriminator))
    return discriminator


# ---------------------------------------------------------------------------------------
# Model statistics
# ---------------------------------------------------------------------------------------

def count_parameters(model):
    """(trainable, non_trainable) parameter counts."""
    count = lambda weights: int(sum(np.prod(w.shape) for w in weights))
    return count(model.trainable_weights), count(model.non_trainable_weights)


def count_macs(model, input_shape):
    """Multiply-accumulates of one forward pass on one sample, read off the traced graph.

    Counts the matrix products and convolutions (MatMul, BatchMatMul, Einsum, Conv2D),
    the way the LadaGAN README's "FLOPs" are counted; element-wise ops are not counted.
    """
    spec = tf.TensorSpec([1, *input_shape], tf.float32)
    graph = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec).graph
    return sum(_op_macs(op) for op in graph.get_operations())


def _op_macs(op):
    if op.type in ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'BatchMatMul'):
        a = op.inputs[0].shape.as_list()
        adjoint = op.get_attr('transpose_a' if op.type == 'MatMul' else 'adj_x')
        inner = a[-2] if adjoint else a[-1]
        return int(np.prod(op.outputs[0].shape.as_list())) * inner
    if op.type == 'Conv2D':
        kh, kw, cin, _ = op.inputs[1].shape.as_list()
        return int(np.prod(op.outputs[0].shape.as_list())) * kh * kw * cin
    if op.type == 'Einsum':
        inputs, _ = op.get_attr('equation').decode().split('->')
        sizes = {}
        for letters, tensor in zip(inputs.split(','), op.inputs):
            sizes.update(zip(letters, tensor.shape.as_list()))
        return int(np.prod(list(sizes.values())))
    return 0


# ---------------------------------------------------------------------------------------
# Files and pictures
# ---------------------------------------------------------------------------------------

def write_text_atomic(path, text):
    """Writes a file so that a kill at any moment leaves the old file or the new one."""
    tmp = f'{path}.tmp-{os.getpid()}'
    with open(tmp, 'w') as f:
        f.write(text)
    os.replace(tmp, path)


def write_json_atomic(path, data):
    write_text_atomic(path, json.dumps(data, indent=4))


def to_uint8(images):
    """Generator output in [-1, 1] -> uint8, as the authors store samples: x*127.5 + 127.5,
    clipped to [0, 255], then truncated (numpy astype), so FIDs match theirs."""
    images = np.nan_to_num(np.asarray(images, dtype=np.float32))  # NaN casts are undefined
    return np.clip(images * 127.5 + 127.5, 0.0, 255.0).astype(np.uint8)


def image_grid(images, columns=None):
    """(N, H, W, 3) uint8 -> one (rows*H, columns*W, 3) uint8 grid, row-major."""
    n, h, w, c = images.shape
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.zeros((rows * h, columns * w, c), np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, columns)
        grid[r * h:(r + 1) * h, col * w:(col + 1) * w] = image
    return grid


def save_png_atomic(array, path):
    from PIL import Image
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}.png'
    Image.fromarray(array).save(tmp)
    os.replace(tmp, path)


def save_image_grid(images, path, columns=None):
    """Saves generator images (floats in [-1, 1]) as one PNG grid."""
    save_png_atomic(image_grid(to_uint8(images), columns), path)


def save_attention_maps(images, attention, path):
    """One row per image: the image, then the attention map of every stage and head.

    attention: the generator's [attn_8, attn_16, attn_32], each (B, heads, tokens); each
    map is shown on its token grid (8x8, 16x16, 32x32) with its own colour scale.
    """
    from matplotlib.figure import Figure  # no pyplot: leaves notebooks' backend alone
    images = to_uint8(images)
    maps = [np.asarray(a, np.float32) for a in attention]
    heads = [m.shape[1] for m in maps]
    n_cols = 1 + sum(heads)
    fig = Figure(figsize=(1.6 * n_cols, 1.7 * len(images)))
    axes = fig.subplots(len(images), n_cols, squeeze=False)
    for row, image in enumerate(images):
        axes[row, 0].imshow(image)
        axes[row, 0].set_title('sample', fontsize=7)
        col = 1
        for stage_maps in maps:
            side = int(round(np.sqrt(stage_maps.shape[2])))
            for head in range(stage_maps.shape[1]):
                axes[row, col].imshow(stage_maps[row, head].reshape(side, side),
                                      cmap='inferno', interpolation='nearest')
                axes[row, col].set_title(f'{side}x{side} head {head}', fontsize=7)
                col += 1
    for ax in axes.flat:
        ax.axis('off')
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = f'{path}.tmp-{os.getpid()}.png'
    fig.savefig(tmp, dpi=100)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------
# Pretrained weights
# ---------------------------------------------------------------------------------------

PRETRAINED_REPO = 'milmor/LadaGAN'
# Released models on the Hugging Face Hub: name -> images seen at the released (best-FID)
# checkpoint, which names its files `ckpt-<n_images>` (SPEC §5).
PRETRAINED = {'cifar10': 68096000, 'celeba_64': 72192000, 'ffhq_128': 24064000,
              'bedroom_128': 10624000}
_CKPT_DATA_SUFFIX = '.data-00000-of-00001'


class UnknownPretrainedError(CheckpointError, ValueError):
    """A pretrained model name that is not in PRETRAINED; the message lists the valid ones."""


def pretrained_url(name):
    """Web page of a released model's folder on the Hub."""
    return f'https://huggingface.co/{PRETRAINED_REPO}/tree/main/{name}'


def pretrained_files(name):
    """The Hub file names of a released model, relative to the repository root.

    The last one, the `checkpoint` state file, is optional: newest_checkpoint_in finds
    the checkpoint without it.
    """
    if name not in PRETRAINED:
        raise UnknownPretrainedError(
            f"unknown pretrained model '{name}': choose one of {', '.join(PRETRAINED)}")
    ckpt = f'{name}/{BEST_DIR}/ckpt-{PRETRAINED[name]}'
    return [f'{name}/{CONFIG_FILE}', f'{ckpt}.index', f'{ckpt}{_CKPT_DATA_SUFFIX}',
            f'{name}/{BEST_DIR}/checkpoint']


def download_pretrained(name, local_dir=None, cache_dir=None, download_fn=None):
    """Download a released model from the Hub; returns its model directory.

    name: one of PRETRAINED. The files go to the Hugging Face cache (cache_dir, default
    ~/.cache/huggingface/hub; a second call reads the cache) or, with local_dir, to
    local_dir/<name>/. The directory returned holds config.json and
    best-training-checkpoints/, as `load_generator` expects.
    download_fn: stands in for huggingface_hub.hf_hub_download (same keyword arguments).
    Raises UnknownPretrainedError for an unknown name and CheckpointError, saying how to
    place the files by hand, when the Hub cannot be reached.
    """
    files = pretrained_files(name)
    if download_fn is None:
        from huggingface_hub import hf_hub_download as download_fn
    model_dir = None
    for i, filename in enumerate(files):
        optional = i == len(files) - 1
        try:
            path = download_fn(repo_id=PRETRAINED_REPO, filename=filename,
                               local_dir=local_dir, cache_dir=cache_dir)
        except Exception as e:  # noqa: BLE001 - only download failures are turned into CheckpointError
            if optional and (_missing_on_hub(e) or _is_download_error(e)):
                continue  # best effort: newest_checkpoint_in does without the state file
            if not _is_download_error(e):
                raise
            raise CheckpointError(_manual_download_message(name, filename, e, local_dir)) from None
        if model_dir is None:  # config.json comes first: its folder is the model directory
            model_dir = os.path.dirname(os.fspath(path))
    for filename in files[:-1]:
        if not os.path.isfile(os.path.join(model_dir, *filename.split('/')[1:])):
            raise CheckpointError(f'download of {name} incomplete: {filename} is not in '
                                  f'{model_dir}')
    return model_dir


def _missing_on_hub(error):
    """The Hub answered that the file does not exist (not: the Hub cannot be reached)."""
    try:
        from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError
    except ImportError:
        return False
    return isinstance(error, EntryNotFoundError) and not isinstance(error, LocalEntryNotFoundError)


def _is_download_error(error):
    """Network, Hub and file-system failures (not programming errors)."""
    if isinstance(error, OSError):  # ConnectionError, OfflineModeIsEnabled, HTTP and cache errors
        return True
    module = type(error).__module__ or ''
    return module.split('.')[0] in ('huggingface_hub', 'httpx', 'httpx2', 'requests', 'urllib3')


def _manual_download_message(name, filename, error, local_dir):
    reason = ' '.join(str(error).split()).split('. ')[0].rstrip('.') or 'no details'
    if len(reason) > 300:
        reason = reason[:300].rsplit(' ', 1)[0] + ' ...'
    ckpt = f'ckpt-{PRETRAINED[name]}'
    target = os.path.join(local_dir, name) if local_dir else f'<dir>/{name}'
    return (f"cannot download pretrained model '{name}' ({filename}) from the Hugging Face "
            f"Hub: {type(error).__name__}: {reason}. To place the files by hand, get "
            f"config.json and best-training-checkpoints/{ckpt}.index and "
            f"{ckpt}{_CKPT_DATA_SUFFIX} from {pretrained_url(name)} into {target}/config.json "
            f"and {target}/{BEST_DIR}/, then pass that folder as the model directory "
            f"(generate.py --model_dir {target}, or utils.load_generator('{target}'))")
