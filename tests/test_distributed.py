"""tf.distribute: N replicas must compute what one device computes on the global batch."""
import os
import subprocess
import sys
import textwrap

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Logical devices must be configured before TensorFlow starts, hence a fresh process.
TWO_CPUS = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {root!r})
    import checkpoints, config, trainer
    STRATEGIES = (None, tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1']))

    def trained(gan, step):
        """(metrics of two steps, weights of D, G and EMA G, their names)."""
        metrics = [step(gan) for _ in range(2)]
        nets = (gan.discriminator, gan.generator, gan.ema_generator)
        return (metrics, [w.numpy() for net in nets for w in net.weights],
                [w.path for net in nets for w in net.weights])
''')

MIRRORED_VS_ONE_DEVICE = TWO_CPUS + textwrap.dedent('''
    fixture = {fixture!r}
    # With the EMA warm-up on, the decay reads the G optimizer's (mirrored) step count; with
    # lazy R1 the (mirrored) D count picks the R1 step: the 1st of the two below, not the 2nd.
    conf = {{**config.load_run_config(fixture), 'batch_size': 8, 'ema_warmup': True,
             'r1_interval': 2}}
    path = fixture + '/training-checkpoints/ckpt-8'
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    z_d, z_g = (rng.standard_normal((8, 32)).astype(np.float32) for _ in range(2))
    results = []
    for strategy in STRATEGIES:
        gan = trainer.LadaGAN(conf, jit_compile=False, strategy=strategy)
        with gan.strategy.scope():
            checkpoints.restore_checkpoint(path, **gan.checkpoint_objects())
        results.append(trained(gan, lambda gan: gan.train_step(images, z_d, z_g, augment=False)))
        metrics = results[-1][0]
        assert metrics[0]['gp'] > 0 and metrics[1]['gp'] == 0, metrics
    (m1, w1, names), (m2, w2, _) = results
    assert gan.n_replicas == 2
    for a, b in zip(m1, m2):
        for key in a:
            assert abs(a[key] - b[key]) < 1e-5, (key, a[key], b[key])
    worst = max(zip((np.abs(a - b).max() for a, b in zip(w1, w2)), names))
    assert worst[0] < 1e-5, worst
    moving = [n for n in names if 'moving_mean' in n]
    assert moving, 'the discriminator has BatchNorm statistics to compare'
    print('OK', worst)
''')


@pytest.mark.slow  # ~80 s on 2 cores
def test_mirrored_step_on_two_devices_equals_one_device(fixture_dir):
    script = MIRRORED_VS_ONE_DEVICE.format(root=ROOT, fixture=fixture_dir)
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


CONDITIONAL_MIRRORED_VS_ONE_DEVICE = TWO_CPUS + textwrap.dedent('''
    conf = config.get_config('tiny', batch_size=8, n_classes=3, policy='', spectral_norm='both')
    rng = np.random.default_rng(0)
    batch = (rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32),
             rng.integers(0, 3, 8).astype(np.int32))
    noise = (rng.standard_normal((8, conf['noise_dim'])).astype(np.float32),
             rng.integers(0, 3, 8).astype(np.int32))
    results = []
    for strategy in STRATEGIES:
        tf.keras.utils.set_random_seed(5)
        gan = trainer.LadaGAN(conf, jit_compile=False, strategy=strategy)
        results.append(trained(gan, lambda gan: gan.train_step(batch, noise, noise, augment=False)))
    (m1, w1, names), (m2, w2, _) = results
    assert gan.n_replicas == 2 and m1[0]['gp'] > 0
    for a, b in zip(m1, m2):
        for key in a:
            assert abs(a[key] - b[key]) < 1e-4 * max(1, abs(a[key])), (key, a[key], b[key])
    # A fresh Adam's first steps are about lr * g / |g|: float rounding (the replicas sum
    # their gradients in another order) tips weights whose gradient is near 0, about 1 in
    # 10,000 here, by up to lr; the losses above are the sharper check.
    off = sum(int((np.abs(a - b) > 1e-5).sum()) for a, b in zip(w1, w2))
    assert off <= 2e-4 * sum(a.size for a in w1), off
    worst = max(zip((np.abs(a - b).max() for a, b in zip(w1, w2)), names))
    assert worst[0] < 2 * conf['g_lr'], worst
    assert any(n.endswith('spectral_u') for n in names) and gan.discriminator.n_classes == 3
    print('OK', worst)
''')


@pytest.mark.slow  # ~90 s
def test_conditional_mirrored_step_on_two_devices_equals_one_device():
    """Labels, class embeddings and spectral-norm state under MirroredStrategy."""
    script = CONDITIONAL_MIRRORED_VS_ONE_DEVICE.format(root=ROOT)
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]


def _free_ports(n):
    import socket
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(('127.0.0.1', 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _run_two_workers(args):
    import json
    ports = _free_ports(2)
    cluster = {'worker': [f'127.0.0.1:{p}' for p in ports]}
    procs = []
    for index in range(2):
        env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3',
               'TF_CONFIG': json.dumps({'cluster': cluster,
                                        'task': {'type': 'worker', 'index': index}})}
        procs.append(subprocess.Popen([sys.executable, os.path.join(ROOT, 'train.py'), *args],
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True, env=env))
    outputs = [p.communicate(timeout=900) for p in procs]
    for p, (out, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return outputs


@pytest.mark.slow
def test_two_local_workers_train_save_once_and_resume(tmp_path):
    import glob

    import shapes_data
    shapes = shapes_data.make_shapes_dataset(str(tmp_path / 'data'), n_images=32)
    model_dir = tmp_path / 'run'
    common = ['--file_pattern', shapes, '--model_dir', str(model_dir), '--strategy',
              'multiworker', '--preset', 'tiny', '--set', 'batch_size=8', '--no_fid',
              '--no-jit', '--fid_inter', '2']
    _run_two_workers([*common, '--total_iter', '2'])
    assert sorted(os.listdir(model_dir / 'training-checkpoints')) == [
        'checkpoint', 'ckpt-16.data-00000-of-00001', 'ckpt-16.index']
    outputs = _run_two_workers([*common, '--total_iter', '4'])
    assert all('at 16 images' in out for out, _ in outputs)
    assert os.path.exists(model_dir / 'training-checkpoints' / 'ckpt-32.index')
    assert len(glob.glob(str(model_dir / 'images' / 'samples-*.png'))) == 2
