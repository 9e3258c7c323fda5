"""Training data: listing image files, checking their headers, decoding them, the tf.data
pipeline, and the embedded dataset of generated shapes.
"""
import concurrent.futures
import glob
import json
import os
import struct
import warnings

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

import utils

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
    Images are written atomically (utils.atomic_write) and a marker file with the
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
    for old in glob.glob(os.path.join(out_dir, 'shape_*.png')):  # stale images
        os.remove(old)
    for i, name in enumerate(names):
        image = _draw_shapes_image(np.random.default_rng([seed, i]), img_size)
        with utils.atomic_write(os.path.join(out_dir, name)) as tmp:
            image.save(tmp, format='PNG')
    utils.write_json(marker, params)
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
