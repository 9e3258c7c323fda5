"""Class-conditional LadaGAN and spectral normalisation, checked against numpy computations
written here from their definitions (projection discriminator, conditioned modulation,
power iteration), and the conditional train step."""
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

import checkpoints
import config
import ladaformer
import model
import trainer
from test_precision_accum import _weights

TINY = dict(batch_size=8, n_classes=3)


def _np_layer_norm(x, eps=ladaformer.LN_EPSILON):
    mean = x.mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(x.var(-1, keepdims=True) + eps)


def _np_conv_valid(x, kernel):
    """(B, H, W, C) * (k, k, C, F) 'valid' convolution (cross-correlation, as Keras)."""
    k = kernel.shape[0]
    out_h, out_w = x.shape[1] - k + 1, x.shape[2] - k + 1
    out = np.zeros((x.shape[0], out_h, out_w, kernel.shape[-1]))
    for i in range(out_h):
        for j in range(out_w):
            out[:, i, j] = np.einsum('bhwc,hwcf->bf', x[:, i:i + k, j:j + k], kernel)
    return out


def _conditional_d_features(d, images):
    """(B, 8, 8, out_dim[1]): the features the projection reads, by the D's own layers."""
    x = d.inp_conv(images)
    for block in d.encoder:
        x = block(x)
    x, _ = d.block_8(d.pos_emb_8(tf.reshape(x, [len(images), 256, -1])))
    x = tf.nn.space_to_depth(tf.reshape(x, [len(images), 16, 16, -1]), 2)
    conv_1x1, activation, _ = d.down_4.layers
    return activation(conv_1x1(d.conv_4(x))).numpy().astype(np.float64)


def test_projection_discriminator_matches_a_numpy_computation():
    conf = config.get_config('tiny', **TINY)
    d = model.build_discriminator(conf)
    rng = np.random.default_rng(0)
    images = tf.constant(rng.uniform(-1, 1, (4, 32, 32, 3)), tf.float32)
    labels = np.array([0, 2, 1, 2], np.int32)
    logits = d((images, tf.constant(labels))).numpy()

    h = _conditional_d_features(d, images)
    final_kernel = d.down_4.layers[2].kernel.numpy().astype(np.float64)  # (4, 4, C, 1)
    table = d.class_embedding.embeddings.numpy().astype(np.float64)
    unconditional = _np_conv_valid(h, final_kernel)[..., 0]  # (B, 5, 5)
    projection = np.zeros((4, 5, 5))
    for b in range(4):
        for i in range(5):
            for j in range(5):
                projection[b, i, j] = h[b, i:i + 4, j:j + 4].sum((0, 1)) @ table[labels[b]]
    expected = (unconditional + projection).reshape(4, 25)
    assert np.abs(projection).max() > 1e-3  # the class term is there
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_generator_modulation_reads_noise_and_class_embedding():
    """Every self-modulated LayerNorm gets [z, e(label)] and computes LN(x) gamma + beta."""
    conf = config.get_config('tiny', **TINY)
    g = model.build_generator(conf)
    rng = np.random.default_rng(1)
    z = rng.standard_normal((3, conf['noise_dim'])).astype(np.float32)
    labels = np.array([2, 0, 1], np.int32)
    seen = []
    norm = g.block_16.norm1
    original = norm.call
    norm.call = lambda x, style: seen.append((x.numpy(), style.numpy())) or original(x, style)
    try:
        g((tf.constant(z), tf.constant(labels)))
    finally:
        norm.call = original
    (x, style), = seen
    table = g.class_embedding.embeddings.numpy()
    np.testing.assert_allclose(style, np.concatenate([z, table[labels]], axis=1), atol=1e-6)

    weights = lambda dense: (dense.kernel.numpy().astype(np.float64),  # noqa: E731
                             dense.bias.numpy().astype(np.float64))
    (wh, bh), (wg, bg), (wb, bb) = map(weights, (norm.h, norm.gamma, norm.beta))
    hidden = np.maximum(style @ wh + bh, 0)
    expected = (_np_layer_norm(x.astype(np.float64)) * (hidden @ wg + bg)[:, None]
                + (hidden @ wb + bb)[:, None])
    np.testing.assert_allclose(norm(tf.constant(x), tf.constant(style)).numpy(), expected,
                               rtol=1e-4, atol=1e-4)


def test_one_noise_gives_different_images_per_class_and_the_same_for_the_same_class():
    g = model.build_generator(config.get_config('tiny', **TINY))
    z = tf.constant(np.tile(np.random.default_rng(2).standard_normal((1, 64)), [3, 1]),
                    tf.float32)
    images = g((z, tf.constant([0, 1, 0])))[0].numpy()
    assert np.abs(images[0] - images[1]).mean() > 1e-3
    np.testing.assert_allclose(images[0], images[2], atol=1e-6)


def test_models_refuse_the_wrong_kind_of_input():
    g = model.build_generator(config.get_config('tiny', **TINY))
    with pytest.raises(ValueError, match='conditional'):
        g(tf.zeros([2, 64]))
    d = model.build_discriminator(config.get_config('tiny'))
    with pytest.raises(ValueError, match='unconditional'):
        d((tf.zeros([2, 32, 32, 3]), tf.zeros([2], tf.int32)))


@pytest.mark.parametrize('attention', config.ATTENTIONS)
def test_every_attention_builds_conditional_and_spectrally_normalised(attention):
    conf = config.get_config('tiny', g_attention=attention, d_attention=attention,
                             spectral_norm='both', n_latents=4, latent_dim=8, **TINY)
    g, d = model.build_generator(conf), model.build_discriminator(conf)
    images, _ = g((tf.random.normal([2, 64]), tf.constant([0, 2])), training=True)
    logits = d((images, tf.constant([1, 2])), training=True)
    assert logits.shape == (2, 25) and np.isfinite(logits.numpy()).all()


# --- spectral normalisation -------------------------------------------------------------

def _np_power_iteration(w, u):
    """Miyato et al.'s one step, W as (fan_in, units): v = W u / |.|, u' = W^T v / |.|."""
    v = w @ u / np.linalg.norm(w @ u)
    u_new = w.T @ v / np.linalg.norm(w.T @ v)
    return v, u_new, v @ w @ u_new


def test_spectral_norm_dense_divides_by_sigma_and_updates_u_only_in_training():
    layer = ladaformer.SpectralNormDense(5)
    layer.build((None, 7))
    rng = np.random.default_rng(3)
    x = rng.standard_normal((4, 7)).astype(np.float32)
    w = layer.kernel.numpy().astype(np.float64)
    b = rng.standard_normal(5).astype(np.float32)
    layer.bias.assign(b)
    u0 = layer.spectral_u.numpy()[0].astype(np.float64)
    _, u1, sigma = _np_power_iteration(w, u0)

    out = layer(tf.constant(x), training=False).numpy()
    np.testing.assert_allclose(out, x @ (w / sigma) + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_array_equal(layer.spectral_u.numpy()[0], u0.astype(np.float32))
    out = layer(tf.constant(x), training=True).numpy()
    np.testing.assert_allclose(out, x @ (w / sigma) + b, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.spectral_u.numpy()[0], u1, atol=1e-6)


def test_spectral_norm_gradient_flows_through_sigma():
    """d/dW sum(G * x W/sigma) with u, v constant: x^T G / sigma - <x^T G, W> v u'^T / sigma^2."""
    layer = ladaformer.SpectralNormDense(4, use_bias=False)
    layer.build((None, 6))
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 6)).astype(np.float32)
    upstream = rng.standard_normal((3, 4)).astype(np.float32)
    w = layer.kernel.numpy().astype(np.float64)
    v, u1, sigma = _np_power_iteration(w, layer.spectral_u.numpy()[0].astype(np.float64))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum(layer(tf.constant(x), training=True) * upstream)
    grad = tape.gradient(loss, layer.kernel).numpy()
    outer = x.T.astype(np.float64) @ upstream
    expected = outer / sigma - (outer * w).sum() * np.outer(v, u1) / sigma ** 2
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-5)


def test_spectral_norm_converges_to_the_largest_singular_value():
    conv = ladaformer.SpectralNormConv2D(6, 3, padding='same')
    conv.build((None, 8, 8, 4))
    x = tf.random.normal([2, 8, 8, 4])
    for _ in range(60):
        conv(x, training=True)
    w = conv.kernel.numpy().reshape(-1, 6).astype(np.float64)
    sigma_max = np.linalg.svd(w, compute_uv=False)[0]
    expected = tf.nn.conv2d(x, conv.kernel / np.float32(sigma_max), 1, "SAME") + conv.bias
    np.testing.assert_allclose(conv(x, training=False).numpy(), expected.numpy(),
                               rtol=1e-3, atol=1e-4)


def test_spectral_norm_embedding_gathers_normalised_rows():
    layer = ladaformer.SpectralNormEmbedding(3, 5)
    layer.build()
    table = layer.embeddings.numpy().astype(np.float64)
    _, _, sigma = _np_power_iteration(table, layer.spectral_u.numpy()[0].astype(np.float64))
    out = layer(tf.constant([2, 0]), training=False).numpy()
    np.testing.assert_allclose(out, table[[2, 0]] / sigma, rtol=1e-5)


def test_spectral_norm_applies_to_the_networks_the_config_names():
    def normalised(net):
        return {type(layer).__name__.startswith('SpectralNorm') for layer in net._flatten_layers()
                if isinstance(layer, (tf.keras.layers.Dense, tf.keras.layers.Conv2D))}
    for name in config.SPECTRAL_NORMS:  # every listed value builds, normalising what it says
        conf = config.get_config('tiny', spectral_norm=name)
        assert normalised(model.build_generator(conf)) == {name in ('g', 'both')}, name
        assert normalised(model.build_discriminator(conf)) == {name in ('d', 'both')}, name


# --- training -----------------------------------------------------------------------------

def _labelled_batch(n=8, seed=0):
    rng = np.random.default_rng(seed)
    return (tf.constant(rng.uniform(-1, 1, (n, 32, 32, 3)), tf.float32),
            tf.constant(rng.integers(0, 3, n), tf.int32))


def test_fake_labels_follow_the_class_frequencies():
    gan = trainer.LadaGAN(config.get_config('tiny', **TINY), class_counts=[0, 3, 1])
    z, labels = gan.sample_noise(4000)
    counts = np.bincount(labels.numpy(), minlength=3)
    assert z.shape == (4000, 64) and counts[0] == 0
    assert abs(counts[1] / 4000 - 0.75) < 0.03


def test_conditional_step_computes_r1_on_the_reals_with_their_labels():
    """The step's gp equals gp_weight * mean |d sum D(x, y) / dx|^2, written out here, and
    depends on the labels (R1 on every step: the tiny preset's lazy R1 would weigh it x16)."""
    conf = config.get_config('tiny', policy='', r1_interval=1, **TINY)
    gan = trainer.LadaGAN(conf, jit_compile=False)
    images, labels = _labelled_batch()
    weights = [w.numpy() for w in gan.discriminator.weights]

    def direct_gp(batch_labels):
        with tf.GradientTape() as tape:
            tape.watch(images)
            summed = tf.reduce_sum(gan.discriminator((images, batch_labels), training=True))
        grads = tape.gradient(summed, images).numpy().reshape(8, -1).astype(np.float64)
        for w, value in zip(gan.discriminator.weights, weights):  # BN statistics back
            w.assign(value)
        return conf['gp_weight'] * (grads ** 2).sum(1).mean()

    expected = direct_gp(labels)
    assert abs(direct_gp(tf.constant([0] * 8)) - expected) > 1e-3 * expected
    noise = gan.sample_noise(8)
    metrics = gan.train_step((images, labels), noise_d=noise, noise_g=noise, augment=False)
    np.testing.assert_allclose(metrics['gp'], expected, rtol=1e-4)


def _fresh_gan(conf, **kwargs):
    tf.keras.utils.set_random_seed(5)
    return trainer.LadaGAN(conf, jit_compile=False, **kwargs)


@pytest.mark.slow  # ~30 s; accumulation's equality is in test_precision_accum.py's default tests
def test_conditional_micro_batches_carry_their_own_labels():
    """grad_accum splits the labels with their images: the halves are the same images with
    other labels, so every BatchNorm sees the whole batch's statistics in each half, and
    two micro-batches must give the one-batch step (a half paired with the other half's
    labels would not: the projection reads them). No R1: its double backprop through
    BatchNorm couples the samples of a batch, so halves with other labels change it."""
    conf = config.get_config('tiny', policy='', gp_weight=0.0, **TINY)
    images, labels = _labelled_batch(n=4)
    rng = np.random.default_rng(1)
    z = tf.constant(rng.standard_normal((4, conf['noise_dim'])), tf.float32)
    fake_labels = tf.constant(rng.integers(0, 3, 4), tf.int32)
    twice = lambda t: tf.concat([t, t], 0)  # noqa: E731
    batch = (twice(images), tf.concat([labels, (labels + 1) % 3], 0))
    noise = (twice(z), twice(fake_labels))
    one = _fresh_gan(conf)
    accumulated = _fresh_gan(conf, grad_accum=2)
    m1 = one.train_step(batch, noise, noise, augment=False)
    m2 = accumulated.train_step(batch, noise, noise, augment=False)
    for name in m1:
        assert m2[name] == pytest.approx(m1[name], rel=1e-5, abs=1e-5), name
    # Adam's first step is about lr * g / |g|: where g is near 0, float rounding of g tips
    # it, so a few weights of the thousands may differ by more than 1e-5.
    for a, b in zip(_weights(one, moving_stats=False),
                    _weights(accumulated, moving_stats=False)):
        assert (np.abs(a - b) > 1e-5).sum() <= 2, np.abs(a - b).max()


def test_a_class_drawn_twice_gets_adams_update_of_its_summed_gradient():
    """An embedding's gradient has a row per lookup; Adam must see each class's summed
    gradient (numpy Adam below, Keras' formula), not square the rows one by one."""
    gan = trainer.LadaGAN(config.get_config('tiny', **TINY), jit_compile=False)
    table = tf.Variable(np.zeros((3, 2), np.float32))
    lookups = tf.constant([0, 0, 1])  # class 0 twice
    weights = tf.constant([[1., 2.], [3., 4.], [5., 6.]])

    def grads_fn(batch, augment, optimizer):
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(tf.gather(table, batch) * weights)
        return tape.gradient(loss, [table]), {'loss': loss}

    net = types.SimpleNamespace(trainable_weights=[table])
    lr, beta1, beta2, eps = 0.1, 0.9, 0.999, 1e-7
    optimizer = keras.optimizers.Adam(lr, beta1, beta2, eps)
    gradient = np.array([[1 + 3, 2 + 4], [5, 6], [0, 0]], np.float64)
    expected, m, v = np.zeros((3, 2)), np.zeros((3, 2)), np.zeros((3, 2))
    for t in (1, 2, 3):
        gan._accumulated_update(grads_fn, net, optimizer, (lookups,), augment=False)
        m = beta1 * m + (1 - beta1) * gradient
        v = beta2 * v + (1 - beta2) * gradient ** 2
        expected -= lr * np.sqrt(1 - beta2 ** t) / (1 - beta1 ** t) * m / (np.sqrt(v) + eps)
        np.testing.assert_allclose(table.numpy(), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # ~40 s; bf16 against fp32 is in test_precision_accum.py's default tests
def test_conditional_bf16_step_is_close_to_fp32():
    conf = config.get_config('tiny', policy='', spectral_norm='both', **TINY)
    batch = _labelled_batch()
    noise = _fresh_gan(conf).sample_noise(8)
    fp32 = _fresh_gan(conf).train_step(batch, noise, noise, augment=False)
    gan = _fresh_gan(conf, precision='bf16')
    bf16 = gan.train_step(batch, noise, noise, augment=False)
    assert gan.discriminator.class_embedding.compute_dtype == 'bfloat16'
    assert all(w.dtype == 'float32' for w in gan.generator.weights + gan.discriminator.weights)
    for name in ('d_loss', 'g_loss'):
        assert bf16[name] == pytest.approx(fp32[name], rel=0.05), name


@pytest.mark.slow  # ~40 s; the unconditional equality is in the default suite (test_trainer)
def test_conditional_steps_per_call_equal_single_steps():
    """Two steps in one call give what two plain steps give (labels stacked with images)."""
    conf = config.get_config('tiny', policy='', spectral_norm='both', **TINY)
    batches = [_labelled_batch(seed=s) for s in (0, 1)]
    results = []
    for stacked in (False, True):
        gan = _fresh_gan(conf)
        gan.noise_rng.reset_from_seed(5)
        noise = [gan.sample_noise(8) for _ in batches]
        initial = [w.numpy() for w in gan.discriminator.weights]
        if stacked:
            stack = lambda parts: tf.nest.map_structure(lambda *t: tf.stack(t), *parts)  # noqa: E731
            gan.run_steps(stack(batches), stack(noise), stack(noise), augment=False, steps=2)
        else:
            for batch, z in zip(batches, noise):
                gan.run_steps(batch, z, z, augment=False)
        results.append([w.numpy() for w in gan.discriminator.weights + gan.generator.weights])
    assert max(np.abs(a - b).max() for a, b in zip(results[0], initial)) > 1e-3  # trained
    for w_single, w_stacked in zip(*results):  # a TF graph (no XLA): float rounding apart
        np.testing.assert_allclose(w_stacked, w_single, atol=2e-5)


def test_spectral_norm_state_and_class_embeddings_survive_a_checkpoint(tmp_path):
    conf = config.get_config('tiny', spectral_norm='both', **TINY)
    gan = trainer.LadaGAN(conf, jit_compile=False)
    rng = np.random.default_rng(7)
    for w in gan.discriminator.weights + gan.ema_generator.weights:  # values no init gives
        w.assign(rng.standard_normal(w.shape).astype(np.float32) * 0.1)
    path = checkpoints.make_checkpoint(**gan.checkpoint_objects()).save(str(tmp_path / 'ckpt'))
    saved = checkpoints.checkpoint_variables(gan.discriminator)
    assert any(k.endswith('spectral_u') for k in saved) and 'class_embedding/embeddings' in saved

    restored = trainer.LadaGAN(conf, jit_compile=False)
    checkpoints.restore_checkpoint(path, **restored.checkpoint_objects())
    for name, variable in checkpoints.checkpoint_variables(restored.discriminator).items():
        np.testing.assert_array_equal(variable.numpy(), saved[name].numpy(), err_msg=name)
    images, labels = _labelled_batch()
    np.testing.assert_array_equal(
        restored.ema_generator((tf.zeros([2, 64]), labels[:2]))[0].numpy(),
        gan.ema_generator((tf.zeros([2, 64]), labels[:2]))[0].numpy())


def test_sagan_preset_is_sagans_recipe():
    c = config.get_config('sagan')
    assert (c['g_attention'], c['d_attention'], c['spectral_norm'], c['loss']) == (
        'dot', 'dot', 'both', 'hinge')
    assert (c['g_lr'], c['d_lr'], c['g_beta1'], c['g_beta2'], c['d_beta1'], c['d_beta2']) == (
        1e-4, 4e-4, 0.0, 0.9, 0.0, 0.9)
    assert c['n_classes'] == 10 and c['gp_weight'] == 0 and c['policy'] == ''
