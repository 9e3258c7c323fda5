"""The generated shapes datasets (shapes_data.py): unlabelled and labelled drawings, their
bytes, their class folders, and the marker that makes a second call write nothing."""
import colorsys
import hashlib
import json
import os
import time

import numpy as np
import tensorflow as tf
from PIL import Image, ImageDraw

import data
import shapes_data

# ---------------------------------------------------------------------------------------
# The unlabelled shapes dataset (the demo's default data)
# ---------------------------------------------------------------------------------------

def _age_files(pattern):
    """Set every file's mtime to an hour ago, so a rewrite shows as a new mtime."""
    old = time.time() - 3600
    for f in tf.io.gfile.glob(pattern):
        os.utime(f, (old, old))
    return {f: os.stat(f).st_mtime for f in tf.io.gfile.glob(pattern)}


def test_shapes_dataset_writes_n_varied_rgb_images(tmp_path):
    pattern = shapes_data.make_shapes_dataset(str(tmp_path / 'shapes'), n_images=30, img_size=16, seed=1)
    files = data.list_image_files(pattern)
    assert len(files) == 30
    images = np.stack([np.array(Image.open(f)) for f in files])
    assert images.shape == (30, 16, 16, 3) and images.dtype == np.uint8
    assert len({im.tobytes() for im in images}) == 30  # all different
    assert (images.std(axis=(1, 2)) > 5).any(axis=-1).all()  # every image has some structure
    assert os.path.exists(os.path.join(str(tmp_path / 'shapes'), shapes_data.SHAPES_MARKER))
    ds = data.make_dataset(pattern, 16, 10)
    assert ds.n_files == 30 and next(iter(ds)).shape == (10, 16, 16, 3)


def test_shapes_dataset_is_deterministic_per_seed(tmp_path):
    read = lambda pattern: [open(f, 'rb').read() for f in data.list_image_files(pattern)]
    a = read(shapes_data.make_shapes_dataset(str(tmp_path / 'a'), n_images=5, img_size=16, seed=2))
    b = read(shapes_data.make_shapes_dataset(str(tmp_path / 'b'), n_images=5, img_size=16, seed=2))
    c = read(shapes_data.make_shapes_dataset(str(tmp_path / 'c'), n_images=5, img_size=16, seed=3))
    assert a == b and a != c


def test_shapes_dataset_second_call_writes_nothing(tmp_path):
    out = str(tmp_path / 'shapes')
    pattern = shapes_data.make_shapes_dataset(out, n_images=20, img_size=16)
    before = _age_files(os.path.join(out, '*'))
    assert shapes_data.make_shapes_dataset(out, n_images=20, img_size=16) == pattern
    assert {f: os.stat(f).st_mtime for f in tf.io.gfile.glob(os.path.join(out, '*'))} == before


def test_shapes_dataset_regenerates_without_marker(tmp_path):
    out = str(tmp_path / 'shapes')
    pattern = shapes_data.make_shapes_dataset(out, n_images=20, img_size=16)
    before = _age_files(pattern)
    os.remove(os.path.join(out, shapes_data.SHAPES_MARKER))  # as if killed before finishing
    os.remove(sorted(before)[-1])
    shapes_data.make_shapes_dataset(out, n_images=20, img_size=16)
    after = {f: os.stat(f).st_mtime for f in tf.io.gfile.glob(pattern)}
    assert sorted(after) == sorted(before)
    assert all(after[f] > before[f] for f in before)
    assert os.path.exists(os.path.join(out, shapes_data.SHAPES_MARKER))


def test_shapes_dataset_regenerates_for_new_parameters_or_missing_files(tmp_path):
    out = str(tmp_path / 'shapes')
    pattern = shapes_data.make_shapes_dataset(out, n_images=20, img_size=16)
    fewer = shapes_data.make_shapes_dataset(out, n_images=8, img_size=16)
    assert len(data.list_image_files(fewer)) == 8
    smaller = shapes_data.make_shapes_dataset(out, n_images=8, img_size=12)
    assert Image.open(data.list_image_files(smaller)[0]).size == (12, 12)
    first = data.list_image_files(pattern)[0]
    os.remove(first)
    shapes_data.make_shapes_dataset(out, n_images=8, img_size=12)
    assert os.path.exists(first)


# ---------------------------------------------------------------------------------------
# The labelled shapes dataset
# ---------------------------------------------------------------------------------------

# md5 of shape_00000i.png, i = 0..5, from make_shapes_dataset(out, n_images=6) before
# labels were added: the default demo's data must not change.
UNLABELLED_MD5 = ['c6b8682bcc2c2f5245cdada616372b1b', '46aba5a8fc918c5a4fca65bc199115cf',
                  '9d412417f0c5270cdf318cb320e1aa5c', '36dd37fa6429836778c744b3fcac9361',
                  '7fb63f658e87241f78d8da7fd3da3bc2', 'f3d4a6980320a29f27212032229f0e00']


def _md5s(pattern):
    return [hashlib.md5(open(f, 'rb').read()).hexdigest() for f in data.list_image_files(pattern)]


def test_unlabelled_shapes_are_byte_identical_to_before_labels(tmp_path):
    out = str(tmp_path / 'shapes')
    assert _md5s(shapes_data.make_shapes_dataset(out, n_images=6)) == UNLABELLED_MD5
    with open(os.path.join(out, shapes_data.SHAPES_MARKER)) as f:
        assert 'labelled' not in json.load(f)  # folders made before labels stay valid


def test_labelled_shapes_in_class_folders_with_labels_i_mod_3(tmp_path):
    out = str(tmp_path / 'labelled')
    assert shapes_data.make_shapes_dataset(out, n_images=11, labelled=True) == out
    assert sorted(os.listdir(out)) == [shapes_data.SHAPES_MARKER, 'circle', 'square', 'triangle']
    labels = data.read_labels(out)
    assert labels.names == ['circle', 'square', 'triangle']
    assert np.bincount(labels.labels).tolist() == [4, 4, 3]
    for f, label in zip(labels.files, labels.labels):
        assert int(os.path.basename(f)[6:12]) % 3 == label
    assert len(set(_md5s(out))) == 11
    ds = data.make_dataset(labels.files, 32, 4, labels=labels.labels, class_names=labels.names)
    assert '3 classes (circle 4, square 4, triangle 3)' in ds.summary


def test_labelled_shapes_are_one_shape_of_their_class_kind_and_hue(tmp_path, monkeypatch):
    drawn = []  # per image: (background colours, [(kind, fill, area), ...])

    class Recorder(ImageDraw.ImageDraw):  # records kind, fill and area / image area
        def ellipse(self, xy, *args, fill=None, **kwargs):
            (x0, y0, x1, y1), size = xy, self.im.size[0]
            drawn[-1][1].append(('circle', fill, np.pi * (x1 - x0) * (y1 - y0) / 4 / size ** 2))
            return super().ellipse(xy, *args, fill=fill, **kwargs)

        def polygon(self, xy, *args, fill=None, **kwargs):
            x, y = np.array(xy).T
            shoelace = abs(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))) / 2
            kind = {4: 'square', 3: 'triangle'}[len(xy)]
            drawn[-1][1].append((kind, fill, shoelace / self.im.size[0] ** 2))
            return super().polygon(xy, *args, fill=fill, **kwargs)

    def draw(image):
        drawn.append((np.unique(np.asarray(image).reshape(-1, 3), axis=0), []))
        return Recorder(image)

    monkeypatch.setattr(shapes_data.ImageDraw, 'Draw', draw)
    shapes_data.make_shapes_dataset(str(tmp_path / 'l'), n_images=30, img_size=8, labelled=True)
    assert len(drawn) == 30
    for i, (background, shapes) in enumerate(drawn):
        assert len(background) == 1  # plain
        [(kind, fill, area)] = shapes
        assert kind == shapes_data.SHAPE_CLASSES[i % 3]
        assert np.pi * 0.22 ** 2 - 1e-9 <= area <= np.pi * 0.36 ** 2 + 1e-9, (kind, area)
        hue, saturation, value = colorsys.rgb_to_hsv(*(c / 255 for c in fill))
        off = abs((hue * 360 - 120 * (i % 3) + 180) % 360 - 180)  # red, green, blue
        assert off <= 30.5 and saturation >= 0.59 and value >= 0.59, (i, fill)
        assert np.abs(np.subtract(fill, background[0])).sum() >= 149  # visible
    drawn.clear()
    shapes_data.make_shapes_dataset(str(tmp_path / 'u'), n_images=30, img_size=8)
    kinds = [[kind for kind, _, _ in shapes] for _, shapes in drawn]
    assert len({k for ks in kinds for k in ks}) == 3  # unlabelled: kinds still mixed
    assert any(len(set(ks)) == 2 for ks in kinds)


def test_labelled_and_unlabelled_shapes_never_mix(tmp_path):
    out = str(tmp_path / 'shapes')
    shapes_data.make_shapes_dataset(out, n_images=6)
    shapes_data.make_shapes_dataset(out, n_images=6, labelled=True)  # regenerated: another marker
    assert data.read_labels(out).labels == [0, 0, 1, 1, 2, 2]  # no image left at the root
    with open(os.path.join(out, shapes_data.SHAPES_MARKER)) as f:
        assert json.load(f)['labelled'] == 3  # the labelled drawing's version
    assert _md5s(shapes_data.make_shapes_dataset(out, n_images=6)) == UNLABELLED_MD5
    assert sorted(os.listdir(out)) == [shapes_data.SHAPES_MARKER] + [f'shape_{i:06d}.png' for i in range(6)]


def test_labelled_shapes_written_once_and_regenerated_when_incomplete(tmp_path):
    out = str(tmp_path / 'shapes')
    shapes_data.make_shapes_dataset(out, n_images=6, img_size=8, labelled=True)
    files = data.list_image_files(out)
    old = 1_000_000_000
    for f in files:
        os.utime(f, (old, old))
    shapes_data.make_shapes_dataset(out, n_images=6, img_size=8, labelled=True)
    assert all(os.stat(f).st_mtime == old for f in files)  # complete: nothing written
    os.remove(files[-1])
    shapes_data.make_shapes_dataset(out, n_images=6, img_size=8, labelled=True)
    assert data.list_image_files(out) == files and all(os.stat(f).st_mtime > old for f in files)


def test_labelled_shapes_of_the_first_drawing_are_regenerated(tmp_path):
    out = str(tmp_path / 'shapes')
    shapes_data.make_shapes_dataset(out, n_images=6, img_size=8, labelled=True)
    first = _md5s(out)
    marker = os.path.join(out, shapes_data.SHAPES_MARKER)
    with open(marker) as f:
        params = {**json.load(f), 'labelled': True}  # what the first labelled drawing wrote
    with open(marker, 'w') as f:
        json.dump(params, f)
    for f in data.list_image_files(out):
        Image.new('RGB', (8, 8)).save(f)
    shapes_data.make_shapes_dataset(out, n_images=6, img_size=8, labelled=True)
    assert _md5s(out) == first
    with open(marker) as f:
        assert json.load(f)['labelled'] == 3
