"""LadaGAN generator and discriminator (Keras 3, TensorFlow backend).

    g = Generator(img_size=64, model_dim=[1024, 256, 64], ...)
    images, (attn_8, attn_16, attn_32) = g(z, training=False)   # images unbounded, ~[-1, 1]
    logits = Discriminator(img_size=64, ...)(images, training=True)  # (B, 25)

Class-conditional models (n_classes > 0, ours) take (z, labels) and (images, labels),
labels int32 (B,): G conditions every self-modulated LayerNorm on [z, embed(label)] and D
adds a projection term to each patch logit (see the classes).

`build_generator(config)` / `build_discriminator(config)` make built models from a
config dict (config.py). Attribute names follow the authors' checkpoints.
"""
import keras
import numpy as np
import tensorflow as tf
from keras import layers

import config as config_lib
import ladaformer
from ladaformer import Ladaformer, PositionalEmbedding, SMLadaformer


def _conv(filters, kernel_size, **kwargs):
    return ladaformer.conv2d(filters, kernel_size, padding=kwargs.pop('padding', 'same'),
                             **kwargs)


def _batchnorm(synchronized):
    # Synchronized only under a multi-replica strategy: the all-reduced moments are
    # E[x^2] - E[x]^2, which rounds differently from the one-device computation.
    return layers.BatchNormalization(synchronized=synchronized)


def _tokens_to_grid(x, side):
    return tf.reshape(x, [tf.shape(x)[0], side, side, x.shape[-1]])


def _grid_to_tokens(x):
    return tf.reshape(x, [tf.shape(x)[0], x.shape[1] * x.shape[2], x.shape[3]])


@keras.saving.register_keras_serializable(package='LadaGAN')
class Generator(keras.Model):
    """z (B, noise_dim) -> (images (B, S, S, 3), [attn_8, attn_16, attn_32]).

    Tokens go 8x8 -> 16x16 -> 32x32 through SMLadaformer blocks joined by pixel shuffle
    and a linear 3x3 conv. Above 32x32 the image comes from a final pixel shuffle
    (patch generation, `dec_dim=False`) or a conv decoder (`dec_dim=[c1, ...]`).
    The output is linear (no tanh), as in the released models.

    n_classes > 0: called on (z, labels). A learned class embedding e(label) of width
    noise_dim (initialised N(0, 1), as z), shared by all blocks as in BigGAN, is
    concatenated to z; every self-modulated LayerNorm (and GANformer's latents) reads
    [z, e(label)] instead of z, so one z gives a different image per class. The first Dense reads z alone.
    spectral_norm: every Dense and conv (not the class embedding) spectrally normalised.
    """

    def __init__(self, img_size=64, model_dim=(1024, 256, 64), heads=(4, 4, 4),
                 mlp_dim=(512, 512, 512), dec_dim=False, noise_dim=128, sync_batchnorm=False,
                 attention='lada', n_latents=16, latent_dim=32, n_classes=0,
                 spectral_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.n_classes, self.spectral_norm = n_classes, spectral_norm
        with ladaformer.spectral_norm(spectral_norm):
            self._make_layers(img_size, model_dim, heads, mlp_dim, dec_dim, noise_dim,
                              sync_batchnorm, attention, n_latents, latent_dim)
        if n_classes:  # after the authors' layers, whose creation order their checkpoints keep
            # N(0, 1) as z (and BigGAN's shared embedding): [z, e(y)] starts balanced, where
            # orthogonal rows (norm 1 against |z| ~ 8 for noise_dim 64) would barely count.
            self.class_embedding = layers.Embedding(
                n_classes, noise_dim, embeddings_initializer=keras.initializers.RandomNormal(1.0))
        self.build((None, noise_dim))

    def _make_layers(self, img_size, model_dim, heads, mlp_dim, dec_dim, noise_dim,
                     sync_batchnorm, attention, n_latents, latent_dim):
        self.img_size = img_size
        self.attention, self.n_latents, self.latent_dim = attention, n_latents, latent_dim
        block_kwargs = {'attention': attention, 'n_latents': n_latents, 'latent_dim': latent_dim}
        self.sync_batchnorm = sync_batchnorm
        self.model_dim = list(model_dim)
        self.heads = list(heads)
        self.mlp_dim = list(mlp_dim)
        self.dec_dim = list(dec_dim) if dec_dim else False
        self.noise_dim = noise_dim
        d0, d1, d2 = self.model_dim
        # Creation order = the authors' weight order, which their optimizer slots follow.
        self.init = keras.Sequential([ladaformer.dense(64 * d0, use_bias=False)])
        self.pos_emb_8 = PositionalEmbedding(64, d0)
        self.block_8 = SMLadaformer(d0, heads[0], mlp_dim[0], **block_kwargs)
        self.conv_8 = _conv(d1, 3)
        self.pos_emb_16 = PositionalEmbedding(256, d1)
        self.block_16 = SMLadaformer(d1, heads[1], mlp_dim[1], **block_kwargs)
        self.conv_16 = _conv(d2, 3)
        self.pos_emb_32 = PositionalEmbedding(1024, d2)
        self.block_32 = SMLadaformer(d2, heads[2], mlp_dim[2], **block_kwargs)
        if self.dec_dim:
            self.dec = keras.Sequential()
            for width in self.dec_dim:
                self.dec.add(layers.UpSampling2D(2, interpolation='nearest'))
                self.dec.add(_conv(width, 3))
                self.dec.add(_batchnorm(sync_batchnorm))
                self.dec.add(layers.LeakyReLU(0.2))
        self.patch_size = 1 if self.dec_dim else img_size // 32
        self.ch_conv = _conv(3, 3)

    def build(self, z_shape):
        d0, d1, d2 = self.model_dim
        self.init.build(z_shape)
        if self.n_classes:
            self.class_embedding.build((None,))
            z_shape = (None, 2 * self.noise_dim)  # what the blocks read: [z, e(label)]
        for side, dim, pos, block in ((8, d0, self.pos_emb_8, self.block_8),
                                      (16, d1, self.pos_emb_16, self.block_16),
                                      (32, d2, self.pos_emb_32, self.block_32)):
            pos.build((None, side * side, dim))
            block.build((None, side * side, dim), z_shape)
        self.conv_8.build((None, 16, 16, d0 // 4))
        self.conv_16.build((None, 32, 32, d1 // 4))
        channels = d2 // self.patch_size ** 2
        if self.dec_dim:
            self.dec.build((None, 32, 32, d2))
            channels = self.dec_dim[-1]
        self.ch_conv.build((None, self.img_size, self.img_size, channels))
        self.built = True

    def call(self, inputs, training=False):
        z, labels = _split_labels(inputs, self.n_classes, 'generator', 'noise')
        x = tf.reshape(self.init(z), [-1, 64, self.model_dim[0]])
        style = z
        if self.n_classes:
            style = tf.concat([z, tf.cast(self.class_embedding(labels), z.dtype)], axis=-1)
        x, attn_8 = self.block_8(self.pos_emb_8(x), style)
        x = self._upsample_tokens(x, 8, self.conv_8)
        x, attn_16 = self.block_16(self.pos_emb_16(x), style)
        x = self._upsample_tokens(x, 16, self.conv_16)
        x, attn_32 = self.block_32(self.pos_emb_32(x), style)
        x = _tokens_to_grid(x, 32)
        if self.dec_dim:
            x = self.dec(x, training=training)
        elif self.patch_size > 1:
            x = tf.nn.depth_to_space(x, self.patch_size)
        # float32 images whatever the compute precision: they feed losses, FID and files.
        return tf.cast(self.ch_conv(x), tf.float32), [attn_8, attn_16, attn_32]

    @staticmethod
    def _upsample_tokens(x, side, conv):
        """(B, side^2, C) -> pixel shuffle -> (2side)^2 grid -> conv -> (B, 4 side^2, C')."""
        x = tf.nn.depth_to_space(_tokens_to_grid(x, side), 2)
        return _grid_to_tokens(conv(x))

    def get_config(self):
        return {'img_size': self.img_size, 'model_dim': self.model_dim, 'heads': self.heads,
                'mlp_dim': self.mlp_dim, 'dec_dim': self.dec_dim,
                'noise_dim': self.noise_dim, **_shared_config(self)}


def _shared_config(net):
    """The constructor options both networks have: attention variant, conditioning,
    normalisation, name."""
    return {key: getattr(net, key) for key in ('sync_batchnorm', 'attention', 'n_latents',
                                               'latent_dim', 'n_classes', 'spectral_norm',
                                               'name')}


def _split_labels(inputs, n_classes, net, what):
    """(x, labels) of a conditional model's input, (x, None) of an unconditional one's."""
    conditional = isinstance(inputs, (tuple, list))
    if conditional != bool(n_classes):
        raise ValueError(f'this {net} is {"" if n_classes else "un"}conditional: call it on '
                         + (f'({what}, labels)' if n_classes else what))
    return tuple(inputs) if conditional else (inputs, None)


@keras.saving.register_keras_serializable(package='LadaGAN')
class DownBlock(keras.layers.Layer):
    """FastGAN-style down block: (strided conv path + avgpool/1x1 path) / 2, halves H, W."""

    def __init__(self, filters, sync_batchnorm=False, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.sync_batchnorm = sync_batchnorm
        self.main = keras.Sequential([
            _conv(filters, 3, strides=2, use_bias=False), _batchnorm(sync_batchnorm),
            layers.LeakyReLU(0.2),
            _conv(filters, 3, use_bias=False), _batchnorm(sync_batchnorm),
            layers.LeakyReLU(0.2)])
        self.direct = keras.Sequential([
            layers.AveragePooling2D(2),
            _conv(filters, 1, use_bias=False), _batchnorm(sync_batchnorm),
            layers.LeakyReLU(0.2)])

    def build(self, x_shape):
        self.main.build(x_shape)
        self.direct.build(x_shape)

    def call(self, x, training=False):
        return (self.main(x, training=training) + self.direct(x, training=training)) / 2

    def get_config(self):
        return {**super().get_config(), 'filters': self.filters,
                'sync_batchnorm': self.sync_batchnorm}


@keras.saving.register_keras_serializable(package='LadaGAN')
class Discriminator(keras.Model):
    """images (B, S, S, 3) in [-1, 1] -> (B, 25) float32 logits (a 5x5 patch map).

    Conv stem and down blocks to 16x16, one Ladaformer over the 256 tokens, then
    space-to-depth to 8x8 and a conv head ending in a 4x4 valid conv.

    n_classes > 0: called on (images, labels), projection discriminator (Miyato & Koyama
    2018) per patch: with h (B, 8, 8, out_dim[1]) the features after the head's 1x1 conv
    and LeakyReLU, patch logit (i, j) gains <e(label), sum of h over the 4x4 window that
    the final conv reads for (i, j)>, e a learned class embedding of width out_dim[1].
    spectral_norm: every Dense, conv and the class embedding spectrally normalised.
    """

    def __init__(self, img_size=64, enc_dim=(64, 128, 256), out_dim=(512, 1024),
                 mlp_dim=512, heads=4, sync_batchnorm=False, attention='lada', n_latents=16,
                 latent_dim=32, n_classes=0, spectral_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.n_classes, self.spectral_norm = n_classes, spectral_norm
        with ladaformer.spectral_norm(spectral_norm):
            self._make_layers(img_size, enc_dim, out_dim, mlp_dim, heads, sync_batchnorm,
                              attention, n_latents, latent_dim)
            if n_classes:
                self.class_embedding = ladaformer.embedding(n_classes, out_dim[1])
        self.build((None, img_size, img_size, 3))

    def _make_layers(self, img_size, enc_dim, out_dim, mlp_dim, heads, sync_batchnorm,
                     attention, n_latents, latent_dim):
        self.img_size = img_size
        self.attention, self.n_latents, self.latent_dim = attention, n_latents, latent_dim
        self.sync_batchnorm = sync_batchnorm
        self.enc_dim = list(enc_dim)
        self.out_dim = list(out_dim)
        self.mlp_dim = mlp_dim
        self.heads = heads
        if img_size >> (len(enc_dim) - 1) != 16:
            raise ValueError(f'enc_dim needs {img_size.bit_length() - 4} entries for '
                             f'img_size {img_size}, got {len(enc_dim)}')
        self.inp_conv = keras.Sequential([_conv(enc_dim[0], 3, use_bias=False),
                                          layers.LeakyReLU(0.2)])
        self.encoder = [DownBlock(width, sync_batchnorm) for width in enc_dim[1:]]
        self.pos_emb_8 = PositionalEmbedding(256, enc_dim[-1])  # 16x16 tokens, authors' name
        self.block_8 = Ladaformer(enc_dim[-1], heads, mlp_dim, attention=attention,
                                  n_latents=n_latents, latent_dim=latent_dim)
        self.conv_4 = _conv(out_dim[0], 3)
        self.down_4 = keras.Sequential([
            _conv(out_dim[1], 1, use_bias=False, padding='valid'), layers.LeakyReLU(0.2),
            _conv(1, 4, use_bias=False, padding='valid')])

    def blocks(self):
        """D's blocks counting from the image, the units of config freeze_d: the input
        conv, each down block, then the Ladaformer with its positional embedding (each a
        list of layers). The output head (conv_4, down_4, a class embedding) is not one."""
        return [[self.inp_conv], *[[block] for block in self.encoder],
                [self.pos_emb_8, self.block_8]]

    def build(self, x_shape):
        self.inp_conv.build(x_shape)
        size, channels = self.img_size, self.enc_dim[0]
        for block, width in zip(self.encoder, self.enc_dim[1:]):
            block.build((None, size, size, channels))
            size, channels = size // 2, width
        self.pos_emb_8.build((None, 256, channels))
        self.block_8.build((None, 256, channels))
        self.conv_4.build((None, 8, 8, 4 * channels))
        self.down_4.build((None, 8, 8, self.out_dim[0]))
        if self.n_classes:
            self.class_embedding.build((None,))
        self.built = True

    def call(self, inputs, training=False):
        images, labels = _split_labels(inputs, self.n_classes, 'discriminator', 'images')
        x = self.inp_conv(images)
        for block in self.encoder:
            x = block(x, training=training)
        x, _ = self.block_8(self.pos_emb_8(_grid_to_tokens(x)))
        x = tf.nn.space_to_depth(_tokens_to_grid(x, 16), 2)
        conv_1x1, activation, conv_4x4 = self.down_4.layers
        features = activation(conv_1x1(self.conv_4(x)))
        logits = conv_4x4(features)[..., 0]  # (B, 5, 5)
        if self.n_classes:
            logits += self._projection(features, labels)
        return tf.cast(tf.reshape(logits, [-1, 25]), tf.float32)

    def _projection(self, features, labels):
        """<e(label), h summed over each patch logit's 4x4 window>, (B, 5, 5)."""
        window_sums = 16 * tf.nn.avg_pool2d(features, 4, 1, 'VALID')
        embedded = tf.cast(self.class_embedding(labels), window_sums.dtype)
        return tf.einsum('bijc,bc->bij', window_sums, embedded)

    def get_config(self):
        return {'img_size': self.img_size, 'enc_dim': self.enc_dim, 'out_dim': self.out_dim,
                'mlp_dim': self.mlp_dim, 'heads': self.heads, **_shared_config(self)}


def build_generator(config, name='generator', sync_batchnorm=False):
    return Generator(img_size=config['img_size'], model_dim=config['g_dim'],
                     heads=config['g_heads'], mlp_dim=config['g_mlp'],
                     dec_dim=config['dec_dim'], noise_dim=config['noise_dim'],
                     sync_batchnorm=sync_batchnorm, attention=config['g_attention'],
                     n_latents=config['n_latents'], latent_dim=config['latent_dim'],
                     n_classes=config['n_classes'],
                     spectral_norm=config_lib.spectral_norm_in(config, 'g'), name=name)


def build_discriminator(config, name='discriminator', sync_batchnorm=False):
    return Discriminator(img_size=config['img_size'], enc_dim=config['d_enc_dim'],
                         out_dim=config['d_out_dim'], mlp_dim=config['d_mlp'],
                         heads=config['d_heads'], sync_batchnorm=sync_batchnorm,
                         attention=config['d_attention'], n_latents=config['n_latents'],
                         latent_dim=config['latent_dim'], n_classes=config['n_classes'],
                         spectral_norm=config_lib.spectral_norm_in(config, 'd'), name=name)


# ---------------------------------------------------------------------------------------
# Model size
# ---------------------------------------------------------------------------------------

def count_parameters(model):
    """(trainable, non_trainable) parameter counts."""
    count = lambda weights: int(sum(np.prod(w.shape) for w in weights))
    return count(model.trainable_weights), count(model.non_trainable_weights)


def count_macs(model, input_shape):
    """Multiply-accumulates of one forward pass on one sample, read off the traced graph.

    Counts the matrix products and convolutions (MatMul, BatchMatMul, Einsum, Conv2D),
    the way the LadaGAN README's "FLOPs" are counted; element-wise ops are not counted
    (nor a class embedding's lookup: a conditional model is traced with a label too).
    """
    specs = [tf.TensorSpec([1, *input_shape], tf.float32)]
    if getattr(model, 'n_classes', 0):
        specs.append(tf.TensorSpec([1], tf.int32))
    call = tf.function(lambda *inputs: model(inputs if len(inputs) > 1 else inputs[0],
                                              training=False))
    graph = call.get_concrete_function(*specs).graph
    return sum(_op_macs(op) for op in graph.get_operations())


def _op_macs(op):
    if op.type in ('MatMul', 'BatchMatMulV2', 'BatchMatMulV3', 'BatchMatMul'):
        a = op.inputs[0].shape.as_list()
        adjoint = op.get_attr('transpose_a' if op.type == 'MatMul' else 'adj_x')
        inner = a[-2] if adjoint else a[-1]
        return int(np.prod(op.outputs[0].shape.as_list())) * inner
    if op.type == 'Conv2D':
        kh, kw, cin, _ = op.inputs[1].shape.as_list()
        return int(np.prod(op.outputs[0].shape.as_list())) * kh * kw * cin
    if op.type == 'Einsum':
        inputs, _ = op.get_attr('equation').decode().split('->')
        sizes = {}
        for letters, tensor in zip(inputs.split(','), op.inputs):
            sizes.update(zip(letters, tensor.shape.as_list()))
        return int(np.prod(list(sizes.values())))
    return 0
