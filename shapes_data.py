"""The generated datasets: coloured shapes drawn into a folder once, unlabelled (the
demo's default data) or labelled by kind (the class-conditional demo's), with the marker
file that says a folder is complete.

Image i depends only on (seed, i, img_size), so a folder is the same on every machine;
changing a drawing changes its version, and folders of an older version are regenerated.
"""
import colorsys
import glob
import json
import os

import numpy as np
from PIL import Image, ImageDraw

import utils

SHAPES_MARKER = '_complete.json'  # written last by make_shapes_dataset
_SHAPES_VERSION = 1  # bump when the drawing changes, so old folders are regenerated
# The labelled drawing's own version (the marker's 'labelled' entry): True was the
# unlabelled drawing with one kind per image, 2 one shape of the class's hue (not of equal
# areas).
_LABELLED_SHAPES_VERSION = 3
_SUPERSAMPLE = 4  # shapes are drawn at 4x and box-downsampled for smooth edges
SHAPE_CLASSES = ('circle', 'square', 'triangle')  # the labelled set's classes, in label order


def make_shapes_dataset(out_dir, n_images=4000, img_size=32, seed=0, labelled=False):
    """Write a procedural RGB dataset of coloured shapes once; return its glob pattern
    (labelled: the folder, for read_labels).

    Each image has one or two circles, squares or triangles (random colour, size,
    position, rotation) on a plain or linear-gradient background, drawn at 4x and
    box-downsampled for smooth edges. Image i depends only on (seed, i, img_size).
    labelled: image i is of class i % 3 (SHAPE_CLASSES) and is written into that class's
    subfolder (out_dir/circle/shape_000000.png, ...), so that read_labels(out_dir) gives
    3 classes. It holds one larger shape of its class's kind in its class's hue (red
    circles, green squares, blue triangles), with the same area distribution for every
    kind, on a plain background: classes the demo's discriminator tells apart within a
    few hundred iterations (by the kind alone it does not: docs/conditional.md, "Does it
    condition?").
    Images are written atomically (utils.atomic_write) and a marker file with the
    parameters last: with a matching marker and all files present nothing is written;
    otherwise (new parameters, killed or damaged run) the set is regenerated, the images
    of the other kind (labelled or not) included.
    """
    out_dir = os.fspath(out_dir)
    params = {'n_images': int(n_images), 'img_size': int(img_size), 'seed': int(seed),
              'version': _SHAPES_VERSION}
    if labelled:  # only then: unlabelled folders written before labels existed stay valid
        params['labelled'] = _LABELLED_SHAPES_VERSION
    folders = [SHAPE_CLASSES[i % 3] if labelled else '' for i in range(n_images)]
    names = [os.path.join(folder, f'shape_{i:06d}.png') for i, folder in enumerate(folders)]
    pattern = out_dir if labelled else os.path.join(out_dir, 'shape_*.png')
    marker = os.path.join(out_dir, SHAPES_MARKER)
    if _shapes_complete(out_dir, marker, params, names):
        return pattern
    os.makedirs(out_dir, exist_ok=True)
    if os.path.exists(marker):
        os.remove(marker)  # incomplete until the last image is written again
    for folder in ('',) + SHAPE_CLASSES:  # stale images, of either kind
        for old in glob.glob(os.path.join(out_dir, folder, 'shape_*.png')):
            os.remove(old)
        if folder and not labelled and os.path.isdir(os.path.join(out_dir, folder)):
            try:
                os.rmdir(os.path.join(out_dir, folder))
            except OSError:  # holds other files: not ours to delete
                pass
    for folder in sorted(set(folders) - {''}):
        os.makedirs(os.path.join(out_dir, folder), exist_ok=True)
    for i, name in enumerate(names):
        rng = np.random.default_rng([seed, i])
        image = (_draw_labelled_image(rng, img_size, i % 3) if labelled
                 else _draw_shapes_image(rng, img_size))
        with utils.atomic_write(os.path.join(out_dir, name)) as tmp:
            image.save(tmp, format='PNG')
    utils.write_json(marker, params)
    return pattern


def _shapes_complete(out_dir, marker, params, names):
    try:
        with open(marker) as f:
            if json.load(f) != params:
                return False
        listings = {}  # folder -> its file names, one listdir per folder
        for name in names:
            folder, base = os.path.split(name)
            if folder not in listings:
                listings[folder] = set(os.listdir(os.path.join(out_dir, folder)))
            if base not in listings[folder]:
                return False
        return True
    except (OSError, ValueError):
        return False


def _draw_shapes_image(rng, img_size):
    """One image of the unlabelled set: one or two shapes of random kinds and colours on a
    plain or gradient background."""
    size = img_size * _SUPERSAMPLE
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
        colour = _visible_colour(rng, background, _random_colour)
        radius = rng.uniform(0.12, 0.3) * size
        cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, size=2)
        _draw_shape(draw, rng, rng.integers(3), (cx, cy), radius, colour)
    return image.resize((img_size, img_size), Image.Resampling.BOX)


def _draw_labelled_image(rng, img_size, kind):
    """One image of the labelled set: a single large shape of the class's kind (0/1/2:
    circle/square/triangle) in the class's hue (_class_colour) on a plain background."""
    size = img_size * _SUPERSAMPLE
    background = _random_colour(rng)
    image = Image.new('RGB', (size, size), tuple(int(c) for c in background))
    colour = _visible_colour(rng, background, lambda rng: _class_colour(rng, kind))
    # Every kind covers the same area distribution (that of a circle of radius 0.22-0.36
    # image sizes), so that the classes differ in shape and hue, not in size.
    radius = rng.uniform(0.22, 0.36) * size * np.sqrt(np.pi / _AREA_PER_SQUARED_RADIUS[kind])
    cx, cy = rng.uniform(radius * 0.6, size - radius * 0.6, size=2)
    _draw_shape(ImageDraw.Draw(image), rng, kind, (cx, cy), radius, colour)
    return image.resize((img_size, img_size), Image.Resampling.BOX)


# Area / radius^2 of a circle, and of a square and an equilateral triangle whose corners
# are on the circle of that radius.
_AREA_PER_SQUARED_RADIUS = (np.pi, 2.0, 3 * np.sqrt(3) / 4)


def _visible_colour(rng, background, draw_colour):
    colour = draw_colour(rng)
    while np.abs(colour - background).sum() < 150:  # keep shapes visible
        colour = draw_colour(rng)
    return colour


def _draw_shape(draw, rng, kind, centre, radius, colour):
    """A circle (kind 0), or a randomly rotated square (1) or triangle (2) whose corners
    are on the circle of that radius."""
    (cx, cy), fill = centre, tuple(int(c) for c in colour)
    if kind == 0:
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
        return
    corners = 4 if kind == 1 else 3
    angles = rng.uniform(0, 2 * np.pi) + np.arange(corners) * 2 * np.pi / corners
    draw.polygon([(cx + radius * np.cos(a), cy + radius * np.sin(a)) for a in angles], fill=fill)


def _class_colour(rng, kind):
    """A colour of the class's hue family: red, green or blue (hue kind/3 +- 30 degrees),
    saturation and value 0.6-1."""
    hue = (kind / 3 + rng.uniform(-1 / 12, 1 / 12)) % 1
    return 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.6, 1), rng.uniform(0.6, 1)))


def _random_colour(rng):
    return rng.integers(0, 256, size=3).astype(np.float64)
