"""Ladaformer building blocks: linear additive attention and the Transformer blocks.

Every layer computes exactly what the authors' TensorFlow code computes, quirks included
(SPEC §10): the attention logits come from one Dense over the whole projected query, the
generator block has no residual around its MLP, and the self-modulated LayerNorm scales
by gamma(z) itself, not 1 + gamma(z).

Sub-layer attribute names (`wq`, `q_attn`, `norm1`, `mlp`, ...) are the names in the
authors' checkpoints; `checkpoints.checkpoint_variables` relies on them to read and write that format.

Baseline attentions of related systems can replace the additive one in both blocks
(config `g_attention` / `d_attention`, see `make_attention`), so that only the attention
differs: `dot` (SAGAN / ViT GANs), `l2` (GigaGAN), `simplex` and `duplex` (GANformer).
Spectral normalisation (Miyato et al. 2018): the Dense, Conv2D and Embedding layers that
the factories `dense`, `conv2d` and `embedding` make inside `with spectral_norm():` divide
their kernel by its largest singular value (see `_SpectralNorm`). Generator and
Discriminator open that scope when their config asks for it (config `spectral_norm`).

Every attention is called as `attn(x, z=None)` and returns `(out (B, N, D), map (B, heads, N))`;
each map is float32 and sums to 1 over the N tokens, so the same plots show all of them:

- lada: the attention vector of each head (softmax over the tokens);
- dot, l2: the attention each token receives, averaged over the N queries;
- simplex: the image-to-latent attention (softmax over the k latents) renormalised over the
  tokens for each latent, then averaged over the latents (each latent's share of the image);
- duplex: the latent-to-image attention of its latent update (softmax over the tokens),
  averaged over the k latents.
"""
import contextlib
import contextvars

import keras
import tensorflow as tf
from keras import layers

import config

KERNEL_INIT = 'orthogonal'  # every Dense/Conv/Embedding kernel in LadaGAN
LN_EPSILON = 1e-6
_SPECTRAL_NORM = contextvars.ContextVar('spectral_norm', default=False)


@contextlib.contextmanager
def spectral_norm(enabled=True):
    """Layers made by `dense`, `conv2d` and `embedding` inside are spectrally normalised."""
    token = _SPECTRAL_NORM.set(enabled)
    try:
        yield
    finally:
        _SPECTRAL_NORM.reset(token)


def dense(units, **kwargs):
    layer = SpectralNormDense if _SPECTRAL_NORM.get() else layers.Dense
    return layer(units, kernel_initializer=KERNEL_INIT, **kwargs)


def conv2d(filters, kernel_size, **kwargs):
    layer = SpectralNormConv2D if _SPECTRAL_NORM.get() else layers.Conv2D
    return layer(filters, kernel_size, kernel_initializer=KERNEL_INIT, **kwargs)


def embedding(n_rows, dim, **kwargs):
    layer = SpectralNormEmbedding if _SPECTRAL_NORM.get() else layers.Embedding
    return layer(n_rows, dim, embeddings_initializer=KERNEL_INIT, **kwargs)


class _SpectralNorm:
    """Mixin: the layer computes with W / sigma(W) in place of its kernel W.

    As torch.nn.utils.spectral_norm and Miyato et al.'s code: W is reshaped to
    (fan_in, units) (an Embedding's table to (rows, dim)); a persistent unit vector u
    (`spectral_u`, not trained, checkpointed) gives v = normalise(W u),
    u' = normalise(W^T v) and sigma = v^T W u' (one power iteration per call), with u and
    v held constant for the gradient, which flows through sigma. In training mode u' is
    stored; in inference the same iteration runs and nothing is stored. The variable W
    stays unnormalised (Keras' SpectralNormalization overwrites it and ignores sigma in
    the gradient). sigma is computed in float32 under mixed precision.

    Subclasses name their kernel (`_kernel_variable`) and how it meets the input
    (`_product`); bias and activation follow as in the layer they extend.
    """

    def build(self, input_shape=None):
        super().build(input_shape)
        self.spectral_u = self.add_weight(
            name='spectral_u', shape=(1, self._kernel_variable().shape[-1]), trainable=False,
            aggregation='mean', initializer=keras.initializers.RandomNormal(stddev=1.0),
            autocast=False)

    def call(self, inputs, training=None):
        x = self._product(inputs, self._normalized(
            tf.convert_to_tensor(self._kernel_variable()), training))
        if getattr(self, 'bias', None) is not None:
            x = x + self.bias
        activation = getattr(self, 'activation', None)
        return activation(x) if activation is not None else x

    def _kernel_variable(self):
        return self.kernel

    def _normalized(self, kernel, training):
        w = tf.cast(tf.reshape(kernel, [-1, kernel.shape[-1]]), tf.float32)
        u = tf.convert_to_tensor(self.spectral_u)
        v = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(u, w, transpose_b=True)))
        u = tf.stop_gradient(tf.math.l2_normalize(tf.matmul(v, w)))
        sigma = tf.reduce_sum(tf.matmul(v, w) * u)
        if training:
            self.spectral_u.assign(u)
        return kernel / tf.cast(sigma, kernel.dtype)


@keras.saving.register_keras_serializable(package='LadaGAN')
class SpectralNormDense(_SpectralNorm, layers.Dense):
    """Dense with a spectrally normalised kernel (`_SpectralNorm`)."""

    def _product(self, inputs, kernel):
        return tf.matmul(inputs, kernel)


@keras.saving.register_keras_serializable(package='LadaGAN')
class SpectralNormConv2D(_SpectralNorm, layers.Conv2D):
    """Conv2D with a spectrally normalised kernel (`_SpectralNorm`), channels last."""

    def _product(self, inputs, kernel):
        return self.convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package='LadaGAN')
class SpectralNormEmbedding(_SpectralNorm, layers.Embedding):
    """Embedding with a spectrally normalised table (`_SpectralNorm`)."""

    def _kernel_variable(self):
        return self.embeddings

    def _product(self, ids, table):
        return tf.cast(tf.gather(table, tf.cast(ids, tf.int32)), self.compute_dtype)


def _softmax32(logits):
    # Softmax in float32 even under mixed precision: N can be 1024 and more.
    return tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)


def _split_heads(x, n_heads):
    """(B, N, D) -> (B, heads, N, D / heads)."""
    x = tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], n_heads, x.shape[-1] // n_heads])
    return tf.transpose(x, [0, 2, 1, 3])


def _merge_heads(x):
    """(B, heads, N, depth) -> (B, N, heads * depth)."""
    x = tf.transpose(x, [0, 2, 1, 3])
    return tf.reshape(x, [tf.shape(x)[0], tf.shape(x)[1], x.shape[2] * x.shape[3]])


def _mlp(hidden_dim, model_dim):
    # Keras' 'gelu' is the exact (erf) GELU, as in the authors' Keras 2 code.
    return keras.Sequential([dense(hidden_dim, activation='gelu'), dense(model_dim)])


@keras.saving.register_keras_serializable(package='LadaGAN')
class AdditiveAttention(layers.Layer):
    """Linear additive self-attention with one attention vector per head.

    call(x, z=None) with x of shape (B, N, D) returns (output (B, N, D), attention
    (B, heads, N)), where attention is softmax over the N tokens; z is ignored. Cost is
    linear in N.
    """

    def __init__(self, model_dim, n_heads, **kwargs):
        super().__init__(**kwargs)
        if model_dim % n_heads:
            raise ValueError(f'model_dim {model_dim} is not divisible by n_heads {n_heads}')
        self.model_dim = model_dim
        self.n_heads = n_heads
        self.depth = model_dim // n_heads
        self.wq = dense(model_dim)
        self.wk = dense(model_dim)
        self.wv = dense(model_dim)
        self.q_attn = dense(n_heads)  # one logit per head from the full query (quirk §10.2)
        self.to_out = dense(model_dim)

    def build(self, x_shape, z_shape=None):
        for layer in (self.wq, self.wk, self.wv, self.q_attn, self.to_out):
            layer.build(x_shape)

    def call(self, x, z=None):
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        logits = tf.transpose(self.q_attn(q), [0, 2, 1]) / self.depth ** 0.5
        attn = _softmax32(logits)
        q, k, v = (_split_heads(t, self.n_heads) for t in (q, k, v))
        global_q = tf.einsum('bhn,bhnd->bhd', tf.cast(attn, q.dtype), q)
        mixed = global_q[:, :, None, :] * k * v
        return self.to_out(_merge_heads(mixed)), attn

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads}


class _QuadraticSelfAttention(layers.Layer):
    """Multi-head self-attention over all token pairs; subclasses give the logits."""

    def __init__(self, model_dim, n_heads, **kwargs):
        super().__init__(**kwargs)
        if model_dim % n_heads:
            raise ValueError(f'model_dim {model_dim} is not divisible by n_heads {n_heads}')
        self.model_dim, self.n_heads = model_dim, n_heads
        self.depth = model_dim // n_heads
        self.wq = dense(model_dim)
        self.wv = dense(model_dim)
        self.to_out = dense(model_dim)

    def build(self, x_shape, z_shape=None):
        for layer in self._projections():
            layer.build(x_shape)

    def _projections(self):
        return (self.wq, self.wv, self.to_out)

    def call(self, x, z=None):
        q = _split_heads(self.wq(x), self.n_heads)
        v = _split_heads(self.wv(x), self.n_heads)
        attn = _softmax32(self._logits(q, x))  # (B, heads, queries, keys)
        out = tf.einsum('bhnm,bhmd->bhnd', tf.cast(attn, v.dtype), v)
        return self.to_out(_merge_heads(out)), tf.reduce_mean(attn, axis=2)

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads}


@keras.saving.register_keras_serializable(package='LadaGAN')
class DotProductAttention(_QuadraticSelfAttention):
    """Scaled dot-product self-attention (SAGAN, ViT GANs): softmax(q k^T / sqrt(d)) v
    per head. Cost O(N^2). Map: the attention each token receives, mean over queries."""

    def __init__(self, model_dim, n_heads, **kwargs):
        super().__init__(model_dim, n_heads, **kwargs)
        self.wk = dense(model_dim)

    def _projections(self):
        return (self.wq, self.wk, self.wv, self.to_out)

    def _logits(self, q, x):
        k = _split_heads(self.wk(x), self.n_heads)
        return tf.einsum('bhnd,bhmd->bhnm', q, k) / self.depth ** 0.5


@keras.saving.register_keras_serializable(package='LadaGAN')
class L2Attention(_QuadraticSelfAttention):
    """L2-distance self-attention (GigaGAN): logits = -|q_i - k_j|^2 / sqrt(d) per head.

    tied=True makes queries and keys one projection (no `wk`), which makes the layer
    Lipschitz (Kim et al. 2021); GigaGAN ties them in its discriminator. Cost O(N^2).
    Map: the attention each token receives, mean over queries.
    """

    def __init__(self, model_dim, n_heads, tied=False, **kwargs):
        super().__init__(model_dim, n_heads, **kwargs)
        self.tied = tied
        if not tied:
            self.wk = dense(model_dim)

    def _projections(self):
        return (self.wq, self.wv, self.to_out) + (() if self.tied else (self.wk,))

    def _logits(self, q, x):
        k = q if self.tied else _split_heads(self.wk(x), self.n_heads)
        # |q|^2 + |k|^2 - 2 q.k: one matmul instead of an (N, N, d) difference tensor.
        q_sq = tf.reduce_sum(tf.square(q), axis=-1)[..., :, None]
        k_sq = tf.reduce_sum(tf.square(k), axis=-1)[..., None, :]
        dist = tf.nn.relu(q_sq + k_sq - 2 * tf.einsum('bhnd,bhmd->bhnm', q, k))
        return -dist / self.depth ** 0.5

    def get_config(self):
        return {**super().get_config(), 'tied': self.tied}


def _instance_norm(x, epsilon=1e-5):
    """w(X) of GANformer: each channel normalised over the tokens, per sample."""
    x32 = tf.cast(x, tf.float32)
    mean, var = tf.nn.moments(x32, axes=[1], keepdims=True)
    return tf.cast((x32 - mean) * tf.math.rsqrt(var + epsilon), x.dtype)


class _MultiHeadCross(layers.Layer):
    """Multi-head attention from `source` tokens to `target` tokens:
    softmax(q(source) k(target)^T / sqrt(d)) v(value), heads merged, then `to_out`.
    Returns (out, attention (B, heads, N_source, N_target) float32)."""

    def __init__(self, model_dim, n_heads, out_dim, **kwargs):
        super().__init__(**kwargs)
        self.model_dim, self.n_heads, self.out_dim = model_dim, n_heads, out_dim
        self.depth = model_dim // n_heads
        self.wq = dense(model_dim)
        self.wk = dense(model_dim)
        self.wv = dense(model_dim)
        self.to_out = dense(out_dim)

    def build(self, source_shape, target_shape, value_shape=None):
        self.wq.build(source_shape)
        self.wk.build(target_shape)
        self.wv.build(value_shape or target_shape)
        self.to_out.build(tuple(source_shape[:-1]) + (self.model_dim,))

    def call(self, source, target, value=None):
        q = _split_heads(self.wq(source), self.n_heads)
        k = _split_heads(self.wk(target), self.n_heads)
        v = _split_heads(self.wv(target if value is None else value), self.n_heads)
        attn = _softmax32(tf.einsum('bhnd,bhmd->bhnm', q, k) / self.depth ** 0.5)
        out = tf.einsum('bhnm,bhmd->bhnd', tf.cast(attn, v.dtype), v)
        return self.to_out(_merge_heads(out)), attn


class _BipartiteAttention(layers.Layer):
    """GANformer's attention between the N image tokens X and k latent components Y.

    latents='noise' (generator): Y comes from the noise z through a two-layer mapping,
    plus a learned embedding per component. latents='learned' (discriminator): Y is a
    trained (k, latent_dim) embedding. The image update is a region-wise modulation:
    gamma(A) * w(X) + beta(A), w = instance normalisation over the tokens.
    """

    def __init__(self, model_dim, n_heads, n_latents=16, latent_dim=32, latents='noise',
                 **kwargs):
        super().__init__(**kwargs)
        if model_dim % n_heads:
            raise ValueError(f'model_dim {model_dim} is not divisible by n_heads {n_heads}')
        if latents not in ('noise', 'learned'):
            raise ValueError(f"latents must be 'noise' or 'learned', got {latents!r}")
        self.model_dim, self.n_heads = model_dim, n_heads
        self.n_latents, self.latent_dim, self.latents = n_latents, latent_dim, latents
        if latents == 'noise':
            self.mapping = keras.Sequential([dense(latent_dim, activation='relu'),
                                             dense(n_latents * latent_dim)])
        self.gamma = dense(model_dim)
        self.beta = dense(model_dim)

    def build(self, x_shape, z_shape=None):
        self.components = self.add_weight(
            shape=(self.n_latents, self.latent_dim), initializer=KERNEL_INIT, name='components')
        if self.latents == 'noise':
            self.mapping.build(z_shape)
        for layer in (self.gamma, self.beta):
            layer.build(x_shape)

    def _latent_components(self, z, x):
        """Y, (B, k, latent_dim) in x's dtype."""
        components = tf.cast(self.components, x.dtype)[None]
        if self.latents == 'learned':
            return tf.tile(components, [tf.shape(x)[0], 1, 1])
        if z is None:
            raise ValueError(f'{type(self).__name__} in the generator needs the noise z')
        y = tf.reshape(self.mapping(z), [-1, self.n_latents, self.latent_dim])
        return tf.cast(y, x.dtype) + components

    def _modulate(self, attended, x):
        return self.gamma(attended) * _instance_norm(x) + self.beta(attended)

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads,
                'n_latents': self.n_latents, 'latent_dim': self.latent_dim,
                'latents': self.latents}


@keras.saving.register_keras_serializable(package='LadaGAN')
class SimplexAttention(_BipartiteAttention):
    """GANformer simplex attention: X := gamma(a(X, Y)) * w(X) + beta(a(X, Y)).

    Cost O(N k). Map: the X->Y attention, renormalised over the tokens for each latent
    and averaged over the latents (each latent's share of the image).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.image_to_latents = _MultiHeadCross(self.model_dim, self.n_heads, self.model_dim)

    def build(self, x_shape, z_shape=None):
        super().build(x_shape, z_shape)
        latent_shape = (x_shape[0], self.n_latents, self.latent_dim)
        self.image_to_latents.build(x_shape, latent_shape)

    def call(self, x, z=None):
        y = self._latent_components(z, x)
        attended, attn = self.image_to_latents(x, y)  # attn (B, heads, N, k)
        share = attn / tf.reduce_sum(attn, axis=2, keepdims=True)
        return self._modulate(attended, x), tf.reduce_mean(share, axis=-1)


@keras.saving.register_keras_serializable(package='LadaGAN')
class DuplexAttention(_BipartiteAttention):
    """GANformer duplex attention, cost O(N k).

    The latents first gather from the image, Y := LayerNorm(Y + a(Y, X)); the image then
    attends to them with keys K = a(Y, X) and values V = the updated Y:
    X := gamma(A(X, K, V)) * w(X) + beta(A(X, K, V)).
    Map: the Y->X attention of the latent update, averaged over the latents.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.latents_to_image = _MultiHeadCross(self.model_dim, self.n_heads, self.latent_dim)
        self.latent_norm = layers.LayerNormalization(epsilon=LN_EPSILON)
        self.image_to_latents = _MultiHeadCross(self.model_dim, self.n_heads, self.model_dim)

    def build(self, x_shape, z_shape=None):
        super().build(x_shape, z_shape)
        latent_shape = (x_shape[0], self.n_latents, self.latent_dim)
        self.latents_to_image.build(latent_shape, x_shape)
        self.latent_norm.build(latent_shape)
        self.image_to_latents.build(x_shape, latent_shape, latent_shape)

    def call(self, x, z=None):
        y = self._latent_components(z, x)
        gathered, attn = self.latents_to_image(y, x)  # attn (B, heads, k, N)
        y = self.latent_norm(y + gathered)
        attended, _ = self.image_to_latents(x, gathered, y)
        return self._modulate(attended, x), tf.reduce_mean(attn, axis=2)


def make_attention(kind, model_dim, n_heads, *, discriminator=False, n_latents=16,
                   latent_dim=32):
    """The attention layer of a block: 'lada', 'dot', 'l2', 'simplex' or 'duplex'.

    In the discriminator L2 attention ties queries and keys, and GANformer's latents are
    trained embeddings; in the generator they come from the noise.
    """
    if kind == 'lada':
        return AdditiveAttention(model_dim, n_heads)
    if kind == 'dot':
        return DotProductAttention(model_dim, n_heads)
    if kind == 'l2':
        return L2Attention(model_dim, n_heads, tied=discriminator)
    if kind in ('simplex', 'duplex'):
        layer = SimplexAttention if kind == 'simplex' else DuplexAttention
        return layer(model_dim, n_heads, n_latents, latent_dim,
                     latents='learned' if discriminator else 'noise')
    raise ValueError(f"unknown attention {kind!r}; choose one of: {', '.join(config.ATTENTIONS)}")


@keras.saving.register_keras_serializable(package='LadaGAN')
class SelfModulatedLayerNorm(layers.Layer):
    """LayerNorm without affine parameters, then scale gamma(z) and shift beta(z).

    gamma and beta read h = relu(Dense(z)) from the raw noise z (no mapping network).
    """

    def __init__(self, model_dim, epsilon=LN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.epsilon = epsilon
        self.h = dense(model_dim)
        self.gamma = dense(model_dim)
        self.beta = dense(model_dim)
        self.ln = layers.LayerNormalization(epsilon=epsilon, center=False, scale=False)

    def build(self, x_shape, z_shape):
        self.h.build(z_shape)
        self.gamma.build(z_shape[:-1] + (self.model_dim,))
        self.beta.build(z_shape[:-1] + (self.model_dim,))
        self.ln.build(x_shape)

    def call(self, x, z):
        h = tf.nn.relu(self.h(z))
        scale, shift = self.gamma(h), self.beta(h)
        return self.ln(x) * scale[:, None, :] + shift[:, None, :]

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'epsilon': self.epsilon}


@keras.saving.register_keras_serializable(package='LadaGAN')
class Ladaformer(layers.Layer):
    """Discriminator block: pre-LN attention and MLP, both with residuals.

    call(x) returns (output, attention). `attention` picks the attention layer
    (make_attention); 'lada' is LadaGAN's.
    """
    in_discriminator = True

    def __init__(self, model_dim, n_heads, mlp_dim, epsilon=LN_EPSILON, attention='lada',
                 n_latents=16, latent_dim=32, **kwargs):
        super().__init__(**kwargs)
        self.model_dim, self.n_heads, self.mlp_dim, self.epsilon = (
            model_dim, n_heads, mlp_dim, epsilon)
        self.attention, self.n_latents, self.latent_dim = attention, n_latents, latent_dim
        # Creation order = the authors' weight order, which their optimizer slots follow.
        self.attn = make_attention(attention, model_dim, n_heads,
                                   discriminator=self.in_discriminator,
                                   n_latents=n_latents, latent_dim=latent_dim)
        self.mlp = _mlp(mlp_dim, model_dim)
        self._make_norms()

    def _make_norms(self):
        self.norm1 = layers.LayerNormalization(epsilon=self.epsilon)
        self.norm2 = layers.LayerNormalization(epsilon=self.epsilon)

    def build(self, x_shape):
        for layer in (self.attn, self.mlp, self.norm1, self.norm2):
            layer.build(x_shape)

    def call(self, x):
        attn_out, attn = self.attn(self.norm1(x))
        x = x + attn_out
        return x + self.mlp(self.norm2(x)), attn

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads,
                'mlp_dim': self.mlp_dim, 'epsilon': self.epsilon, 'attention': self.attention,
                'n_latents': self.n_latents, 'latent_dim': self.latent_dim}


@keras.saving.register_keras_serializable(package='LadaGAN')
class SMLadaformer(Ladaformer):
    """Generator block: self-modulated LayerNorms and NO residual around the MLP.

    out = MLP(SLN2(x1, z)) with x1 = x + Attn(SLN1(x, z), z), as the released models
    compute it (SPEC §10.1); only GANformer's attentions read z. call(x, z) returns
    (output, attention).
    """
    in_discriminator = False

    def _make_norms(self):
        self.norm1 = SelfModulatedLayerNorm(self.model_dim, self.epsilon)
        self.norm2 = SelfModulatedLayerNorm(self.model_dim, self.epsilon)

    def build(self, x_shape, z_shape):
        self.attn.build(x_shape, z_shape)
        self.mlp.build(x_shape)
        self.norm1.build(x_shape, z_shape)
        self.norm2.build(x_shape, z_shape)

    def call(self, x, z):
        attn_out, attn = self.attn(self.norm1(x, z), z)
        x = x + attn_out
        return self.mlp(self.norm2(x, z)), attn


@keras.saving.register_keras_serializable(package='LadaGAN')
class PositionalEmbedding(layers.Layer):
    """Adds a learned (n_tokens, model_dim) table to a (B, n_tokens, model_dim) input."""

    def __init__(self, n_tokens, model_dim, **kwargs):
        super().__init__(**kwargs)
        self.n_tokens, self.model_dim = n_tokens, model_dim
        self.position_embedding = layers.Embedding(
            n_tokens, model_dim, embeddings_initializer=KERNEL_INIT)

    def build(self, x_shape):
        self.position_embedding.build((self.n_tokens,))

    def call(self, x):
        return x + tf.cast(self.position_embedding.embeddings, x.dtype)

    def get_config(self):
        return {**super().get_config(), 'n_tokens': self.n_tokens, 'model_dim': self.model_dim}
