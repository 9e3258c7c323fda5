"""One train step from the authors' checkpoint against an independent eager computation."""
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import config
import trainer

LR, B1, B2, EPS, EMA_DECAY, GP_WEIGHT = 2e-4, 0.5, 0.99, 1e-7, 0.999, 1e-4


def _adam_states(path, name, n_weights):
    reader = tf.train.load_checkpoint(path)
    key = lambda j: f'{name}/_variables/{j}/.ATTRIBUTES/VARIABLE_VALUE'
    step = reader.get_tensor(f'{name}/_iterations/.ATTRIBUTES/VARIABLE_VALUE')
    return int(step), [(reader.get_tensor(key(2 * i + 1)), reader.get_tensor(key(2 * i + 2)))
                       for i in range(n_weights)]


def _adam_update(weights, grads, states, step):
    """Adam as written in Kingma & Ba with Keras' epsilon placement."""
    t = step + 1
    alpha = LR * np.sqrt(1 - B2 ** t) / (1 - B1 ** t)
    for w, g, (m, v) in zip(weights, grads, states):
        g = g.numpy()
        m = B1 * m + (1 - B1) * g
        v = B2 * v + (1 - B2) * g * g
        w.assign(w.numpy() - alpha * m / (np.sqrt(v) + EPS))


def _softplus(x):
    return tf.math.log1p(tf.exp(-tf.abs(x))) + tf.maximum(x, 0.0)


def _reference_step(fixture_dir, path, images, z_d, z_g, gp_weight=GP_WEIGHT, d_step=None):
    """The authors' step from the checkpoint at `path`; d_step replaces the D optimizer's
    update count (Adam's bias correction)."""
    g = checkpoints.load_generator(fixture_dir, ema=False, checkpoint_path=path)
    ema = checkpoints.load_generator(fixture_dir, ema=True, checkpoint_path=path)
    d = checkpoints.load_discriminator(fixture_dir, checkpoint_path=path)
    saved_d_step, d_states = _adam_states(path, 'd_optimizer', len(d.trainable_weights))
    d_step = saved_d_step if d_step is None else d_step
    g_step, g_states = _adam_states(path, 'g_optimizer', len(g.trainable_weights))
    images = tf.constant(images)

    fake = g(z_d, training=True)[0]
    with tf.GradientTape() as d_tape:
        fake_logits = d(fake, training=True)
        with tf.GradientTape() as r1_tape:
            r1_tape.watch(images)
            real_logits = d(images, training=True)
            logit_sum = tf.reduce_sum(real_logits)
        r1_grads = r1_tape.gradient(logit_sum, images)
        gp = gp_weight * tf.reduce_mean(tf.reduce_sum(tf.square(r1_grads), axis=[1, 2, 3]))
        d_loss = tf.reduce_mean(_softplus(-real_logits)) + tf.reduce_mean(_softplus(fake_logits))
        d_total = d_loss + gp
    _adam_update(d.trainable_weights, d_tape.gradient(d_total, d.trainable_weights),
                 d_states, d_step)

    with tf.GradientTape() as g_tape:
        g_logits = d(g(z_g, training=True)[0], training=True)
        g_loss = tf.reduce_mean(_softplus(-g_logits))
    _adam_update(g.trainable_weights, g_tape.gradient(g_loss, g.trainable_weights),
                 g_states, g_step)
    for e, w in zip(ema.weights, g.weights):
        e.assign(EMA_DECAY * e.numpy() + (1 - EMA_DECAY) * w.numpy())
    metrics = {'d_loss': d_loss, 'gp': gp, 'd_total': d_total, 'cr': 0.0, 'g_loss': g_loss,
               'real_acc': tf.reduce_mean(real_logits), 'fake_acc': tf.reduce_mean(g_logits)}
    return g, ema, d, {k: float(v) for k, v in metrics.items()}


def test_replayed_step_matches_an_independent_computation(fixture_dir, reference):
    path = os.path.join(fixture_dir, 'training-checkpoints', 'ckpt-8')
    gan = trainer.LadaGAN(config.load_run_config(fixture_dir))
    checkpoints.restore_checkpoint(path, **gan.checkpoint_objects())
    assert int(gan.n_images.numpy()) == 8 and int(gan.g_optimizer.iterations.numpy()) == 2
    rng = np.random.default_rng(0)
    images = reference['train_images'][1]
    z_d, z_g = (rng.standard_normal((4, 32)).astype(np.float32) for _ in range(2))

    metrics = gan.train_step(images, noise_d=z_d, noise_g=z_g, augment=False)
    g, ema, d, expected = _reference_step(fixture_dir, path, images, z_d, z_g)

    assert metrics.keys() == expected.keys()
    for name in expected:
        assert metrics[name] == pytest.approx(expected[name], abs=1e-5), name
    for ours, theirs in ((gan.generator, g), (gan.ema_generator, ema), (gan.discriminator, d)):
        assert len(ours.weights) == len(theirs.weights)
        for a, b in zip(ours.weights, theirs.weights):
            np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5, rtol=0, err_msg=a.path)
    # The step really moved the weights (not a no-op matched by a no-op).
    before = checkpoints.load_discriminator(fixture_dir, checkpoint_path=path)
    assert np.abs(before.weights[0].numpy() - gan.discriminator.weights[0].numpy()).max() > 1e-6
    assert int(gan.g_optimizer.iterations.numpy()) == 3


def test_ema_starts_as_a_copy_by_default_and_random_on_request(fixture_dir):
    conf = config.load_run_config(fixture_dir)
    copied = trainer.LadaGAN(conf)
    for e, w in zip(copied.ema_generator.weights, copied.generator.weights):
        np.testing.assert_array_equal(e.numpy(), w.numpy())
    authors = trainer.LadaGAN({**conf, 'ema_init': 'random'})
    differing = [np.abs(e.numpy() - w.numpy()).max() > 0
                 for e, w in zip(authors.ema_generator.weights, authors.generator.weights)]
    assert sum(differing) > len(differing) // 2


# tf.train.ExponentialMovingAverage's ramp: after n G updates the decay is
# min(ema_decay, (1 + n) / (10 + n)); without the warm-up it is ema_decay from the start.
@pytest.mark.parametrize('ema_warmup, g_updates, decay', [
    (True, 3, 4 / 13), (True, 100_000, EMA_DECAY), (False, 3, EMA_DECAY)])
def test_ema_update_follows_the_warm_up_ramp(fixture_dir, ema_warmup, g_updates, decay):
    gan = trainer.LadaGAN({**config.load_run_config(fixture_dir), 'ema_warmup': ema_warmup})
    gan.g_optimizer.iterations.assign(g_updates)
    rng = np.random.default_rng(3)
    for e, w in zip(gan.ema_generator.weights, gan.generator.weights):
        e.assign(rng.standard_normal(e.shape))
        w.assign(rng.standard_normal(w.shape))
    before = [(e.numpy(), w.numpy()) for e, w in
              zip(gan.ema_generator.weights, gan.generator.weights)]
    tf.function(gan._update_ema, jit_compile=True)()
    for ema_weight, (e, w) in zip(gan.ema_generator.weights, before):
        np.testing.assert_allclose(ema_weight.numpy(), decay * e + (1 - decay) * w,
                                   atol=1e-6, err_msg=ema_weight.path)


@pytest.mark.parametrize('loss', ['nsl', 'hinge'])
def test_losses(loss):
    real, fake = tf.constant([[1.0, -2.0]]), tf.constant([[0.5, 3.0]])
    d_fn, g_fn = trainer.LOSSES[loss]
    if loss == 'nsl':
        sp = lambda x: np.log1p(np.exp(x))
        assert float(d_fn(real, fake)) == pytest.approx(
            np.mean(sp(-real.numpy())) + np.mean(sp(fake.numpy())), rel=1e-6)
        assert float(g_fn(fake)) == pytest.approx(np.mean(sp(-fake.numpy())), rel=1e-6)
    else:
        assert float(d_fn(real, fake)) == pytest.approx((0 + 3) / 2 + (1.5 + 4) / 2)
        assert float(g_fn(fake)) == pytest.approx(-1.75)


@pytest.mark.slow  # ~35 s of XLA compile; bCR's value is checked by its definition below
def test_conv_decoder_step_with_bcr_compiles_with_xla():
    """The authors' conv decoder (FFHQ) could not run under XLA; ours must, with FFHQ's bCR."""
    import config
    conf = config.get_config(
        img_size=64, batch_size=2, noise_dim=8, g_dim=[32, 16, 8], g_heads=[2, 2, 2],
        g_mlp=[16, 16, 16], dec_dim=[8], d_enc_dim=[8, 8, 16], d_out_dim=[16, 16], d_heads=2,
        d_mlp=16, bcr=True, policy='color,translation,cutout')
    gan = trainer.LadaGAN(conf, jit_compile=True)
    images = np.random.default_rng(5).uniform(-1, 1, (2, 64, 64, 3)).astype(np.float32)
    metrics = gan.train_step(images)
    assert np.isfinite(list(metrics.values())).all() and metrics['cr'] > 0
    assert metrics['d_total'] == pytest.approx(
        metrics['d_loss'] + metrics['gp'] + metrics['cr'], rel=1e-5)
    bn = [w for w in gan.ema_generator.weights if 'moving_mean' in w.name]
    assert bn and float(np.abs(bn[0].numpy()).max()) > 0  # decoder BN statistics reach the EMA


def test_diffaugment_without_bcr_changes_the_d_and_g_losses():
    """Without bCR the step augments reals (R1 on them) and fakes: from the same weights
    and noise, augment=True must give other losses than augment=False, which repeats."""
    import keras

    import config
    conf = config.get_config('tiny', batch_size=4, policy='color,translation')
    rng = np.random.default_rng(6)
    images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
    z_d, z_g = (rng.standard_normal((4, conf['noise_dim'])).astype(np.float32) for _ in range(2))
    runs = []
    for augment in (False, False, True):
        keras.utils.set_random_seed(0)
        gan = trainer.LadaGAN(conf, jit_compile=False)
        runs.append(gan.train_step(images, z_d, z_g, augment=augment))
    plain, repeated, augmented = runs
    for name in ('d_loss', 'gp', 'g_loss'):
        assert repeated[name] == pytest.approx(plain[name], rel=1e-5)
        assert augmented[name] != pytest.approx(plain[name], rel=1e-3)


# --- lazy R1 and several steps per call (one XLA-compiled model shared) ---------------------

CKPT = ('training-checkpoints', 'ckpt-8')


@pytest.fixture(scope='module')
def lazy_gan(fixture_dir):
    """The fixture model with R1 on every 4th D update, compiled once for these tests."""
    return trainer.LadaGAN({**config.load_run_config(fixture_dir), 'r1_interval': 4})


def _restore(gan, fixture_dir, d_updates=None):
    checkpoints.restore_checkpoint(os.path.join(fixture_dir, *CKPT), **gan.checkpoint_objects())
    if d_updates is not None:
        gan.d_optimizer.iterations.assign(d_updates)
    gan.read_metrics()  # empties the device sums


def _all_weights(gan):
    return [w.numpy() for net in (gan.generator, gan.ema_generator, gan.discriminator)
            for w in net.weights]


@pytest.mark.parametrize('d_updates, gp_weight', [(4, 4 * GP_WEIGHT), (5, 0.0)])
def test_lazy_r1_step_matches_an_independent_computation(lazy_gan, fixture_dir, reference,
                                                         d_updates, gp_weight):
    """After 4 D updates the step carries R1 with 4x its weight; after 5, no R1 at all."""
    _restore(lazy_gan, fixture_dir, d_updates)
    rng = np.random.default_rng(1)
    images = reference['train_images'][1]
    z_d, z_g = (rng.standard_normal((4, 32)).astype(np.float32) for _ in range(2))
    metrics = lazy_gan.train_step(images, noise_d=z_d, noise_g=z_g, augment=False)
    path = os.path.join(fixture_dir, *CKPT)
    g, ema, d, expected = _reference_step(fixture_dir, path, images, z_d, z_g,
                                          gp_weight=gp_weight, d_step=d_updates)
    for name in expected:
        assert metrics[name] == pytest.approx(expected[name], abs=1e-5), name
    theirs = [w.numpy() for net in (g, ema, d) for w in net.weights]
    for a, b in zip(_all_weights(lazy_gan), theirs):
        np.testing.assert_allclose(a, b, atol=1e-5, rtol=0)


def _direct_r1(discriminator, images):
    """mean_b sum_pixels (d sum_25 D(x) / dx)^2, D's BatchNorm statistics left as found."""
    saved = [w.numpy() for w in discriminator.non_trainable_weights]
    images = tf.constant(images)
    with tf.GradientTape() as tape:
        tape.watch(images)
        total = tf.reduce_sum(discriminator(images, training=True))
    grads = tape.gradient(total, images).numpy()
    for w, value in zip(discriminator.non_trainable_weights, saved):
        w.assign(value)
    return float(np.mean(np.sum(grads.astype(np.float64) ** 2, axis=(1, 2, 3))))


def test_r1_falls_on_every_fourth_d_update_with_four_times_its_weight(lazy_gan, fixture_dir):
    _restore(lazy_gan, fixture_dir, d_updates=0)
    rng = np.random.default_rng(2)
    for step in range(9):
        images = rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32)
        expected = 4 * GP_WEIGHT * _direct_r1(lazy_gan.discriminator, images)
        metrics = lazy_gan.train_step(images, augment=False)
        if step % 4 == 0:
            assert metrics['gp'] == pytest.approx(expected, rel=1e-4) and expected > 0, step
        else:
            assert metrics['gp'] == 0.0, step
        assert metrics['d_total'] == pytest.approx(metrics['d_loss'] + metrics['gp'], abs=1e-6)
    # The R1 part, the real images' augmentation and the plain step: each traced (and
    # XLA-compiled) once.
    for part in ('r1', 'real', 'given_r1'):
        assert lazy_gan._step_functions[(part, False)].experimental_get_tracing_count() == 1


def test_four_steps_in_one_call_equal_four_single_steps(lazy_gan, fixture_dir):
    """From 2 D updates, the 4 steps cross the R1 step (the 3rd): both branches in the loop."""
    rng = np.random.default_rng(3)
    images = rng.uniform(-1, 1, (4, 4, 32, 32, 3)).astype(np.float32)
    z_d, z_g = (rng.standard_normal((4, 4, 32)).astype(np.float32) for _ in range(2))
    _restore(lazy_gan, fixture_dir, d_updates=2)
    singles = [lazy_gan.train_step(images[i], z_d[i], z_g[i], augment=False) for i in range(4)]
    single_weights, (single_means, _) = _all_weights(lazy_gan), lazy_gan.read_metrics()
    assert [m['gp'] > 0 for m in singles] == [False, False, True, False]
    _restore(lazy_gan, fixture_dir, d_updates=2)
    assert lazy_gan.run_steps(images, z_d, z_g, augment=False, steps=4) is None
    means, count = lazy_gan.read_metrics()
    assert count == 4 and lazy_gan.read_metrics() == ({k: 0.0 for k in means}, 0)
    for name in trainer.METRIC_NAMES:
        python_mean = np.mean([m[name] for m in singles])
        assert single_means[name] == pytest.approx(python_mean, abs=1e-6), name
        assert means[name] == pytest.approx(python_mean, abs=1e-6), name
    for a, b in zip(_all_weights(lazy_gan), single_weights):
        np.testing.assert_allclose(a, b, atol=1e-6, rtol=0)
    assert int(lazy_gan.d_optimizer.iterations.numpy()) == 6


def test_bcr_term_of_a_d_step_matches_its_definition(monkeypatch):
    """SPEC §5: cr = cr_weight * [MSE(D(x), D(T(x))) + MSE(D(G(z)), D(T(G(z))))], the MSE
    over the 25 logits then the batch; D(x) and D(G(z)) are separate D calls, T(x) and
    T(G(z)) one concatenated call (D's BatchNorm uses each call's batch statistics). T is
    drawn here by fixed seeds: the step's first augmentation is the reals', the second
    the fakes'."""
    import diffaug
    import keras
    conf = config.get_config('tiny', batch_size=4, bcr=True, cr_weight=0.3,
                             policy='color,translation,cutout')
    augment, calls = diffaug.diff_augment, []

    def fixed_draws(x, policy, seed=None):  # reals: seed (7, 0), fakes: seed (7, 1)
        calls.append(policy)
        return augment(x, policy, seed=tf.constant([7, (len(calls) - 1) % 2]))

    monkeypatch.setattr(diffaug, 'diff_augment', fixed_draws)
    keras.utils.set_random_seed(0)
    gan = trainer.LadaGAN(conf, jit_compile=False)
    rng = np.random.default_rng(3)
    x = tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)).astype(np.float32))
    z_d, z_g = (rng.standard_normal((4, conf['noise_dim'])).astype(np.float32) for _ in range(2))

    # The formula, on the weights before the step (the D update comes after its loss).
    d = lambda images: gan.discriminator(images, training=True).numpy().reshape(
        len(images), -1)
    fake = gan.generator(z_d, training=True)[0]
    t_x, t_fake = (augment(v, conf['policy'], seed=tf.constant([7, i]))
                   for i, v in enumerate((x, fake)))
    d_t_x, d_t_fake = np.split(d(tf.concat([t_x, t_fake], axis=0)), 2)
    assert d(x).shape == (4, 25)
    mse = lambda a, b: np.mean(np.mean((a - b) ** 2, axis=1))
    real_term, fake_term = mse(d(x), d_t_x), mse(d(fake), d_t_fake)
    expected = 0.3 * (real_term + fake_term)
    # Non-trivial, and other pairings or weights would give other values.
    wrong = [0.3 * (mse(d(x), d_t_fake) + mse(d(fake), d_t_x)), 0.1 * (real_term + fake_term),
             0.3 * 2 * real_term, 0.3 * 2 * fake_term]
    assert expected > 1e-4 and all(abs(w - expected) > 0.05 * expected for w in wrong)

    metrics = gan.train_step(x, z_d, z_g)
    assert len(calls) == 2  # the D step's two augmentations; with bCR the G step has none
    assert metrics['cr'] == pytest.approx(expected, rel=1e-4)


NO_LATER_COMPILE = """
import sys
import numpy as np
sys.path.insert(0, {root!r})
import config, trainer
gan = trainer.LadaGAN({{**config.load_run_config({fixture!r}), 'r1_interval': 2}})
images = np.random.default_rng(0).uniform(-1, 1, ({steps}, 4, 32, 32, 3)).astype(np.float32)
for call in range(4 // {steps}):
    gan.run_steps(images[0] if {steps} == 1 else images, steps={steps})
    print(f'CALL {{call}}', file=sys.stderr, flush=True)
"""


@pytest.mark.parametrize('steps', [1, pytest.param(2, marks=pytest.mark.slow)])
def test_lazy_r1_compiles_every_step_function_at_the_first_call(fixture_dir, steps):
    """Lazy R1 (one step per call, or two): XLA's compile log, a line per executable it
    compiles, has lines only before the first call returns, at least the R1 part's, the
    real images' augmentation's and the plain step's; none in the later calls, whose steps
    take both branches."""
    script = NO_LATER_COMPILE.format(root=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__))), fixture=fixture_dir, steps=steps)
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '0', 'TF_CPP_VMODULE': 'device_compiler=1'}
    result = subprocess.run([sys.executable, '-c', script], capture_output=True, text=True,
                            timeout=900, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = [line for line in result.stderr.splitlines()
             if line.startswith('CALL') or 'Compilation of XLA executable' in line]
    first_return = lines.index('CALL 0')
    assert first_return >= 3 and len(lines) == first_return + 4 // steps, lines
