"""Gradient accumulation and mixed precision of the train step."""
import os

import numpy as np
import pytest

import checkpoints
import config
import shapes_data
import trainer


def _restored(fixture_dir, **kwargs):
    conf = {**config.load_run_config(fixture_dir), **kwargs.pop('conf', {})}
    gan = trainer.LadaGAN(conf, jit_compile=False, **kwargs)
    checkpoints.restore_checkpoint(os.path.join(fixture_dir, 'training-checkpoints', 'ckpt-8'),
                             **gan.checkpoint_objects())
    return gan


def _weights(gan, moving_stats=True):
    nets = (gan.discriminator, gan.generator, gan.ema_generator)
    return [w.numpy() for net in nets for w in net.weights
            if moving_stats or 'moving_' not in w.name]


def test_two_accumulated_micro_batches_equal_one_batch(fixture_dir, reference):
    # The two halves are the same images and noise, so BatchNorm sees the same batch
    # statistics in a micro-batch as in the whole batch and the results must agree.
    half = reference['train_images'][0]
    rng = np.random.default_rng(3)
    z_d, z_g = (rng.standard_normal((4, 32)).astype(np.float32) for _ in range(2))
    twice = lambda x: np.concatenate([x, x])
    one = _restored(fixture_dir, conf={'batch_size': 8})
    accumulated = _restored(fixture_dir, conf={'batch_size': 8}, grad_accum=2)
    m1 = one.train_step(twice(half), twice(z_d), twice(z_g), augment=False)
    m2 = accumulated.train_step(twice(half), twice(z_d), twice(z_g), augment=False)
    for name in m1:
        assert m2[name] == pytest.approx(m1[name], abs=1e-5), name
    # BatchNorm moving statistics are updated once per micro-batch (documented caveat).
    for a, b in zip(_weights(one, False), _weights(accumulated, False)):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)

    # Different halves: the second micro-batch must count.
    other = reference['train_images'][1]
    first_only = _restored(fixture_dir, conf={'batch_size': 4})
    first_only.train_step(half, z_d, z_g, augment=False)
    both = _restored(fixture_dir, conf={'batch_size': 8}, grad_accum=2)
    both.train_step(np.concatenate([half, other]), twice(z_d), twice(z_g), augment=False)
    assert max(np.abs(a - b).max() for a, b in zip(_weights(first_only), _weights(both))) > 1e-4


def test_batch_must_divide_into_micro_batches(fixture_dir):
    with pytest.raises(trainer.config_lib.ConfigError, match='3 accumulation steps'):
        trainer.LadaGAN(config.load_run_config(fixture_dir), grad_accum=3)


def test_bf16_step_is_close_to_fp32_and_keeps_float32_weights(fixture_dir, reference):
    rng = np.random.default_rng(4)
    z_d, z_g = (rng.standard_normal((4, 32)).astype(np.float32) for _ in range(2))
    fp32 = _restored(fixture_dir).train_step(reference['train_images'][0], z_d, z_g,
                                             augment=False)
    gan = _restored(fixture_dir, precision='bf16')
    bf16 = gan.train_step(reference['train_images'][0], z_d, z_g, augment=False)
    assert all(w.dtype == 'float32' for w in gan.generator.weights + gan.ema_generator.weights)
    assert gan.generator.layers[-1].compute_dtype == 'bfloat16'
    for name in ('d_loss', 'g_loss', 'd_total'):
        assert bf16[name] == pytest.approx(fp32[name], rel=0.05), name


def test_fp16_skips_updates_whose_gradients_overflow(fixture_dir, reference):
    gan = _restored(fixture_dir, precision='fp16')
    before = [w.numpy() for w in gan.discriminator.trainable_weights]
    huge = np.full((4, 32, 32, 3), 6e4, np.float32)  # overflows float16 activations
    gan.train_step(huge, augment=False)
    after = [w.numpy() for w in gan.discriminator.trainable_weights]
    assert all(np.isfinite(w).all() for w in after)
    assert all(np.array_equal(a, b) for a, b in zip(before, after))
    # A normal batch then updates the weights.
    gan.train_step(reference['train_images'][0], augment=False)
    assert any(not np.array_equal(a, w.numpy())
               for a, w in zip(before, gan.discriminator.trainable_weights))


@pytest.mark.slow
def test_bf16_training_of_the_tiny_preset_stays_finite(tmp_path):
    import json
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shapes = shapes_data.make_shapes_dataset(str(tmp_path / 'data'), n_images=256)
    result = subprocess.run(
        [sys.executable, os.path.join(root, 'train.py'), '--file_pattern', shapes,
         '--model_dir', str(tmp_path / 'run'), '--preset', 'tiny', '--set', 'batch_size=8',
         '--precision', 'bf16', '--total_iter', '300', '--metrics_inter', '50',
         '--fid_inter', '300', '--no_fid'],
        capture_output=True, text=True, timeout=3000)
    assert result.returncode == 0, result.stderr[-3000:]
    logged = [json.loads(line) for line in open(tmp_path / 'run' / 'metrics.jsonl')]
    assert len(logged) == 6
    assert all(np.isfinite(v) for entry in logged for v in entry.values())


@pytest.mark.slow  # ~50 s: the lazy-R1 schedule itself is checked in tests/test_trainer.py
def test_lazy_r1_with_bcr_fp16_and_accumulation():
    """R1 exactly on the D updates whose count is even (a skipped fp16 update does not
    count), with the bCR term and two micro-batches in the same step."""
    import config
    conf = config.get_config('tiny', batch_size=4, bcr=True, r1_interval=2)
    gan = trainer.LadaGAN(conf, jit_compile=False, precision='fp16', grad_accum=2)
    images = np.random.default_rng(7).uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    due = []
    for _ in range(3):
        due.append(int(gan.d_optimizer.iterations.numpy()) % 2 == 0)
        metrics = gan.train_step(images)
        assert (metrics['gp'] > 0) == due[-1] and metrics['cr'] > 0, metrics
    assert True in due and False in due
