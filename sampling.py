"""Sampling a generator: noise from seeds, truncation, latent interpolation, and batched
(XLA-compiled) generation to float or uint8 images. train.py (sample grids), fid.py
(generated images for the metrics) and generate.py all sample through here.
"""
import math
import warnings
import weakref

import numpy as np
import tensorflow as tf

import utils

# ---------------------------------------------------------------------------------------
# Noise and interpolation
# ---------------------------------------------------------------------------------------

def sample_noise(n, noise_dim, seed, truncation=1.0):
    """(n, noise_dim) float32 z ~ N(0, I) * truncation; the same seed gives the same z.

    Drawn at once with a stateless RNG, so the result does not depend on the batch size
    or on earlier random calls.
    """
    z = tf.random.stateless_normal([int(n), int(noise_dim)], seed=[int(seed), 0],
                                   dtype=tf.float32)
    return (z * float(truncation)).numpy()


def sample_labels(n, class_counts, seed):
    """(n,) int32 labels drawn with the frequencies of class_counts (a class with no
    images is never drawn); the same seed gives the same labels."""
    counts = np.asarray(class_counts, np.float64)
    if counts.ndim != 1 or not len(counts) or counts.min() < 0 or counts.sum() <= 0:
        raise ValueError(f'class_counts must be counts >= 0 with a positive sum, got '
                         f'{class_counts}')
    rng = np.random.default_rng([int(seed), 1])
    return rng.choice(len(counts), size=int(n), p=counts / counts.sum()).astype(np.int32)


def slerp(z0, z1, t):
    """Spherical interpolation from z0 (t=0) to z1 (t=1); t: scalar or 1-D -> (len(t), d).

    Moves along the great circle between the directions of z0 and z1 (norms blend along);
    falls back to linear interpolation when they are (anti)parallel.
    """
    z0, z1 = np.asarray(z0, np.float64), np.asarray(z1, np.float64)
    t = np.atleast_1d(np.asarray(t, np.float64))[:, None]
    cos = np.dot(z0, z1) / max(np.linalg.norm(z0) * np.linalg.norm(z1), 1e-12)
    omega = np.arccos(np.clip(cos, -1.0, 1.0))
    if np.sin(omega) < 1e-6:
        return (1 - t) * z0 + t * z1
    return (np.sin((1 - t) * omega) * z0 + np.sin(t * omega) * z1) / np.sin(omega)


def interpolation_noise(keyframes, steps):
    """Key z's (k, d) -> ((k-1)*steps + 1, d) float32: `steps` frames from each key to
    the next (slerp), then the last key."""
    keyframes = np.asarray(keyframes, np.float32)
    if len(keyframes) < 2 or steps < 1:
        raise ValueError('interpolation needs at least 2 keyframes (--n 2 or more) and '
                         '--interpolate 1 or more steps')
    t = np.arange(steps) / steps
    parts = [slerp(a, b, t) for a, b in zip(keyframes[:-1], keyframes[1:])]
    return np.concatenate(parts + [keyframes[-1:]]).astype(np.float32)


# ---------------------------------------------------------------------------------------
# Batched generation
# ---------------------------------------------------------------------------------------

class Sampler:
    """Runs a generator on fixed-size batches through one compiled function per output kind.

    The last batch is padded to batch_size, so a run compiles one XLA program however
    many images it makes. jit_compile=False runs the plain graph instead. A conditional
    generator (n_classes > 0) needs the labels (N,) of the images beside the noise.
    """

    def __init__(self, generator, batch_size=50, jit_compile=True):
        self.generator = generator
        self.batch_size = int(batch_size)
        self.conditional = bool(getattr(generator, 'n_classes', 0))
        call = lambda inputs: generator(inputs, training=False)  # noqa: E731
        self._images = tf.function(lambda inputs: call(inputs)[0], jit_compile=jit_compile)
        self._with_attention = tf.function(call, jit_compile=jit_compile)

    def _inputs(self, z, labels, start, batch):
        """The generator's input for noise[start:start + batch], padded to batch."""
        z = z[start:start + batch]
        pad = batch - len(z)
        z = tf.constant(np.pad(z, [(0, pad), (0, 0)]))
        if not self.conditional:
            return z
        return z, tf.constant(np.pad(labels[start:start + batch], [(0, pad)]))

    def batches(self, noise, attention=False, progress=True, labels=None):
        """Yields (start, images, attention) per batch of noise (N, noise_dim), as numpy.

        images: float32 (b, S, S, 3); attention: [attn_8, attn_16, attn_32], each
        (b, heads, tokens), or None without attention. tqdm shows progress on a terminal.
        """
        from tqdm import tqdm
        noise = np.asarray(noise, np.float32)
        n = len(noise)
        labels = self._check_labels(labels, n)
        batch = max(1, min(self.batch_size, n))
        n_batches = math.ceil(n / batch)
        bar = tqdm(total=n, unit='img', desc='sampling', leave=False,
                   disable=True if (n_batches < 2 or not progress) else None)
        with bar:
            for start in range(0, n, batch):
                inputs = self._inputs(noise, labels, start, batch)
                size = min(batch, n - start)
                if attention:
                    images, maps = self._with_attention(inputs)
                    maps = [m.numpy()[:size] for m in maps]
                else:
                    images, maps = self._images(inputs), None
                yield start, images.numpy()[:size], maps
                bar.update(size)

    def _check_labels(self, labels, n):
        if not self.conditional:
            if labels is not None:
                raise ValueError('labels given for an unconditional generator')
            return None
        if labels is None:
            raise ValueError('this generator is class-conditional: give the labels too')
        labels = np.asarray(labels, np.int32).reshape(-1)
        n_classes = self.generator.n_classes
        if len(labels) != n or labels.min(initial=0) < 0 or labels.max(initial=0) >= n_classes:
            raise ValueError(f'labels must be {n} class indices in [0, {n_classes})')
        return labels

    def __call__(self, noise, attention=False, progress=True, labels=None):
        """All images (N, S, S, 3) float32, and the attention maps (or None)."""
        images, maps = [], []
        for _, batch_images, batch_maps in self.batches(noise, attention, progress, labels):
            images.append(batch_images)
            maps.append(batch_maps)
        images = np.concatenate(images)
        if not attention:
            return images, None
        return images, [np.concatenate(stage) for stage in zip(*maps)]


_SAMPLERS = weakref.WeakKeyDictionary()  # generator -> {(batch_size, jit): Sampler}


def generate(generator, noise, batch_size=50, attention=False, jit_compile=True,
             labels=None):
    """Images (N, S, S, 3) float32 in about [-1, 1] (and attention maps, or None) for noise
    (and, for a conditional generator, labels).

    The compiled sampler is kept per generator, so later calls with the same batch size
    do not compile again.
    """
    samplers = _SAMPLERS.setdefault(generator, {})
    key = (int(batch_size), bool(jit_compile))
    if key not in samplers:
        samplers[key] = Sampler(generator, batch_size, jit_compile)
    return samplers[key](noise, attention, labels=labels)


class FakeSampler:
    """uint8 image batches from a generator g(z, training=False) -> (images, attention).

    The generator runs through Sampler: one tf.function compiled with XLA for
    a fixed batch size (the last batch is padded and cut), so one program is compiled
    per sampler whatever n is; when XLA cannot compile it, a warning and a plain graph.
    Images are quantised by utils.to_uint8, the rule of the authors' PNG samples
    (clip, truncate), so in-memory fakes equal the PNG round trip.
    """

    def __init__(self, generator, batch_size, jit_compile=True):
        self.generator = generator
        self.batch_size = int(batch_size)
        self.noise_dim = int(generator.noise_dim)
        self.jit_compile = jit_compile
        self._sampler = Sampler(generator, self.batch_size, jit_compile)
        self._ready = False

    @property
    def traces(self):
        """How many times the generator call was traced (1 after any number of calls)."""
        return self._sampler._images.experimental_get_tracing_count()

    def _compile(self):
        # One batch on the first use: compiles, or falls back when XLA cannot.
        z = np.zeros((self.batch_size, self.noise_dim), np.float32)
        labels = np.zeros(self.batch_size, np.int32) if self._sampler.conditional else None
        try:
            next(self._sampler.batches(z, progress=False, labels=labels))
        except tf.errors.OpError as e:  # what XLA raises; not an interrupt's aftermath
            if not self.jit_compile:
                raise
            warnings.warn(f'XLA cannot compile the generator ({type(e).__name__}); '
                          'sampling without XLA', RuntimeWarning)
            self._sampler = Sampler(self.generator, self.batch_size, False)
            next(self._sampler.batches(z, progress=False, labels=labels))
        self._ready = True

    def batches(self, n, seed=None, labels=None):
        """Yield uint8 (<= batch_size, S, S, 3) batches of n images; noise from
        np.random.default_rng(seed).standard_normal((n, noise_dim)) (seed None: fresh
        noise every call); labels (n,): the classes, for a conditional generator."""
        if not self._ready:
            self._compile()
        noise = np.random.default_rng(seed).standard_normal((n, self.noise_dim))
        for _, images, _ in self._sampler.batches(noise.astype(np.float32), progress=False,
                                                  labels=labels):
            yield utils.to_uint8(images)
