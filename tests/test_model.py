"""The model against the authors' reference fixture, and its sizes."""
import json
import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import config
import ladaformer
import model
import trainer

STAGES = (8, 16, 32)


def _checkpoint(fixture_dir, subdir):
    return os.path.join(fixture_dir, subdir, 'ckpt-8')


@pytest.fixture(scope='module', params=['best-training-checkpoints', 'training-checkpoints'])
def restored(request, fixture_dir):
    path = _checkpoint(fixture_dir, request.param)
    return {
        'g': checkpoints.load_generator(fixture_dir, ema=False, checkpoint_path=path),
        'ema': checkpoints.load_generator(fixture_dir, ema=True, checkpoint_path=path),
        'd_path': path,
    }


@pytest.mark.parametrize('which', ['g', 'ema'])
def test_generator_reproduces_reference(restored, reference, which):
    images, attention = restored[which](reference['noise'], training=False)
    np.testing.assert_allclose(images, reference[f'{which}_img'], atol=1e-5, rtol=0)
    for attn, stage in zip(attention, STAGES):
        np.testing.assert_allclose(attn, reference[f'{which}_attn_{stage}'], atol=1e-7, rtol=0)


def test_discriminator_reproduces_reference(restored, reference, fixture_dir):
    d = checkpoints.load_discriminator(fixture_dir, checkpoint_path=restored['d_path'])
    np.testing.assert_allclose(d(reference['images'], training=False), reference['d_logits'],
                               atol=1e-5, rtol=0)
    np.testing.assert_allclose(d(reference['images'], training=True),
                               reference['d_logits_training'], atol=1e-5, rtol=0)


def test_r1_penalty_reproduces_reference(restored, reference, fixture_dir):
    d = checkpoints.load_discriminator(fixture_dir, checkpoint_path=restored['d_path'])
    logits, penalty = trainer.r1_penalty(d, tf.constant(reference['images']), 1e-4)
    np.testing.assert_allclose(logits, reference['r1_logits'], atol=1e-5, rtol=0)
    np.testing.assert_allclose(penalty, reference['r1_penalty'], rtol=1e-4)


def test_xla_gives_the_same_outputs(fixture_dir, reference):
    g = checkpoints.load_generator(fixture_dir)
    d = checkpoints.load_discriminator(fixture_dir)
    images, attention = tf.function(lambda z: g(z, training=False), jit_compile=True)(
        reference['noise'])
    np.testing.assert_allclose(images, reference['ema_img'], atol=1e-5, rtol=0)
    np.testing.assert_allclose(attention[2], reference['ema_attn_32'], atol=1e-7, rtol=0)
    logits = tf.function(lambda x: d(x, training=False), jit_compile=True)(reference['images'])
    np.testing.assert_allclose(logits, reference['d_logits'], atol=1e-5, rtol=0)


def test_any_batch_size_gives_the_same_samples(fixture_dir, reference):
    g = checkpoints.load_generator(fixture_dir)
    d = checkpoints.load_discriminator(fixture_dir)
    for batch in (1, 3, 8):
        images, attention = g(reference['noise'][:batch], training=False)
        np.testing.assert_allclose(images, reference['ema_img'][:batch], atol=1e-5, rtol=0)
        np.testing.assert_allclose(attention[1], reference['ema_attn_16'][:batch], atol=1e-7)
        logits = d(reference['images'][:batch], training=False)
        np.testing.assert_allclose(logits, reference['d_logits'][:batch], atol=1e-5, rtol=0)


def test_optimizer_slots_follow_the_authors_weight_order(fixture_dir):
    """Zero-initialised biases and LayerNorm/BatchNorm offsets and scales reveal whether the
    restored Adam slots belong to the right weights: after two Adam steps from a known
    start w0, w2 - w0 + step2(m, v) must be the first step, of size lr per element."""
    conf = config.load_run_config(fixture_dir)
    gan = trainer.LadaGAN(conf)
    checkpoints.restore_checkpoint(_checkpoint(fixture_dir, 'training-checkpoints'),
                             **gan.checkpoint_objects())
    lr, b1, b2, eps = 2e-4, 0.5, 0.99, 1e-7
    checked = 0
    for net, opt in ((gan.generator, gan.g_optimizer), (gan.discriminator, gan.d_optimizer)):
        slots = checkpoints.optimizer_variables(opt, net)
        paths = {id(v): p for p, v in checkpoints.checkpoint_variables(net).items()}
        for i, w in enumerate(net.trainable_weights):
            if w.name not in ('bias', 'beta', 'gamma'):
                continue
            w0 = 1.0 if w.name == 'gamma' else 0.0  # LayerNorm/BatchNorm scale starts at 1
            m = slots[f'_variables/{2 * i + 1}'].numpy()
            v = slots[f'_variables/{2 * i + 2}'].numpy()
            step2 = lr * np.sqrt(1 - b2 ** 2) / (1 - b1 ** 2) * m / (np.sqrt(v) + eps)
            first_step = np.abs(w.numpy() - w0 + step2)
            # |g / (|g| + eps)| = 1 unless the gradients were tiny (q_attn's bias has none:
            # softmax ignores a shift shared by all tokens); those say nothing.
            informative = np.sqrt(v) > 1e-6
            if informative.mean() < 0.5:
                continue
            within = np.abs(first_step - lr)[informative] < 0.02 * lr
            assert within.mean() > 0.9, (paths[id(w)], first_step)
            checked += 1
    assert checked > 20


@pytest.mark.parametrize('preset, g_params, d_params', [
    ('cifar10', (19_901_647, 0), (6_775_940, 1_536)),
    ('celeba_64', (19_900_351, 0), (7_004_356, 2_304)),
    ('ffhq_128', (24_026_255 - 384, 384), (7_061_220, 2_688)),
])
def test_parameter_counts_match_the_released_models(preset, g_params, d_params):
    conf = config.get_config(preset)
    assert model.count_parameters(model.build_generator(conf)) == g_params
    assert model.count_parameters(model.build_discriminator(conf)) == d_params


@pytest.mark.parametrize('preset, gmacs', [('celeba_64', 0.758), ('ffhq_128', 4.34)])
def test_generator_macs_match_the_readme(preset, gmacs):
    conf = config.get_config(preset)
    macs = model.count_macs(model.build_generator(conf), (conf['noise_dim'],))
    assert float(f'{macs / 1e9:.3g}') == gmacs


def test_macs_of_a_conditional_model_add_its_class_terms():
    conf = config.get_config('tiny')
    cond = {**conf, 'n_classes': 3}
    size, noise_dim = conf['img_size'], conf['noise_dim']
    d_extra = (model.count_macs(model.build_discriminator(cond), (size, size, 3))
               - model.count_macs(model.build_discriminator(conf), (size, size, 3)))
    assert d_extra == 25 * conf['d_out_dim'][1]  # <e(y), window sum> for each of 25 patches
    g = model.build_generator(cond)
    # Each self-modulated LayerNorm's first Dense reads [z, e(y)]: noise_dim more inputs
    # for each of its units.
    style_units = sum(layer.h.units for layer in g._flatten_layers()
                      if isinstance(layer, ladaformer.SelfModulatedLayerNorm))
    assert style_units == 2 * sum(conf['g_dim'])  # two norms per block
    g_extra = (model.count_macs(g, (noise_dim,))
               - model.count_macs(model.build_generator(conf), (noise_dim,)))
    assert g_extra == noise_dim * style_units


@pytest.mark.parametrize('img_size', [32, 64, 128, 256])
def test_discriminator_gives_25_logits_at_every_size(img_size):
    enc = [8, 8, 16, 16, 16][:config.D_STAGES[img_size]]
    d = model.Discriminator(img_size, enc_dim=enc, out_dim=[16, 16], mlp_dim=16, heads=2)
    logits = d(tf.zeros([2, img_size, img_size, 3]), training=True)
    assert logits.shape == (2, 25) and logits.dtype == tf.float32


@pytest.mark.parametrize('img_size, dec_dim', [(64, False), (128, False), (128, [16, 8]),
                                               (256, [8, 8, 8])])
def test_generator_output_sizes(img_size, dec_dim):
    g = model.Generator(img_size, model_dim=[64, 32, 64], heads=[2, 2, 2], mlp_dim=[16, 16, 16],
                        dec_dim=dec_dim, noise_dim=8)
    images, attention = g(tf.zeros([2, 8]), training=True)
    assert images.shape == (2, img_size, img_size, 3)
    assert [a.shape for a in attention] == [(2, 2, 64), (2, 2, 256), (2, 2, 1024)]
    np.testing.assert_allclose(tf.reduce_sum(attention[2], -1), 1.0, rtol=1e-5)


# --- checkpoint errors ------------------------------------------------------------------------

def _copy_fixture(fixture_dir, tmp_path):
    target = tmp_path / 'model'
    shutil.copytree(fixture_dir, target)
    return target


def test_missing_model_dir_is_a_clear_error(tmp_path):
    with pytest.raises(checkpoints.CheckpointError, match='does not exist'):
        checkpoints.load_generator(str(tmp_path / 'nope'))


def test_model_dir_without_checkpoint_is_a_clear_error(tmp_path, fixture_dir):
    shutil.copy(os.path.join(fixture_dir, 'config.json'), tmp_path)
    with pytest.raises(checkpoints.CheckpointError, match='no checkpoint'):
        checkpoints.load_generator(str(tmp_path))


def test_config_that_does_not_match_names_the_variable(tmp_path, fixture_dir):
    target = _copy_fixture(fixture_dir, tmp_path)
    conf = json.loads((target / 'config.json').read_text())
    conf['g_mlp'] = [64, 128, 64]
    (target / 'config.json').write_text(json.dumps(conf))
    with pytest.raises(checkpoints.CheckpointError,
                       match=r'block_16/mlp/layer_with_weights-0/kernel has shape \[64, 64\]'):
        checkpoints.load_generator(str(target))


def test_unknown_config_key_is_a_clear_error(tmp_path, fixture_dir):
    target = _copy_fixture(fixture_dir, tmp_path)
    conf = json.loads((target / 'config.json').read_text())
    # One of our run folders (it has our keys); the authors' are in test_released_configs.
    conf.update(ema_init='copy', g_depth=3)
    (target / 'config.json').write_text(json.dumps(conf))
    with pytest.raises(checkpoints.CheckpointError, match=r"unknown config key\(s\) \['g_depth'\]"):
        checkpoints.load_generator(str(target))


def test_falls_back_to_training_checkpoints(tmp_path, fixture_dir, reference):
    target = _copy_fixture(fixture_dir, tmp_path)
    shutil.rmtree(target / 'best-training-checkpoints')
    assert checkpoints.find_checkpoint(str(target)).endswith(
        os.path.join('training-checkpoints', 'ckpt-8'))
    images, _ = checkpoints.load_generator(str(target))(reference['noise'])
    np.testing.assert_allclose(images, reference['ema_img'], atol=1e-5)
