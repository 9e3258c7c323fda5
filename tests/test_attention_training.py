"""Every attention variant (config g_attention / d_attention) trains through train.py as a
user runs it, and its generator restores from its own checkpoint.

The restored EMA generator must redraw the run's own sample grid (same fixed noise) to
within one grey level: the run draws it under XLA, the test eagerly.
"""
import json
import math
import os

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image
from test_train import run_train, saved_checkpoints

import checkpoints
import config
import shapes_data
import utils

KINDS = config.ATTENTIONS


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return shapes_data.make_shapes_dataset(str(tmp_path_factory.mktemp('shapes')), n_images=64)


def train_variant(kind, shapes, model_dir, *extra):
    result = run_train('--file_pattern', shapes, '--model_dir', model_dir, '--preset', 'tiny',
                       '--set', f'g_attention={kind}', '--set', f'd_attention={kind}',
                       '--no_fid', *extra, timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    return [json.loads(line) for line in open(os.path.join(model_dir, 'metrics.jsonl'))]


def assert_generator_redraws_its_samples(model_dir, n_images):
    conf = config.load_run_config(model_dir)
    generator = checkpoints.load_generator(model_dir)
    noise = tf.random.stateless_normal([25, conf['noise_dim']], seed=[conf['test_seed'], 0])
    images, attention = generator(noise, training=False)
    redrawn = utils.image_grid(utils.to_uint8(images)).astype(int)
    saved = np.asarray(Image.open(f'{model_dir}/images/samples-{n_images:09d}.png')).astype(int)
    assert saved.std() > 0
    assert np.abs(redrawn - saved).max() <= 1
    assert np.mean(redrawn != saved) < 0.01
    for attn in attention:
        np.testing.assert_allclose(np.sum(attn, axis=-1), 1.0, atol=1e-4)


# lada and dot (linear and quadratic) in the default suite; simplex, duplex and l2 in the
# slow suite, with the 300-step runs of every attention below; all their layers are checked
# against numpy in test_attention.py.
@pytest.mark.parametrize('kind', [pytest.param(k, marks=pytest.mark.slow)
                                  if k in ('simplex', 'duplex', 'l2') else k for k in KINDS])
def test_each_attention_trains_a_few_steps_and_restores(kind, shapes, tmp_path):
    model_dir = str(tmp_path / kind)
    logged = train_variant(kind, shapes, model_dir, '--set', 'batch_size=8', '--no-jit',
                           '--total_iter', '2', '--fid_inter', '2', '--metrics_inter', '1')
    assert [entry['iter'] for entry in logged] == [1, 2]
    saved = json.load(open(os.path.join(model_dir, 'config.json')))
    assert (saved['g_attention'], saved['d_attention']) == (kind, kind)
    assert saved_checkpoints(model_dir) == [16]
    assert_generator_redraws_its_samples(model_dir, 16)
    checkpoints.load_discriminator(model_dir)  # raises if any of its weights is missing


@pytest.mark.slow
@pytest.mark.parametrize('kind', KINDS)
def test_each_attention_trains_300_steps_without_nan(kind, shapes, tmp_path):
    model_dir = str(tmp_path / kind)
    logged = train_variant(kind, shapes, model_dir, '--total_iter', '300',
                           '--fid_inter', '150', '--metrics_inter', '25')
    assert [entry['iter'] for entry in logged] == list(range(25, 301, 25))
    for entry in logged:
        assert all(math.isfinite(entry[k]) for k in ('d_loss', 'g_loss', 'gp')), entry
    assert saved_checkpoints(model_dir) == [150 * 32, 300 * 32]
    assert_generator_redraws_its_samples(model_dir, 300 * 32)
