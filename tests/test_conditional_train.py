"""Class-conditional training as a user runs it (train.py subprocesses): labels from class
folders and from a labels file, the run's classes.json, one-line errors, the SAGAN recipe."""
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

from test_train import assert_clean_error, run_train, saved_checkpoints

SMALL = ['--set', 'batch_size=8', '--no_fid', '--no-jit']
# The sagan preset's recipe on the tiny preset's widths, so that it trains in seconds.
TINY_WIDTHS = ['g_dim=[128,64,32]', 'g_heads=[2,2,2]', 'g_mlp=[128,128,128]', 'noise_dim=64',
               'd_enc_dim=[32,64]', 'd_out_dim=[64,128]', 'd_heads=2', 'd_mlp=128']


def _class_folders(root, counts):
    """Class folders of solid-colour 32x32 PNGs (class k: colour k), one nested deeper."""
    for k, (name, n) in enumerate(counts.items()):
        for i in range(n):
            folder = os.path.join(root, name, 'sub' if i == 0 else '')
            os.makedirs(folder, exist_ok=True)
            colour = np.array([80 * k, 255 - 80 * k, 40 * i % 256], np.uint8)
            Image.fromarray(np.broadcast_to(colour, (32, 32, 3)).copy()).save(
                os.path.join(folder, f'{name}_{i}.png'))
    return str(root)


@pytest.mark.slow  # ~60 s; conditional train.py runs are in the default tests below
def test_sagan_recipe_trains_on_class_folders_resumes_and_keeps_its_classes(tmp_path):
    """Spectral norm in G and D, hinge loss, dot attention, no R1; labels from folders."""
    data_dir = _class_folders(tmp_path / 'data', {'cat': 10, 'dog': 6})
    model_dir = str(tmp_path / 'run')
    common = ['--file_pattern', data_dir, '--model_dir', model_dir, '--preset', 'sagan',
              '--set', 'n_classes=2', '--fid_inter', '2',
              *[flag for w in TINY_WIDTHS for flag in ('--set', w)], *SMALL]
    first = run_train(*common, '--total_iter', '2')
    assert first.returncode == 0, first.stderr[-3000:]
    assert '2 classes (cat 10, dog 6)' in first.stdout
    assert json.load(open(os.path.join(model_dir, 'classes.json'))) == {
        'names': ['cat', 'dog'], 'counts': [10, 6]}
    assert os.path.isfile(os.path.join(model_dir, 'images', 'samples-000000016.png'))
    resumed = run_train(*common, '--total_iter', '4')
    assert resumed.returncode == 0 and 'Resumed from' in resumed.stdout, resumed.stderr[-3000:]
    assert saved_checkpoints(model_dir) == [16, 32]
    logged = [json.loads(line) for line in open(os.path.join(model_dir, 'metrics.jsonl'))]
    assert [entry['iter'] for entry in logged] == [2, 4]
    assert all(math.isfinite(entry[k]) for entry in logged for k in ('d_loss', 'g_loss'))
    assert all(entry['gp'] == 0 for entry in logged)  # SAGAN: no R1

    # The same run on data with other classes: refused, nothing written.
    before = sorted(os.listdir(model_dir))
    other = _class_folders(tmp_path / 'other', {'cat': 8, 'fox': 8})
    changed = run_train(*common[:1], other, *common[2:], '--total_iter', '6',
                        '--override_config')
    assert_clean_error(changed, "['cat', 'fox']", 'classes.json')
    assert sorted(os.listdir(model_dir)) == before and saved_checkpoints(model_dir) == [16, 32]


def test_labels_file_names_the_classes(tmp_path):
    _class_folders(tmp_path / 'data', {'x': 8, 'y': 8})
    labels = tmp_path / 'labels.json'  # paths relative to the labels file's folder
    names = [f'data/{c}/{"sub/" if i == 0 else ""}{c}_{i}.png' for c in 'xy' for i in range(8)]
    labels.write_text(json.dumps({path: 'yy' if '/x/' in path else 'xx' for path in names}))
    model_dir = str(tmp_path / 'run')
    result = run_train('--file_pattern', str(tmp_path / 'data'), '--labels', str(labels),
                       '--model_dir', model_dir, '--preset', 'tiny', '--set', 'n_classes=2',
                       '--total_iter', '1', *SMALL)
    assert result.returncode == 0, result.stderr[-3000:]
    assert '2 classes (xx 8, yy 8)' in result.stdout
    assert json.load(open(os.path.join(model_dir, 'classes.json')))['names'] == ['xx', 'yy']
    assert json.load(open(os.path.join(model_dir, 'run.json')))['labels'] == str(labels)


def test_class_count_mismatch_and_labels_without_n_classes_give_one_line(tmp_path):
    data_dir = _class_folders(tmp_path / 'data', {'a': 8, 'b': 8, 'c': 8})
    model_dir = tmp_path / 'run'
    common = ['--file_pattern', data_dir, '--model_dir', str(model_dir), '--preset', 'tiny',
              '--total_iter', '1', *SMALL]
    wrong = run_train(*common, '--set', 'n_classes=2')
    assert_clean_error(wrong, 'has 3 classes (a, b, c) but n_classes=2', '--set n_classes=3')
    labels = tmp_path / 'labels.csv'
    labels.write_text('a/a_1.png,a\n')
    unconditional = run_train(*common, '--labels', str(labels))
    assert_clean_error(unconditional, '--labels', 'n_classes')
    assert not model_dir.exists()
