"""Training data from the user's images: listing image files, checking their headers,
class labels (folders or a labels file), decoding them, the tf.data pipeline. The
generated shapes datasets are in shapes.py.
"""
import collections
import concurrent.futures
import csv
import glob
import json
import os
import typing
import warnings

import numpy as np
import tensorflow as tf

import image_headers
from config import CROPS

IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif', '.webp')
# Image formats TensorFlow cannot decode: listed with a warning instead of ignored in silence.
UNSUPPORTED_IMAGE_EXTENSIONS = ('.tif', '.tiff', '.heic', '.heif', '.avif', '.jp2', '.jxl',
                                '.ppm', '.pgm', '.pbm', '.ico', '.psd', '.exr', '.dng')
# Decoded float32 training images are cached in memory below this size (CIFAR-10 at 32 px:
# 0.6 GiB); bigger sets (CelebA 64, 202,599 images: 9.3 GiB) are decoded again every epoch.
CACHE_LIMIT_BYTES = 2 * 1024 ** 3


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


class Labels(typing.NamedTuple):
    """read_labels' result: class names (index = label), image files, a label per file."""
    names: list   # sorted class names; label i is names[i]
    files: list   # sorted image files, as list_image_files lists them
    labels: list  # int label of each file


# Header rows a labels CSV may start with (compared lower-cased, spaces stripped).
_CSV_HEADERS = {(path, label) for path in ('path', 'file') for label in ('class', 'label')}


def read_labels(file_pattern, labels_file=None):
    """Class labels of the images: a Labels (names, files, labels).

    Without labels_file, file_pattern is a directory with one subfolder per class (the
    torchvision ImageFolder layout): an image's class is the name of its first-level
    subfolder, at any depth inside it. Images directly in the directory and class folders
    without images raise DataError (ImageFolder would drop the former in silence).
    With labels_file: a CSV of 'relative/path.png,class_name' rows (an optional header
    'path,class' or 'file,label') or a JSON object {relative path: class name}, chosen by
    extension; paths are relative to the labels file's folder (or absolute) and must be
    among the images file_pattern (a directory or a glob) lists; listed images without
    an entry are left out with a DataWarning.
    """
    if labels_file is None:
        return _folder_labels(file_pattern)
    labels_file = os.path.expanduser(os.fspath(labels_file))
    entries = _read_labels_file(labels_file)
    base = os.path.dirname(os.path.abspath(labels_file))
    classes = {}  # absolute path -> (class name, the path as written)
    for path, name in entries:
        full = os.path.abspath(os.path.join(base, os.path.expanduser(path)))
        if full in classes and classes[full][0] != name:
            raise DataError(f"Labels file '{labels_file}' gives '{path}' two classes "
                            f"('{classes[full][0]}' and '{name}'): keep one entry per image.")
        classes[full] = (name, path)
    files = list_image_files(file_pattern)
    listed = {os.path.abspath(f) for f in files}
    unknown = [(path, full) for full, (_, path) in classes.items() if full not in listed]
    if unknown:
        raise DataError(f"{len(unknown)} paths in labels file '{labels_file}' are not among the "
                        f"images of '{file_pattern}' (e.g. '{unknown[0][0]}', looked for "
                        f"'{unknown[0][1]}'): check that paths are relative to the labels "
                        f"file's folder '{base}'.")
    missing = [f for f in files if os.path.abspath(f) not in classes]
    if missing:
        # A partial labels file (e.g. a labelled subset) is legitimate: warn, not refuse.
        warnings.warn(f"Leaving out {len(missing)} of {len(files)} images that have no entry "
                      f"in labels file '{labels_file}' (e.g. {missing[0]}).", DataWarning,
                      stacklevel=2)
    files = [f for f in files if os.path.abspath(f) in classes]
    file_classes = [classes[os.path.abspath(f)][0] for f in files]
    names = sorted(set(file_classes))
    index = {name: i for i, name in enumerate(names)}
    return Labels(names, files, [index[c] for c in file_classes])


def _folder_labels(directory):
    """Labels from the first-level subfolders of a directory (ImageFolder layout)."""
    root = os.path.expanduser(os.fspath(directory))
    if not os.path.isdir(root):
        raise DataError(f"'{directory}' is not a directory: class labels come from its "
                        f"subfolders (one per class); give that folder, or a labels file.")
    files = list_image_files(root)
    parts = [os.path.relpath(f, root).split(os.sep) for f in files]
    classes = [p[0] for p in parts]
    loose = [f for f, p in zip(files, parts) if len(p) == 1]
    if loose:
        raise DataError(f"{len(loose)} images lie directly in '{directory}', not in a class "
                        f"subfolder (e.g. {loose[0]}): move them into a class folder, or give "
                        f"a labels file.")
    names = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
    empty = sorted(set(names) - set(classes))
    if empty:
        more = f' (and {len(empty) - 1} more)' if len(empty) > 1 else ''
        raise DataError(f"Class folder '{os.path.join(root, empty[0])}'{more} holds no image: "
                        f"remove it or add images.")
    index = {name: i for i, name in enumerate(names)}
    return Labels(names, files, [index[c] for c in classes])


def _read_labels_file(path):
    """[(path as written, class name)] from a labels CSV or JSON file."""
    kind = os.path.splitext(path)[1].lower()
    if kind not in ('.csv', '.json'):
        raise DataError(f"Labels file '{path}' must end in .csv or .json (rows 'path,class' "
                        f"or an object {{path: class}}), not '{kind or 'no extension'}'.")
    try:
        # utf-8-sig: spreadsheet programs often start a CSV with a byte-order mark.
        with open(path, encoding='utf-8-sig', newline='') as f:
            entries = _read_csv(path, f) if kind == '.csv' else _read_json(path, f)
    except OSError as e:
        raise DataError(f"Cannot read labels file '{path}': {e.strerror}.") from None
    except UnicodeDecodeError as e:
        raise DataError(f"Labels file '{path}' is not UTF-8 text ({e.reason} at byte "
                        f"{e.start}): save it as UTF-8.") from None
    if not entries:
        raise DataError(f"Labels file '{path}' has no entries: add a 'path,class' row (CSV) "
                        f"or a \"path\": \"class\" pair (JSON) per image.")
    return entries


def _read_csv(path, f):
    entries = []
    reader = csv.reader(f, strict=True)  # an unterminated quote is an error, not a field
    try:
        for row in reader:
            fields = [field.strip() for field in row]
            if not any(fields):
                continue  # blank line
            if not entries and tuple(x.lower() for x in fields) in _CSV_HEADERS:
                continue
            if len(fields) != 2 or not all(fields):
                raise DataError(f"Labels file '{path}', line {reader.line_num}: expected 2 "
                                f"non-empty fields 'path,class', got {row}: fix that row.")
            entries.append(tuple(fields))
    except csv.Error as e:
        raise DataError(f"Labels file '{path}', line {reader.line_num}: not valid CSV ({e}): "
                        f"fix that row.") from None
    return entries


class _JsonPairs(list):
    """A JSON object's (key, value) pairs, told apart from a JSON array."""


def _read_json(path, f):
    try:
        # Pairs, not a dict: json.load would keep only the last of two equal keys.
        pairs = json.load(f, object_pairs_hook=_JsonPairs)
    except json.JSONDecodeError as e:
        raise DataError(f"Labels file '{path}' is not valid JSON (line {e.lineno}: {e.msg}): "
                        f"it must be an object {{\"relative/path.png\": \"class\"}}.") from None
    if not isinstance(pairs, _JsonPairs):
        kind = {list: 'an array', str: 'a string', int: 'a number', float: 'a number',
                bool: 'a boolean'}.get(type(pairs), 'null')
        raise DataError(f"Labels file '{path}' must hold a JSON object {{\"relative/path.png\": "
                        f"\"class\"}}, not {kind}.")
    for key, value in pairs:
        if not isinstance(value, str) or not value:
            raise DataError(f"Labels file '{path}': the class of '{key}' is {value!r}, not a "
                            f"non-empty string: write class names in quotes.")
    return pairs


class ImageScan(typing.NamedTuple):
    """check_images' findings: the usable files, their image_headers.ImageInfo, the skipped
    files."""
    files: list  # usable files, in the given order
    infos: list  # image_headers.ImageInfo of each usable file
    bad: list    # (file, problem) of each skipped file


def check_images(files, max_workers=8):
    """Split files into (good_files, bad_files) by a fast header and trailer check.

    Per file only the first 2 KiB, the last 4 KiB and, for JPEG, the markers and EXIF tag
    before the image data are read (image_headers.inspect_file; threads hide the I/O
    latency; 100k files take seconds): the content must be JPEG, PNG, GIF, BMP or WebP (by
    signature, whatever the extension), not truncated (JPEG end marker, PNG IEND chunk,
    GIF trailer, BMP pixel-array size, WebP RIFF size) and decodable by TensorFlow (BMP:
    uncompressed 24/32-bit, or 8-bit grayscale; 1/4/16-bit and colour-palette BMPs are not
    decoded correctly by tf.io.decode_image; WebP: not animated, as TensorFlow's animated
    WebP decoder corrupts memory). Damage in the middle of the compressed data is
    not detected here; `make_dataset` skips such files when decoding fails.

    Policy: bad files are skipped with a DataWarning that gives their count and names
    up to 5 of them; if no file is left, DataError. `scan_images` also returns the sizes
    and EXIF orientations read in the same pass.
    """
    scan = scan_images(files, max_workers)
    return scan.files, [f for f, _ in scan.bad]


def scan_images(files, max_workers=8):
    """check_images' pass, returning an ImageScan (sizes and EXIF orientations included)."""
    files = [os.fspath(f) for f in files]
    chunks = [files[i:i + 256] for i in range(0, len(files), 256)]  # a future per chunk, not file
    with concurrent.futures.ThreadPoolExecutor(max_workers) as pool:
        infos = [i for chunk in pool.map(lambda c: [image_headers.inspect_file(f) for f in c],
                                         chunks)
                 for i in chunk]
    good = [(f, info) for f, info in zip(files, infos) if info.problem is None]
    bad = [(f, info.problem) for f, info in zip(files, infos) if info.problem is not None]
    if bad:
        named = '; '.join(f'{f} ({problem})' for f, problem in bad[:5])
        more = f' and {len(bad) - 5} more' if len(bad) > 5 else ''
        warnings.warn(f'Skipping {len(bad)} of {len(files)} image files that cannot be decoded: '
                      f'{named}{more}.', DataWarning, stacklevel=3)
    if not good:
        raise DataError(f'None of the {len(files)} image files can be decoded (e.g. {bad[0][0]}: '
                        f'{bad[0][1]}): check that the files are complete JPEG/PNG/GIF/BMP/WebP '
                        f'images.')
    return ImageScan([f for f, _ in good], [info for _, info in good], bad)


def decode_image(path_or_bytes, img_size, antialias=False, crop='none', orientation=None):
    """One image file -> float32 (img_size, img_size, 3) in [-1, 1], as the authors do.

    path_or_bytes: a path (str, os.PathLike or string tensor) or the encoded file (bytes).
    JPEG, PNG (8/16-bit, palette), BMP, GIF (first frame) and still WebP; gray -> RGB,
    alpha dropped. orientation: EXIF orientation 1-8 applied before resizing (a JPEG's
    tag is ignored by TensorFlow's decoder); None reads it from the file.
    crop: 'none' (the authors'): bilinear resize to a square, aspect ratio not kept;
    'center': the centred square first. No flip; no resize at the right size; x / 127.5 - 1.
    """
    if orientation is None:
        orientation = _orientation_of(path_or_bytes)
    if isinstance(path_or_bytes, bytes):
        contents = tf.constant(path_or_bytes)
    else:
        contents = tf.io.read_file(os.fspath(path_or_bytes)
                                   if isinstance(path_or_bytes, (str, os.PathLike)) else path_or_bytes)
    return _decode_resized(contents, img_size, antialias, crop, orientation) / 127.5 - 1.0


def _orientation_of(path_or_bytes):
    """EXIF orientation of a path or bytes in Python; of a path tensor in the graph."""
    if isinstance(path_or_bytes, (bytes, str, os.PathLike)):
        return image_headers.read_orientation(path_or_bytes)
    return tf.numpy_function(lambda path: np.int32(image_headers.read_orientation(path.decode())),
                             [path_or_bytes], tf.int32, stateful=False)


def _decode_resized(contents, img_size, antialias, crop, orientation):
    """Encoded image -> float32 (img_size, img_size, 3) in [0, 255]: orient, crop, resize."""
    _check_crop(crop)
    image = _apply_orientation(_decode_rgb_0_255(contents), orientation)
    if crop == 'center':
        image = _center_square(image)
    return _resize_square(image, img_size, antialias)


def _check_crop(crop):
    if crop not in CROPS:
        raise DataError(f'crop must be one of {list(CROPS)}, got {crop!r}')


def _apply_orientation(image, orientation):
    """The image as shown for EXIF orientation 1-8 (as PIL's ImageOps.exif_transpose)."""
    branches = [
        lambda: image,                                          # 1: as stored
        lambda: tf.image.flip_left_right(image),                # 2: mirrored
        lambda: tf.image.rot90(image, 2),                       # 3: upside down
        lambda: tf.image.flip_up_down(image),                   # 4: mirrored upside down
        lambda: tf.image.transpose(image),                      # 5: mirrored, turned
        lambda: tf.image.rot90(image, 3),                       # 6: turn 90 clockwise
        lambda: tf.image.rot90(tf.image.transpose(image), 2),   # 7: transverse
        lambda: tf.image.rot90(image, 1),                       # 8: turn 90 anticlockwise
    ]
    index = tf.clip_by_value(tf.cast(orientation, tf.int32) - 1, 0, 7)
    return tf.ensure_shape(tf.switch_case(index, branches), [None, None, 3])


def _center_square(image):
    """The largest centred square (offsets rounded down)."""
    height, width = tf.shape(image)[0], tf.shape(image)[1]
    side = tf.minimum(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    return image[top:top + side, left:left + side]


def _decode_rgb_0_255(contents):
    """Encoded image -> float32 RGB (H, W, 3) with values in [0, 255]."""
    head = tf.io.decode_raw(tf.strings.substr(contents, 0, 25), tf.uint8, fixed_length=25)
    starts_with = lambda signature: tf.reduce_all(head[:len(signature)] == list(signature))
    is_png16 = tf.logical_and(starts_with(image_headers.PNG_SIGNATURE),
                              head[24] == 16)  # IHDR bit depth
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


def _usable_images(file_pattern_or_files, labels=None):
    """A glob, a directory or a list of files -> the ImageScan of check_images; with labels
    (aligned with the listed files), also the labels of the usable files."""
    if isinstance(file_pattern_or_files, (str, os.PathLike)):
        files = list_image_files(file_pattern_or_files)
    else:
        files = [os.fspath(f) for f in file_pattern_or_files]
        if not files:
            raise DataError('The list of image files is empty: pass at least one file.')
    if labels is not None and len(labels) != len(files):
        raise DataError(f'{len(labels)} labels for {len(files)} image files: give one label '
                        f'per file, in the same order (see read_labels).')
    scan = scan_images(files)
    if labels is None:
        return scan
    # Whether a file is usable depends only on its path, so this keeps each label with its
    # file also when a path is listed twice.
    bad = {f for f, _ in scan.bad}
    return scan, [label for f, label in zip(files, labels) if f not in bad]


def _checked_labels(labels, n_classes, class_names):
    """labels as int32 and the number of classes, or DataError."""
    values = np.asarray(labels)
    if values.ndim != 1 or not (values.size == 0 or np.issubdtype(values.dtype, np.integer)):
        raise DataError(f'labels must be a list of ints (class indices), got {values.dtype} '
                        f'values of shape {values.shape}: see read_labels.')
    if class_names is not None:
        if n_classes is not None and n_classes != len(class_names):
            raise DataError(f'n_classes={n_classes} but {len(class_names)} class_names: '
                            f'give one name per class.')
        n_classes = len(class_names)
    if values.size and values.min() < 0:
        raise DataError(f'labels must be >= 0, got {values.min()}: use class indices.')
    top = int(values.max()) + 1 if values.size else 0
    if n_classes is None:
        n_classes = top
    elif top > n_classes:
        raise DataError(f'label {top - 1} is out of range for n_classes={n_classes}: labels '
                        f'must be 0 to {n_classes - 1}.')
    return values.astype(np.int32), int(n_classes)


def _file_dataset(scan, labels=None):
    """(path, EXIF orientation) pairs of the usable files; with labels, triples."""
    orientations = np.array([info.orientation for info in scan.infos], np.int32)
    if labels is None:
        return tf.data.Dataset.from_tensor_slices((scan.files, orientations))
    return tf.data.Dataset.from_tensor_slices((scan.files, orientations,
                                               np.asarray(labels, np.int32)))


def make_dataset(file_pattern_or_files, img_size, batch_size, antialias=False, seed=None,
                 shuffle=True, repeat=True, cache=None, crop='none', labels=None,
                 n_classes=None, class_names=None):
    """Training images as a tf.data pipeline; `dataset.n_files` is the number of files used,
    `dataset.class_counts` the images per class (None without labels) and
    `dataset.summary` one line about them (see `summarize`).

    Batches are float32 (batch_size, img_size, img_size, 3) in [-1, 1], always full
    (drop_remainder), decoded by `decode_image` (EXIF orientation applied, crop 'none' or
    'center'). Files: a glob, a directory or a list;
    undecodable ones are skipped (see check_images). shuffle: a new order every epoch over
    all files. seed: a reproducible order (and deterministic parallel decoding). cache:
    keep decoded images in memory; None = when they fit in CACHE_LIMIT_BYTES.
    labels: an int class index per file (aligned with the list, or with the listing of a
    glob or directory; see read_labels); batches are then (images, labels), labels int32
    (batch_size,), each label travelling with its image. n_classes: the number of classes
    (default max label + 1), so that a class whose files were all skipped counts 0;
    class_names: their names, for the summary (they also set n_classes).
    class_counts counts the files left after the header check; a file that fails only
    while decoding (ignore_errors) is still counted.
    """
    _check_crop(crop)
    if labels is None:
        scan, class_counts = _usable_images(file_pattern_or_files), None
    else:
        labels, n_classes = _checked_labels(labels, n_classes, class_names)
        scan, labels = _usable_images(file_pattern_or_files, labels)
        class_counts = np.bincount(np.asarray(labels, np.int64), minlength=n_classes).tolist()
    n = len(scan.files)
    if n < batch_size:
        raise DataError(f'Only {n} usable image files, fewer than one batch '
                        f'(batch_size={batch_size}): use --set batch_size={_power_of_two(n)} '
                        f'or add images.')
    if cache is None:
        cache = n * img_size * img_size * 3 * 4 < CACHE_LIMIT_BYTES
    ds = _file_dataset(scan, labels)
    if shuffle and not cache:
        ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    decode = lambda path, orientation: decode_image(path, img_size, antialias, crop, orientation)
    if labels is None:
        ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None)
    else:  # the label is part of the element, so skipping and shuffling keep it with its image
        ds = ds.map(lambda path, orientation, label: (decode(path, orientation), label),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=seed is not None)
    # Backstop for damage check_images cannot see: skip the file (TF logs a warning)
    # instead of stopping a long training run.
    ds = ds.ignore_errors(log_warning=True)
    if cache:
        ds = ds.cache()
        if shuffle:  # after the cache, or every epoch would replay the first epoch's order
            ds = ds.shuffle(n, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = ds.batch(batch_size, drop_remainder=True)  # fixed shapes for the XLA train step
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.n_files = n  # plain attributes: gone after further transformations
    ds.class_counts = class_counts
    ds.summary = summarize(scan, img_size, crop, antialias, cache, class_counts, class_names)
    return ds


def _power_of_two(n):
    """The largest power of two <= n (n >= 1): a batch size that splits over devices."""
    return 1 << (n.bit_length() - 1)


def summarize(scan, img_size, crop='none', antialias=False, cache=False, class_counts=None,
              class_names=None):
    """One line about an ImageScan and what the pipeline does to it, e.g.
    '150 images (2 skipped: 1 truncated JPEG, 1 not an image); sizes 48x64 to 1024x768
    (37 distinct), 12 non-square; rotated by EXIF: 3, centre-cropped and resized to 64x64,
    cached in memory'. Sizes are width x height as shown, from the file headers.
    With class_counts (labelled data), a part such as '3 classes (circle 50, square 50,
    triangle 50)' follows the count."""
    found = f'{len(scan.files)} images'
    if scan.bad:
        found += f' ({len(scan.bad)} skipped: {_reasons_text(scan.bad)})'
    parts = [found]
    if class_counts is not None:
        parts.append(_classes_text(class_counts, class_names))
    sizes = [info.size for info in scan.infos]
    return '; '.join(parts + [_sizes_text(sizes),
                              _treatment_text(scan.infos, img_size, crop, antialias, cache)])


def _classes_text(counts, names=None):
    """'3 classes (circle 50, square 50, triangle 50)'; beyond 8 classes only the range,
    '10 classes, 480 to 520 images each'. Unnamed classes show as #0, #1, ..."""
    n = len(counts)
    classes = f"{n} class{'es' if n != 1 else ''}"
    if n > 8:
        low, high = min(counts), max(counts)
        return f'{classes}, {low if low == high else f"{low} to {high}"} images each'
    names = names if names is not None else [f'#{i}' for i in range(n)]
    return f"{classes} ({', '.join(f'{name} {c}' for name, c in zip(names, counts))})"


def _reasons_text(bad):
    """'1 truncated JPEG, 1 not an image': skip reasons, most frequent first."""
    counts = collections.Counter(_reason_kind(problem) for _, problem in bad)
    return ', '.join(f'{n} {kind}' for kind, n in sorted(counts.items(),
                                                          key=lambda kv: (-kv[1], kv[0])))


def _reason_kind(problem):
    # The problem without its details: 'truncated JPEG (no end marker)' -> 'truncated JPEG'.
    if problem.startswith('not a JPEG'):
        return 'not an image'
    if problem.startswith('unreadable'):
        return 'unreadable'
    return problem.split(' (')[0].removesuffix(' is not supported')


def _sizes_text(sizes):
    """'all 32x32' or 'sizes 48x64 to 1024x768 (37 distinct), 12 non-square'."""
    known = [s for s in sizes if s is not None]
    distinct = sorted(set(known), key=lambda s: (s[0] * s[1], s))
    name = lambda s: f'{s[0]}x{s[1]}'
    if len(distinct) == 1:
        text = f'all {name(distinct[0])}'
    elif distinct:
        text = f'sizes {name(distinct[0])} to {name(distinct[-1])} ({len(distinct)} distinct)'
    else:
        text = 'sizes unknown'
    non_square = sum(w != h for w, h in known)
    if non_square and len(distinct) > 1:
        text += f', {non_square} non-square'
    if 0 < len(known) < len(sizes):
        text += f', {len(sizes) - len(known)} of unknown size'
    return text


def _treatment_text(infos, img_size, crop, antialias, cache):
    """What decoding does: EXIF rotations, crop or squash, resize, caching."""
    sizes = [info.size for info in infos]
    target = f'{img_size}x{img_size}'
    steps = []
    rotated = sum(info.orientation != 1 for info in infos)
    if rotated:
        steps.append(f'rotated by EXIF: {rotated}')
    resized = any(s != (img_size, img_size) for s in sizes)  # unknown sizes count as resized
    if any(s is not None and s[0] != s[1] for s in sizes):
        steps.append(f'centre-cropped and resized to {target}' if crop == 'center'
                     else f'squashed to {target} (crop=none)')
    elif resized:
        steps.append(f'resized to {target}')
    else:
        steps.append(f'used at {target} as they are')
    if antialias and resized:
        steps[-1] += ' with antialias'
    steps.append('cached in memory' if cache else 'decoded again every epoch')
    return ', '.join(steps)


def decode_uint8_images(file_pattern_or_files, img_size, batch_size=50, antialias=False,
                        crop='none'):
    """Yield uint8 numpy batches (n, img_size, img_size, 3), in file order, for FID.

    Same decoding, EXIF orientation, crop and resize as training (`decode_image`) without
    the [-1, 1] scaling; the resized values are clipped to [0, 255] and rounded half to
    even. Undecodable files are skipped (see check_images); the last batch may be smaller.
    """
    _check_crop(crop)
    scan = _usable_images(file_pattern_or_files)

    def decode_uint8(path, orientation):
        image = _decode_resized(tf.io.read_file(path), img_size, antialias, crop, orientation)
        return tf.cast(tf.round(tf.clip_by_value(image, 0.0, 255.0)), tf.uint8)

    ds = (_file_dataset(scan)
          .map(decode_uint8, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
          .batch(batch_size).prefetch(tf.data.AUTOTUNE))
    yield from ds.as_numpy_iterator()
