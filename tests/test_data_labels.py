"""Class labels in the data pipeline: read_labels from class folders, CSV and JSON files and
their errors, labels travelling with their images through make_dataset (skips, shuffling,
caching), class counts and the summary. All images are built in tmp_path with PIL."""
import json
import os

import numpy as np
import pytest
from PIL import Image

import data

# A colour per class, so that a decoded pixel tells which class its image came from.
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30), (30, 200, 200)]


def _png(path, colour=(0, 0, 0), size=4):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    Image.fromarray(np.full((size, size, 3), colour, np.uint8)).save(path)
    return str(path)


def _class_of(image):
    """The class whose COLOURS entry an image in [-1, 1] shows."""
    rgb = np.round((image[0, 0] + 1.0) * 127.5)
    return next(i for i, c in enumerate(COLOURS) if np.array_equal(rgb, c))


def _folders(root, counts):
    """counts[k] solid PNGs of COLOURS[k] in root/class_k/; the files, sorted."""
    return sorted(_png(os.path.join(root, f'class_{k}', f'{i:02d}.png'), COLOURS[k])
                  for k, n in enumerate(counts) for i in range(n))


def _write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, 'w') as f:
        f.write(text)
    return str(path)


# ---------------------------------------------------------------------------------------
# read_labels from class folders
# ---------------------------------------------------------------------------------------

def test_folder_labels_sorted_classes_nested_files_aligned(tmp_path):
    root = str(tmp_path / 'data')
    _png(os.path.join(root, 'dog', 'b.png'))
    _png(os.path.join(root, 'cat', 'z.png'))
    _png(os.path.join(root, 'cat', 'deep', 'er', 'a.jpg'))  # deeper: still a cat
    _png(os.path.join(root, 'ant', 'x.PNG'))
    labels = data.read_labels(root)
    assert isinstance(labels, data.Labels)
    assert labels.names == ['ant', 'cat', 'dog']
    assert labels.files == data.list_image_files(root)
    by_file = {os.path.relpath(f, root): label for f, label in zip(labels.files, labels.labels)}
    assert by_file == {os.path.join('ant', 'x.PNG'): 0, os.path.join('cat', 'deep', 'er', 'a.jpg'): 1,
                       os.path.join('cat', 'z.png'): 1, os.path.join('dog', 'b.png'): 2}


def test_one_class_folder_is_a_valid_labelled_set(tmp_path):
    _png(tmp_path / 'only' / 'a.png')
    _png(tmp_path / 'only' / 'b.png')
    assert data.read_labels(str(tmp_path)) == (['only'], data.list_image_files(str(tmp_path)), [0, 0])


def test_class_folder_without_images_raises_naming_it(tmp_path):
    _png(tmp_path / 'cat' / 'a.png')
    _write(str(tmp_path / 'notes' / 'readme.txt'), 'no images here')
    with pytest.raises(data.DataError, match=r"'.*notes' holds no image: remove it or add images"):
        data.read_labels(str(tmp_path))


def test_images_at_the_root_raise_with_their_count_and_one_name(tmp_path):
    _png(tmp_path / 'cat' / 'a.png')
    _png(tmp_path / 'loose1.png')
    _png(tmp_path / 'loose2.png')
    with pytest.raises(data.DataError) as e:
        data.read_labels(str(tmp_path))
    message = str(e.value)
    assert message.startswith('2 images lie directly in') and 'loose1.png' in message
    assert 'move them into a class folder' in message and 'labels file' in message
    assert '\n' not in message


def test_folder_labels_need_a_directory(tmp_path):
    _png(tmp_path / 'cat' / 'a.png')
    with pytest.raises(data.DataError, match='is not a directory'):
        data.read_labels(str(tmp_path / '*' / '*.png'))


# ---------------------------------------------------------------------------------------
# read_labels from a labels file
# ---------------------------------------------------------------------------------------

def _three_images(tmp_path):
    """images/a.png, images/b.png, images/sub/c.png; the labels file goes in meta/."""
    return [_png(tmp_path / 'images' / name) for name in ('a.png', 'b.png', 'sub/c.png')]


@pytest.mark.parametrize('header', ['', 'path,class\n', 'file,label\n', 'Path, Class\n'])
def test_labels_from_csv_relative_to_its_folder_with_or_without_header(tmp_path, header):
    files = _three_images(tmp_path)
    # Relative to meta/, not to the working directory; an absolute path works as well.
    rows = f'../images/b.png,zebra\n../images/sub/c.png, ant\n\n{os.path.abspath(files[0])},zebra\n'
    csv_file = _write(str(tmp_path / 'meta' / 'labels.csv'), header + rows)
    labels = data.read_labels(str(tmp_path / 'images'), csv_file)
    assert labels == (['ant', 'zebra'], files, [1, 1, 0])


def test_labels_from_json_with_a_glob(tmp_path):
    files = _three_images(tmp_path)
    json_file = _write(str(tmp_path / 'meta' / 'labels.JSON'), json.dumps(
        {'../images/sub/c.png': 'b', '../images/./a.png': 'a', '../images/b.png': 'b'}))
    labels = data.read_labels(str(tmp_path / 'images' / '**' / '*.png'), json_file)
    assert labels == (['a', 'b'], files, [0, 1, 1])


def test_unknown_path_in_the_labels_file_raises_naming_it_and_the_count(tmp_path):
    _three_images(tmp_path)
    # Written relative to the working directory instead of the labels file's folder.
    csv_file = _write(str(tmp_path / 'meta' / 'labels.csv'),
                      'images/a.png,x\nimages/b.png,x\n../images/sub/c.png,y\n')
    with pytest.raises(data.DataError) as e:
        data.read_labels(str(tmp_path / 'images'), csv_file)
    message = str(e.value)
    assert message.startswith('2 paths in labels file') and "'images/a.png'" in message
    assert 'relative to the labels file' in message and '\n' not in message


def test_images_without_an_entry_are_left_out_with_a_warning(tmp_path):
    files = _three_images(tmp_path)
    json_file = _write(str(tmp_path / 'images' / 'labels.json'), json.dumps({'b.png': 'x'}))
    with pytest.warns(data.DataWarning, match=r'Leaving out 2 of 3 images .*a\.png'):
        labels = data.read_labels(str(tmp_path / 'images'), json_file)
    assert labels == (['x'], [files[1]], [0])


@pytest.mark.parametrize('text, match', [
    ('a.png,x\nb.png\n', "line 2: expected 2 non-empty fields"),
    ('path,class\na.png,x\nb.png,x,extra\n', "line 3: expected 2"),
    ('a.png,\n', "line 1: expected 2 non-empty fields"),
    ('a.png,x\nb.png,"x\n', 'line 2: not valid CSV'),  # the unterminated quote's line
    ('', 'has no entries'),
    ('path,class\n', 'has no entries'),
])
def test_malformed_csv_raises_naming_the_line(tmp_path, text, match):
    _three_images(tmp_path)
    csv_file = _write(str(tmp_path / 'images' / 'labels.csv'), text)
    with pytest.raises(data.DataError, match=match) as e:
        data.read_labels(str(tmp_path / 'images'), csv_file)
    assert 'labels.csv' in str(e.value) and '\n' not in str(e.value)


@pytest.mark.parametrize('text, match', [
    ('{"a.png": "x",}', r'not valid JSON \(line 1'),
    ('[["a.png", "x"]]', 'must hold a JSON object .* not an array'),
    ('{"a.png": 3}', "class of 'a.png' is 3, not a non-empty string"),
    ('{}', 'has no entries'),
])
def test_malformed_json_raises(tmp_path, text, match):
    _three_images(tmp_path)
    json_file = _write(str(tmp_path / 'images' / 'labels.json'), text)
    with pytest.raises(data.DataError, match=match):
        data.read_labels(str(tmp_path / 'images'), json_file)


def test_labels_file_problems_raise(tmp_path):
    _three_images(tmp_path)
    images = str(tmp_path / 'images')
    with pytest.raises(data.DataError, match=r"must end in \.csv or \.json"):
        data.read_labels(images, _write(str(tmp_path / 'labels.txt'), 'a.png,x\n'))
    with pytest.raises(data.DataError, match='Cannot read labels file'):
        data.read_labels(images, str(tmp_path / 'missing.csv'))
    conflicting = _write(str(tmp_path / 'images' / 'l.csv'), 'a.png,x\n./a.png,y\n')
    with pytest.raises(data.DataError, match="gives './a.png' two classes"):
        data.read_labels(images, conflicting)


# ---------------------------------------------------------------------------------------
# make_dataset with labels
# ---------------------------------------------------------------------------------------

def _with_bad_files(root, files, labels):
    """files/labels plus, in the middle of the list, a file the header check skips and
    one that only fails while decoding: a label shifted by a skip would show."""
    truncated = os.path.join(root, 'class_0', '05_truncated.png')
    with open(truncated, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n' + b'\x00' * 40)
    with open(_png(os.path.join(root, 'x.png'), size=16), 'rb') as f:
        encoded = f.read()
    os.remove(os.path.join(root, 'x.png'))
    garbage = os.path.join(root, 'class_1', '03_garbage.png')
    with open(garbage, 'wb') as f:  # PNG signature and IEND around garbage: passes the check
        f.write(encoded[:33] + b'\x00' * 200 + encoded[-12:])
    assert data.check_images([garbage])[0] == [garbage]
    order = sorted(zip(files + [truncated, garbage], labels + [0, 1]))
    return [f for f, _ in order], [label for _, label in order]


@pytest.mark.parametrize('cache', [True, False])
def test_each_image_keeps_its_own_label_through_skips_shuffling_and_caching(tmp_path, cache):
    root = str(tmp_path)
    counts = [7, 5, 6]
    files = _folders(root, counts)
    files, labels = _with_bad_files(root, files, [k for k, n in enumerate(counts) for _ in range(n)])
    with pytest.warns(data.DataWarning, match='05_truncated.png'):
        ds = data.make_dataset(files, 4, 6, labels=labels, cache=cache, seed=0)
    assert ds.n_files == 19  # the garbage file passes the header check, fails decoding
    assert ds.class_counts == [7, 6, 6]  # counted before decoding
    epochs = []
    for images, batch_labels in ds.take(9):  # 3 epochs of 18 decodable images
        assert images.shape == (6, 4, 4, 3) and batch_labels.shape == (6,)
        assert batch_labels.dtype == 'int32'
        images, batch_labels = images.numpy(), batch_labels.numpy()
        assert [_class_of(im) for im in images] == batch_labels.tolist()
        epochs.extend(batch_labels.tolist())
    epochs = [epochs[i:i + 18] for i in range(0, 54, 18)]
    for epoch in epochs:
        assert sorted(epoch) == [0] * 7 + [1] * 5 + [2] * 6
    assert epochs[0] != sorted(epochs[0]) and epochs[0] != epochs[1]  # really shuffled


def test_labels_follow_the_listing_of_a_directory(tmp_path):
    files = _folders(str(tmp_path), [3, 2])
    labels = data.read_labels(str(tmp_path))
    ds = data.make_dataset(str(tmp_path), 4, 5, labels=labels.labels, repeat=False, cache=False)
    ((images, batch_labels),) = list(ds)
    assert [_class_of(im) for im in images.numpy()] == batch_labels.numpy().tolist()
    assert sorted(batch_labels.numpy().tolist()) == [0, 0, 0, 1, 1] and len(files) == 5


def test_class_counts_include_classes_without_usable_images(tmp_path):
    files = _folders(str(tmp_path), [2, 1, 1])
    with open(files[-1], 'wb') as f:  # class 2's only image: skipped by the header check
        f.write(b'not an image')
    with pytest.warns(data.DataWarning):
        ds = data.make_dataset(files, 4, 1, labels=[0, 0, 1, 2], n_classes=4)
    assert ds.class_counts == [2, 1, 0, 0]
    assert '; 4 classes (#0 2, #1 1, #2 0, #3 0); ' in ds.summary
    with pytest.warns(data.DataWarning):
        ds = data.make_dataset(files, 4, 1, labels=[0, 0, 1, 2])  # n_classes from the labels
    assert ds.class_counts == [2, 1, 0]
    with pytest.warns(data.DataWarning):
        ds = data.make_dataset(files, 4, 1, labels=[0, 0, 1, 2], class_names=['a', 'b', 'c'])
    assert ds.summary.startswith('3 images (1 skipped: 1 not an image); 3 classes (a 2, b 1, c 0); ')


def test_summary_beyond_eight_classes_gives_the_range(tmp_path):
    files = [_png(tmp_path / f'{i:02d}.png') for i in range(24)]
    labels = [i % 10 for i in range(24)]  # classes 0-3 have 3 images, 4-9 have 2
    ds = data.make_dataset(files, 4, 2, labels=labels)
    assert ds.summary.startswith('24 images; 10 classes, 2 to 3 images each; all 4x4; ')
    one = data.make_dataset(files[:3], 4, 1, labels=[0, 0, 0], class_names=['cat'])
    assert one.summary.startswith('3 images; 1 class (cat 3); ')


def test_unlabelled_dataset_is_unchanged(tmp_path):
    files = _folders(str(tmp_path), [2, 2])
    ds = data.make_dataset(files, 4, 2)
    assert ds.class_counts is None and 'class' not in ds.summary
    assert ds.element_spec.shape == (2, 4, 4, 3)  # images alone, not a tuple


@pytest.mark.parametrize('kwargs, match', [
    ({'labels': [0, 1, 1]}, '3 labels for 4 image files'),
    ({'labels': [0, 1, -1, 0]}, 'labels must be >= 0'),
    ({'labels': [0.0, 1.0, 1.0, 0.0]}, 'labels must be a list of ints'),
    ({'labels': [0, 1, 2, 0], 'n_classes': 2}, 'label 2 is out of range for n_classes=2'),
    ({'labels': [0, 1, 1, 0], 'n_classes': 3, 'class_names': ['a', 'b']},
     'n_classes=3 but 2 class_names'),
])
def test_bad_labels_raise(tmp_path, kwargs, match):
    files = _folders(str(tmp_path), [2, 2])
    with pytest.raises(data.DataError, match=match):
        data.make_dataset(files, 4, 2, **kwargs)


def test_decode_uint8_images_of_one_class(tmp_path):
    _folders(str(tmp_path), [3, 4])
    labels = data.read_labels(str(tmp_path))
    one = [f for f, label in zip(labels.files, labels.labels) if label == 1]
    (batch,) = data.decode_uint8_images(one, 4)
    assert batch.shape == (4, 4, 4, 3)
    assert (batch == np.array(COLOURS[1], np.uint8)).all()
