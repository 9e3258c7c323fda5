"""tf.distribute: N replicas must compute what one device computes on the global batch."""
import os
import subprocess
import sys
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Logical devices must be configured before TensorFlow starts, hence a fresh process.
MIRRORED_VS_ONE_DEVICE = textwrap.dedent('''
    import sys
    import numpy as np
    import tensorflow as tf
    cpu = tf.config.list_physical_devices('CPU')[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    sys.path.insert(0, {root!r})
    import trainer, utils
    fixture = {fixture!r}
    conf = {{**utils.load_config(fixture), 'batch_size': 8}}
    path = fixture + '/training-checkpoints/ckpt-8'
    rng = np.random.default_rng(0)
    images = rng.uniform(-1, 1, (8, 32, 32, 3)).astype(np.float32)
    z_d, z_g = (rng.standard_normal((8, 32)).astype(np.float32) for _ in range(2))
    results = []
    for strategy in (None, tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])):
        gan = trainer.LadaGAN(conf, jit_compile=False, strategy=strategy)
        with gan.strategy.scope():
            utils.restore_checkpoint(path, **gan.checkpoint_objects())
        metrics = gan.train_step(images, z_d, z_g, augment=False)
        nets = (gan.discriminator, gan.generator, gan.ema_generator)
        results.append((metrics, [w.numpy() for net in nets for w in net.weights],
                        [w.path for net in nets for w in net.weights]))
    (m1, w1, names), (m2, w2, _) = results
    assert gan.n_replicas == 2
    for key in m1:
        assert abs(m1[key] - m2[key]) < 1e-5, (key, m1[key], m2[key])
    worst = max(zip((np.abs(a - b).max() for a, b in zip(w1, w2)), names))
    assert worst[0] < 1e-5, worst
    moving = [n for n in names if 'moving_mean' in n]
    assert moving, 'the discriminator has BatchNorm statistics to compare'
    print('OK', worst)
''')


def test_mirrored_step_on_two_devices_equals_one_device(fixture_dir):
    script = MIRRORED_VS_ONE_DEVICE.format(root=ROOT, fixture=fixture_dir)
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3'}
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=600, env=env)
    assert result.returncode == 0 and 'OK' in result.stdout, result.stderr[-3000:]
