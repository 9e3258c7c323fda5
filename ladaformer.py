"""Ladaformer building blocks: linear additive attention and the Transformer blocks.

Every layer computes exactly what the authors' TensorFlow code computes, quirks included
(SPEC §10): the attention logits come from one Dense over the whole projected query, the
generator block has no residual around its MLP, and the self-modulated LayerNorm scales
by gamma(z) itself, not 1 + gamma(z).

Sub-layer attribute names (`wq`, `q_attn`, `norm1`, `mlp`, ...) are the names in the
authors' checkpoints; `utils.checkpoint_tree` relies on them to read and write that format.
"""
import keras
import tensorflow as tf
from keras import layers

KERNEL_INIT = 'orthogonal'  # every Dense/Conv/Embedding kernel in LadaGAN
LN_EPSILON = 1e-6


def _dense(units, **kwargs):
    return layers.Dense(units, kernel_initializer=KERNEL_INIT, **kwargs)


def _mlp(hidden_dim, model_dim):
    # Keras' 'gelu' is the exact (erf) GELU, as in the authors' Keras 2 code.
    return keras.Sequential([_dense(hidden_dim, activation='gelu'), _dense(model_dim)])


@keras.saving.register_keras_serializable(package='LadaGAN')
class AdditiveAttention(layers.Layer):
    """Linear additive self-attention with one attention vector per head.

    call(x) with x of shape (B, N, D) returns (output (B, N, D), attention (B, heads, N)),
    where attention is softmax over the N tokens. Cost is linear in N.
    """

    def __init__(self, model_dim, n_heads, **kwargs):
        super().__init__(**kwargs)
        if model_dim % n_heads:
            raise ValueError(f'model_dim {model_dim} is not divisible by n_heads {n_heads}')
        self.model_dim = model_dim
        self.n_heads = n_heads
        self.depth = model_dim // n_heads
        self.wq = _dense(model_dim)
        self.wk = _dense(model_dim)
        self.wv = _dense(model_dim)
        self.q_attn = _dense(n_heads)  # one logit per head from the full query (quirk §10.2)
        self.to_out = _dense(model_dim)

    def build(self, x_shape):
        for dense in (self.wq, self.wk, self.wv, self.q_attn, self.to_out):
            dense.build(x_shape)

    def call(self, x):
        q, k, v = self.wq(x), self.wk(x), self.wv(x)
        logits = tf.transpose(self.q_attn(q), [0, 2, 1]) / self.depth ** 0.5
        # Softmax in float32 even under mixed precision: N can be 1024.
        attn = tf.nn.softmax(tf.cast(logits, tf.float32), axis=-1)
        q, k, v = (self._split_heads(t) for t in (q, k, v))
        global_q = tf.einsum('bhn,bhnd->bhd', tf.cast(attn, q.dtype), q)
        mixed = global_q[:, :, None, :] * k * v
        return self.to_out(self._merge_heads(mixed)), attn

    def _split_heads(self, x):
        x = tf.reshape(x, [tf.shape(x)[0], -1, self.n_heads, self.depth])
        return tf.transpose(x, [0, 2, 1, 3])

    def _merge_heads(self, x):
        x = tf.transpose(x, [0, 2, 1, 3])
        return tf.reshape(x, [tf.shape(x)[0], -1, self.model_dim])

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads}


@keras.saving.register_keras_serializable(package='LadaGAN')
class SelfModulatedLayerNorm(layers.Layer):
    """LayerNorm without affine parameters, then scale gamma(z) and shift beta(z).

    gamma and beta read h = relu(Dense(z)) from the raw noise z (no mapping network).
    """

    def __init__(self, model_dim, epsilon=LN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.model_dim = model_dim
        self.epsilon = epsilon
        self.h = _dense(model_dim)
        self.gamma = _dense(model_dim)
        self.beta = _dense(model_dim)
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

    call(x) returns (output, attention).
    """

    def __init__(self, model_dim, n_heads, mlp_dim, epsilon=LN_EPSILON, **kwargs):
        super().__init__(**kwargs)
        self.model_dim, self.n_heads, self.mlp_dim, self.epsilon = (
            model_dim, n_heads, mlp_dim, epsilon)
        # Creation order = the authors' weight order, which their optimizer slots follow.
        self.attn = AdditiveAttention(model_dim, n_heads)
        self.mlp = _mlp(mlp_dim, model_dim)
        self.norm1 = layers.LayerNormalization(epsilon=epsilon)
        self.norm2 = layers.LayerNormalization(epsilon=epsilon)

    def build(self, x_shape):
        for layer in (self.attn, self.mlp, self.norm1, self.norm2):
            layer.build(x_shape)

    def call(self, x):
        attn_out, attn = self.attn(self.norm1(x))
        x = x + attn_out
        return x + self.mlp(self.norm2(x)), attn

    def get_config(self):
        return {**super().get_config(), 'model_dim': self.model_dim, 'n_heads': self.n_heads,
                'mlp_dim': self.mlp_dim, 'epsilon': self.epsilon}


@keras.saving.register_keras_serializable(package='LadaGAN')
class SMLadaformer(Ladaformer):
    """Generator block: self-modulated LayerNorms and NO residual around the MLP.

    out = MLP(SLN2(x1, z)) with x1 = x + Attn(SLN1(x, z)), as the released models
    compute it (SPEC §10.1). call(x, z) returns (output, attention).
    """

    def __init__(self, model_dim, n_heads, mlp_dim, epsilon=LN_EPSILON, **kwargs):
        layers.Layer.__init__(self, **kwargs)
        self.model_dim, self.n_heads, self.mlp_dim, self.epsilon = (
            model_dim, n_heads, mlp_dim, epsilon)
        self.attn = AdditiveAttention(model_dim, n_heads)
        self.mlp = _mlp(mlp_dim, model_dim)
        self.norm1 = SelfModulatedLayerNorm(model_dim, epsilon)
        self.norm2 = SelfModulatedLayerNorm(model_dim, epsilon)

    def build(self, x_shape, z_shape):
        self.attn.build(x_shape)
        self.mlp.build(x_shape)
        self.norm1.build(x_shape, z_shape)
        self.norm2.build(x_shape, z_shape)

    def call(self, x, z):
        attn_out, attn = self.attn(self.norm1(x, z))
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
