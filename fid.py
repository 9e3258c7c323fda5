"""FID, KID, Inception Score and precision/recall, and a CLI that evaluates a generator.

Two feature networks, which give numbers that are NOT comparable with each other:

- ``tf2015``: the 2015 TensorFlow Inception graph (``classify_image_graph_def.pb``) read
  at ``pool_3``. It is the network of the TTUR FID code; pytorch-fid and torch-fidelity
  port its weights, and published FID/KID/IS/precision-recall tables use it. Use it for
  numbers that are compared with papers (SPEC.md §7: the authors said they report
  pytorch-fid numbers).
- ``keras``: ``keras.applications.InceptionV3`` with ImageNet weights, average-pooled,
  299x299 bilinear resize. It is the authors' in-training monitor (2.5k vs 2.5k FID that
  picks the best checkpoint). Its numbers differ from the published protocol.

Images enter the extractors as uint8 NHWC batches (floats in [0, 255] are accepted too).
Generated images in [-1, 1] become uint8 through `fake_uint8`, which stores what a PNG of
them would hold, so in-memory evaluation and evaluation from PNG files agree.

TensorFlow is imported inside the functions that need it. The metrics are plain numpy,
and the CLI checks its arguments before importing TensorFlow, which takes seconds and
writes log lines to stderr.

    python fid.py --eval_dir 'data/celeba/*.png' --model_dir runs/celeba --metrics fid,kid
"""
import argparse
import glob
import hashlib
import json
import os
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import uuid
import warnings

import numpy as np
from scipy import linalg
from scipy.special import xlogy
from tqdm import tqdm

TF2015_URL = 'http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz'
TF2015_FILE = 'classify_image_graph_def.pb'
KERAS_WEIGHTS_FILE = 'inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5'
CACHE_ROOT = os.path.join(os.path.expanduser('~'), '.cache', 'ladagan')
IMAGE_EXTENSIONS = ('.png', '.jpg', '.jpeg', '.bmp', '.gif')
METRICS = ('fid', 'kid', 'is', 'pr')


class FIDError(Exception):
    """A user-facing error (bad input). The CLI prints it as one line and exits 2."""


class FIDUnavailable(FIDError):
    """The feature network's weights are missing and cannot be downloaded."""


# ---------------------------------------------------------------------------------------
# Metrics on features (numpy, float64)
# ---------------------------------------------------------------------------------------

def feature_stats(features):
    """Mean and covariance (float64) of features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f'need features of shape (N >= 2, D), got {features.shape}')
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrtm(a):
    # scipy warns on singular input; non-finite results are handled by the caller.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return linalg.sqrtm(a)


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2))."""
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f'shapes differ: {mu1.shape}/{mu2.shape}, {sigma1.shape}/{sigma2.shape}')
    covmean = _sqrtm(sigma1 @ sigma2)
    if not np.isfinite(covmean).all():
        # A (near) singular product, e.g. fewer samples than dimensions: shift both
        # covariances by eps*I as pytorch-fid and TTUR do.
        warnings.warn(f'sqrtm(sigma1 @ sigma2) is not finite; adding {eps} to the '
                      'diagonals of the covariances', RuntimeWarning)
        offset = np.eye(len(sigma1)) * eps
        covmean = _sqrtm((sigma1 + offset) @ (sigma2 + offset))
    if np.iscomplexobj(covmean):
        # Round-off gives tiny imaginary parts; large ones mean the inputs are not
        # covariance matrices (not positive semi-definite).
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise ValueError(f'sqrtm(sigma1 @ sigma2) has an imaginary component of '
                             f'{np.max(np.abs(covmean.imag)):.3g}; are the inputs covariances?')
        covmean = covmean.real
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * np.trace(covmean))


def kid(feats_a, feats_b, n_subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance: mean and std over random subsets of the unbiased MMD^2
    with the cubic kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018)."""
    a = np.asarray(feats_a, dtype=np.float64)
    b = np.asarray(feats_b, dtype=np.float64)
    m = min(subset_size, len(a), len(b))  # the usual cap when a set is small
    if m < 2:
        raise ValueError('KID needs at least 2 samples in each set')
    d = a.shape[1]
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n_subsets):
        x = a[rng.choice(len(a), m, replace=False)]
        y = b[rng.choice(len(b), m, replace=False)]
        kxx = (x @ x.T / d + 1) ** 3
        kyy = (y @ y.T / d + 1) ** 3
        kxy = (x @ y.T / d + 1) ** 3
        # Unbiased: the diagonals k(x_i, x_i) are left out of the within-set means.
        within = (kxx.sum() - np.trace(kxx) + kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        values.append(within - 2 * kxy.mean())
    return float(np.mean(values)), float(np.std(values))


def inception_score(probs, splits=10):
    """Inception Score: mean and std over `splits` chunks of exp(E_x KL(p(y|x) || p(y)))."""
    probs = np.asarray(probs, dtype=np.float64)
    scores = []
    for part in np.array_split(probs, splits):
        p_y = part.mean(axis=0, keepdims=True)
        # 0 * log 0 = 0 (xlogy), so one-hot predictions are fine.
        kl = (xlogy(part, part) - xlogy(part, p_y)).sum(axis=1).mean()
        scores.append(np.exp(kl))
    return float(np.mean(scores)), float(np.std(scores))


def _block_rows(n_cols, max_elements=2 ** 25):
    # Rows per block so that one block of distances (rows x n_cols float32) stays
    # near 128 MB: 50k x 50k never exists at once.
    return max(1, max_elements // max(1, n_cols))


def _sq_dists(a, b, b_sq):
    """Squared Euclidean distances between the rows of a and b (float32)."""
    a_sq = np.einsum('ij,ij->i', a, a)
    return np.maximum(a_sq[:, None] + b_sq[None, :] - 2 * (a @ b.T), 0)


def _knn_sq_radii(feats, k):
    """Squared distance from each row to its k-th nearest neighbour, excluding itself."""
    sq = np.einsum('ij,ij->i', feats, feats)
    rows = _block_rows(len(feats))
    radii = np.empty(len(feats), np.float32)
    for i in range(0, len(feats), rows):
        d = _sq_dists(feats[i:i + rows], feats, sq)
        # Index 0 of the sorted row is the point itself (distance 0), so index k is
        # the k-th neighbour.
        radii[i:i + rows] = np.partition(d, k, axis=1)[:, k]
    return radii


def _coverage(query, ref, ref_sq_radii):
    """Fraction of query rows inside at least one ball around a reference row."""
    sq = np.einsum('ij,ij->i', ref, ref)
    rows = _block_rows(len(ref))
    inside = 0
    for i in range(0, len(query), rows):
        d = _sq_dists(query[i:i + rows], ref, sq)
        inside += int(np.any(d <= ref_sq_radii[None, :], axis=1).sum())
    return inside / len(query)


def precision_recall(real_feats, fake_feats, k=3):
    """Improved precision and recall (Kynkaanniemi et al. 2019).

    Each set's manifold is the union of balls around its points with radius = distance
    to the k-th nearest neighbour. Precision is the fraction of fakes on the real
    manifold; recall the fraction of reals on the fake manifold. Computed in float32
    row blocks so 50k x 2048 features fit in memory.
    """
    real = np.asarray(real_feats, dtype=np.float32)
    fake = np.asarray(fake_feats, dtype=np.float32)
    if min(len(real), len(fake)) <= k:
        raise ValueError(f'precision/recall with k={k} needs more than {k} samples per set')
    precision = _coverage(fake, real, _knn_sq_radii(real, k))
    recall = _coverage(real, fake, _knn_sq_radii(fake, k))
    return precision, recall


# ---------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------

def fake_uint8(images):
    """Generator output in [-1, 1] -> uint8 as the authors' PNGs store it.

    clip(x * 127.5 + 127.5, 0, 255) in float32, then a cast that TRUNCATES (254.9 -> 254),
    as the authors' `np.clip(deprocess(x), 0, 255).astype('uint8')` before PIL saves the
    PNG. This is a shift of about -0.5/255 against rounding; it is kept so that our
    in-training FIDs match theirs. NaN (a diverged generator) becomes 0.
    """
    x = np.asarray(images, dtype=np.float32) * np.float32(127.5) + np.float32(127.5)
    x = np.clip(np.nan_to_num(x, nan=0.0), 0, 255)
    return x.astype(np.uint8)


def list_images(pattern):
    """Sorted image files matching a glob pattern (or inside a directory)."""
    if os.path.isdir(pattern):
        pattern = os.path.join(pattern, '**', '*')
    paths = [p for p in glob.glob(pattern, recursive=True)
             if p.lower().endswith(IMAGE_EXTENSIONS) and os.path.isfile(p)]
    if not paths:
        raise FIDError(f'no image files ({", ".join(IMAGE_EXTENSIONS)}) match {pattern!r}')
    return sorted(paths)


def select_files(paths, n, seed, what='images'):
    """n files drawn without replacement with a seeded shuffle; n='all' (or None): all.

    Like the authors' list_files(seed=42).take(n), but not the same order as tf.data.
    """
    if n in (None, 'all'):
        return list(paths)
    n = int(n)
    if n > len(paths):
        raise FIDError(f'asked for {n} {what} but only {len(paths)} were found')
    order = np.random.default_rng(seed).permutation(len(paths))[:n]
    return [paths[i] for i in sorted(order)]


def load_images(paths, batch_size=50, img_size=None, resize_method='bilinear'):
    """Yield uint8 (B, H, W, 3) batches of the image files, in order.

    Grayscale is repeated to RGB and alpha dropped. With img_size, images of another
    size are resized (tf.image.resize, no antialias, as the authors) and rounded to
    uint8, as if the data set had been stored resized; the authors' monitor keeps the
    resized floats (a difference of at most 0.5/255). Without img_size, all images in
    a batch must share one size.
    """
    # TODO: reuse utils.decode_uint8_images (the project's data pipeline, written
    # concurrently; it always resizes, so fakes of unknown size need img_size first).
    import tensorflow as tf

    def decode(path):
        img = tf.io.decode_image(tf.io.read_file(path), channels=0, expand_animations=False)
        channels = tf.shape(img)[-1]
        img = tf.cond(channels < 3, lambda: tf.tile(img[..., :1], [1, 1, 3]),
                      lambda: img[..., :3])
        if img_size:
            size = tf.shape(img)[:2]
            img = tf.cond(
                tf.reduce_all(size == img_size), lambda: img,
                lambda: tf.cast(tf.clip_by_value(tf.round(tf.image.resize(
                    img, [img_size, img_size], method=resize_method)), 0, 255), tf.uint8))
        return img

    ds = tf.data.Dataset.from_tensor_slices(list(paths))
    ds = ds.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    batch = []
    try:
        for img in ds.prefetch(tf.data.AUTOTUNE).as_numpy_iterator():
            if batch and img.shape != batch[0].shape:
                raise FIDError(f'images have different sizes ({batch[0].shape[1]}x'
                               f'{batch[0].shape[0]} and {img.shape[1]}x{img.shape[0]}); '
                               'pass --img_size to resize them')
            batch.append(img)
            if len(batch) == batch_size:
                yield np.stack(batch)
                batch = []
    except tf.errors.OpError as e:
        raise FIDError(f'cannot read an image: {e.message.splitlines()[0]}') from None
    if batch:
        yield np.stack(batch)


# ---------------------------------------------------------------------------------------
# Feature extractors: callables uint8 (B, H, W, 3) -> {'features': (B, 2048), ...}
# ---------------------------------------------------------------------------------------

class KerasInception:
    """keras.applications.InceptionV3, average-pooled: the authors' in-training monitor.

    weights: 'imagenet' (Keras downloads/caches it), a path to the notop .h5 file, or None
    (random weights, for tests). Images are resized to 299x299 (bilinear, no antialias,
    as the authors' Resizing layer) and scaled by inception_v3.preprocess_input.
    """
    outputs = ('features',)

    def __init__(self, weights='imagenet', jit_compile=True):
        import keras
        if weights not in ('imagenet', None) and not os.path.isfile(weights):
            raise FIDUnavailable(f'Keras InceptionV3 weights file not found: {weights}')
        try:
            self.model = keras.applications.InceptionV3(
                include_top=False, pooling='avg', weights=weights)
        except Exception as e:  # keras wraps the download error in a bare Exception
            reason = (str(e).strip().splitlines() or [type(e).__name__])[-1][:200]
            if weights is None:
                raise
            if weights != 'imagenet':
                raise FIDUnavailable(f'cannot load Keras InceptionV3 weights {weights}: '
                                     f'{reason}') from None
            keras_dir = os.environ.get('KERAS_HOME', os.path.join('~', '.keras'))
            raise FIDUnavailable(
                f'cannot get the Keras InceptionV3 ImageNet weights ({reason}); put '
                f'{KERAS_WEIGHTS_FILE} in {os.path.join(keras_dir, "models")}/ or pass '
                'its path (--inception_path)') from None
        if weights is None:
            self.name = f'keras-inceptionv3-random-{uuid.uuid4().hex}'  # never cached
        elif weights == 'imagenet':
            self.name = 'keras-inceptionv3-imagenet'
        else:
            self.name = f'keras-inceptionv3-{_file_id(weights)}'
        self._jit = jit_compile
        self._fn = None

    def _forward(self, images):
        import tensorflow as tf
        import keras
        x = tf.image.resize(tf.cast(images, tf.float32), [299, 299], method='bilinear')
        x = keras.applications.inception_v3.preprocess_input(x)
        return self.model(x, training=False)

    def __call__(self, images):
        import tensorflow as tf
        if self._fn is None:
            # XLA on the first call; if this backend cannot compile it, plain graph mode.
            try:
                fn = tf.function(self._forward, jit_compile=self._jit)
                out = fn(images)
                self._fn = fn
                return {'features': out.numpy()}
            except Exception:
                if not self._jit:
                    raise
                self._fn = tf.function(self._forward)
        return {'features': self._fn(images).numpy()}


class TF2015Inception:
    """The 2015 TensorFlow Inception graph of the TTUR FID code (pytorch-fid's weights).

    Images (any size, 0..255) are fed as float to 'ExpandDims:0'; the graph resizes them
    to 299x299 itself. Outputs: 'features' = pool_3 (B, 2048) and 'logits' = pool_3 @ W
    of 'softmax/logits/MatMul' (1008 classes, no bias), as the OpenAI/TTUR IS code.
    The graph's own Reshape after pool_3 is fixed to batch 1; it is not run, so any
    batch size works.
    """
    outputs = ('features', 'logits')

    def __init__(self, graph_path, input_name='ExpandDims:0', features_name='pool_3:0',
                 matmul_name='softmax/logits/MatMul'):
        import tensorflow as tf
        graph_def = tf.compat.v1.GraphDef()
        try:
            with open(graph_path, 'rb') as f:
                graph_def.ParseFromString(f.read())
        except Exception as e:
            raise FIDUnavailable(f'cannot read the Inception graph {graph_path}: {e}') from None
        names = {node.name for node in graph_def.node}
        for tensor in (input_name, features_name, matmul_name):
            if tensor.split(':')[0] not in names:
                raise FIDError(f'{graph_path} has no node {tensor.split(":")[0]!r}; '
                               f'is it {TF2015_FILE}?')
        self.name = f'tf2015-{_file_id(graph_path)}'

        def forward(images):
            (pool3,) = tf.graph_util.import_graph_def(
                graph_def, input_map={input_name: images}, return_elements=[features_name],
                name='inception')
            graph = tf.compat.v1.get_default_graph()
            weights = graph.get_operation_by_name(f'inception/{matmul_name}').inputs[1]
            features = tf.reshape(pool3, [-1, pool3.shape[-1]])
            return features, tf.matmul(features, weights)

        wrapped = tf.compat.v1.wrap_function(
            forward, [tf.TensorSpec([None, None, None, 3], tf.float32)])
        # Prune to the two outputs so the graph's unused parts (JPEG decoder, its
        # placeholder, the batch-1 Reshape) are not part of the function.
        self._fn = wrapped.prune(wrapped.inputs[0], list(wrapped.outputs))

    def __call__(self, images):
        import tensorflow as tf
        features, logits = self._fn(tf.cast(images, tf.float32))
        return {'features': features.numpy(), 'logits': logits.numpy()}


def _file_id(path):
    # Identifies a weights file in cache keys without hashing hundreds of MB.
    st = os.stat(path)
    return f'{os.path.basename(path)}-{st.st_size}-{st.st_mtime_ns}'


def _download(url, dest):
    """Download url to dest (atomic)."""
    tmp = f'{dest}.part-{os.getpid()}'
    try:
        with urllib.request.urlopen(url, timeout=60) as r, open(tmp, 'wb') as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
        os.replace(tmp, dest)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def get_tf2015_graph(path=None, cache_dir=None):
    """Path of classify_image_graph_def.pb: `path` if given, else the cache, else
    downloaded from TF2015_URL into the cache. Offline -> FIDUnavailable."""
    if path:
        if not os.path.isfile(path):
            raise FIDUnavailable(f'Inception graph not found: {path}')
        return path
    cache_dir = cache_dir or os.path.join(CACHE_ROOT, 'inception-2015-12-05')
    graph = os.path.join(cache_dir, TF2015_FILE)
    if os.path.isfile(graph):
        return graph
    tgz = os.path.join(cache_dir, os.path.basename(TF2015_URL))
    try:
        os.makedirs(cache_dir, exist_ok=True)
        _download(TF2015_URL, tgz)
        with tarfile.open(tgz) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith(TF2015_FILE))
            with tar.extractfile(member) as src, open(graph + '.part', 'wb') as dst:
                dst.write(src.read())
        os.replace(graph + '.part', graph)
        os.remove(tgz)  # 88 MB that is no longer needed
    except (OSError, urllib.error.URLError, tarfile.TarError, StopIteration) as e:
        raise FIDUnavailable(
            f'cannot download the Inception 2015 graph ({type(e).__name__}: {e}); get '
            f'{TF2015_URL}, extract {TF2015_FILE} to {cache_dir}/ or pass '
            '--inception_path FILE') from None
    return graph


def get_extractor(network, weights_path=None, cache_dir=None):
    """'keras' (authors' in-training monitor) or 'tf2015' (published-FID network)."""
    if network == 'keras':
        return KerasInception(weights=weights_path or 'imagenet')
    if network == 'tf2015':
        return TF2015Inception(get_tf2015_graph(weights_path, cache_dir))
    raise FIDError(f"unknown network {network!r}; use 'keras' or 'tf2015'")


def compute_features(batches, extractor, n=None, desc='features'):
    """Run extractor over uint8 batches; concatenate its outputs, keeping the first n.

    Every batch is padded to the first batch's size, so a jit-compiled extractor
    compiles once instead of again for the last, smaller batch.
    """
    chunks, count, size = {}, 0, None
    with tqdm(total=n, desc=desc, unit='img', leave=False) as bar:
        for batch in batches:
            batch = np.asarray(batch)
            if n is not None:
                batch = batch[:n - count]
            b = len(batch)
            size = size or b
            if b < size:
                batch = np.concatenate([batch, np.repeat(batch[-1:], size - b, axis=0)])
            out = extractor(batch)
            out = out if isinstance(out, dict) else {'features': out}
            for key, value in out.items():
                chunks.setdefault(key, []).append(np.asarray(value)[:b])
            count += b
            bar.update(b)
            if n is not None and count >= n:
                break
    if count == 0 or (n is not None and count < n):
        raise FIDError(f'got {count} images, expected {n or "some"}')
    return {key: np.concatenate(value) for key, value in chunks.items()}


# ---------------------------------------------------------------------------------------
# Reference statistics of real images, cached on disk
# ---------------------------------------------------------------------------------------

def stats_key(file_list, n, img_size, network, resize_method):
    """sha1 of everything the real statistics depend on: the files used (sorted, with
    sizes and mtimes, so edits invalidate), n, img_size, resize method and network."""
    files = []
    for path in sorted(file_list):
        st = os.stat(path)
        files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    blob = json.dumps({'version': 1, 'files': files, 'n': n, 'img_size': img_size,
                       'resize': resize_method, 'network': network}, sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def real_stats(file_list, n, img_size, network, extractor, cache_dir, loader=load_images,
               batch_size=50, resize_method='bilinear'):
    """Features, mu and sigma of the first n files of file_list, cached as .npz.

    loader(paths, batch_size, img_size, resize_method) yields uint8 batches. The cache
    file is named by `stats_key`; it is written atomically and reused only when the key
    matches. Returns a dict with features, mu, sigma, path and from_cache.
    """
    if n in (None, 'all'):
        n = len(file_list)
    if n > len(file_list):
        raise FIDError(f'asked for {n} real images but only {len(file_list)} were given')
    files = list(file_list)[:n]
    key = stats_key(files, n, img_size, network, resize_method)
    path = os.path.join(cache_dir, f'real-{key}.npz') if cache_dir else None
    if path and os.path.isfile(path):
        with np.load(path) as data:
            if str(data['key']) == key:
                return {'features': data['features'], 'mu': data['mu'],
                        'sigma': data['sigma'], 'path': path, 'from_cache': True}
    feats = compute_features(loader(files, batch_size, img_size, resize_method), extractor,
                             n=n, desc='real features')['features']
    mu, sigma = feature_stats(feats)
    if path:
        os.makedirs(cache_dir, exist_ok=True)
        # Temp file in the same directory + os.replace: a crash never leaves a
        # half-written file under the final name.
        fd, tmp = tempfile.mkstemp(dir=cache_dir, suffix='.tmp')
        try:
            with os.fdopen(fd, 'wb') as f:
                np.savez(f, features=feats, mu=mu, sigma=sigma, key=key)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    return {'features': feats, 'mu': mu, 'sigma': sigma, 'path': path, 'from_cache': False}


# ---------------------------------------------------------------------------------------
# Generated images and the metrics of one evaluation
# ---------------------------------------------------------------------------------------

def generator_batches(generator, n, batch_size, seed):
    """uint8 batches from a generator g(z, training=False) -> (images, attn)."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, batch_size):
        z = rng.standard_normal((min(batch_size, n - start), generator.noise_dim))
        out = generator(z.astype(np.float32), training=False)
        images = out[0] if isinstance(out, (tuple, list)) else out
        yield fake_uint8(images)


def compute_metrics(real_feats, fake, metrics, seed=0):
    """The requested metrics from real features and fake outputs (features, logits)."""
    fake_feats = fake['features']
    results = {}
    if 'fid' in metrics:
        results['fid'] = frechet_distance(*feature_stats(real_feats), *feature_stats(fake_feats))
    if 'kid' in metrics:
        results['kid_mean'], results['kid_std'] = kid(real_feats, fake_feats, seed=seed)
    if 'is' in metrics:
        logits = fake['logits'].astype(np.float64)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        results['is_mean'], results['is_std'] = inception_score(
            probs / probs.sum(axis=1, keepdims=True))
    if 'pr' in metrics:
        results['precision'], results['recall'] = precision_recall(real_feats, fake_feats)
    return results


class InLoopFID:
    """The authors' in-training monitor (SPEC.md §7), for train.py.

    conf['n_fid_real'] EMA samples (fresh noise each call, as the authors) against as
    many real images listed with seed 42, Keras InceptionV3 features; the real
    statistics are computed once (and cached on disk when cache_dir is given).
    Raises FIDUnavailable when the Keras weights are missing.
    """

    def __init__(self, eval_dir, conf, weights='imagenet', cache_dir=None, seed=42):
        self.n = conf['n_fid_real']
        self.batch_size = conf['fid_batch_size']
        files = select_files(list_images(eval_dir), self.n, seed, 'real images')
        self.extractor = KerasInception(weights=weights)
        self.real = real_stats(files, self.n, conf['img_size'], self.extractor.name,
                               self.extractor, cache_dir, batch_size=self.batch_size)

    def __call__(self, generator):
        batches = generator_batches(generator, self.n, self.batch_size, seed=None)
        fake = compute_features(batches, self.extractor, n=self.n, desc='FID')['features']
        return frechet_distance(self.real['mu'], self.real['sigma'], *feature_stats(fake))


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------

HELP = """\
Networks and protocols:
  --network tf2015  the 2015 TF Inception graph of the TTUR code (pytorch-fid and
                    torch-fidelity use its weights). Use it to compare with published
                    tables: the authors reported pytorch-fid FIDs (e.g. CelebA-64 1.81
                    with 50k samples, FFHQ-128 4.48 with 70k). Needs
                    classify_image_graph_def.pb (downloaded once, or --inception_path).
  --network keras   keras.applications.InceptionV3 (ImageNet): the authors' in-training
                    monitor (2.5k vs 2.5k, picks the best checkpoint). NOT comparable
                    with papers. --inception_path = the notop .h5 weights file.
IS needs class logits, so it is only available with tf2015 (1008-way, as TTUR/OpenAI).
Generated images are quantised like the authors' PNGs (see fake_uint8). Errors print
one line and exit with code 2.
"""


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description='FID/KID/IS/precision-recall of generated images against real ones.',
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--eval_dir', required=True,
                   help='real images: a glob pattern (quote it) or a directory')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--fake_dir', help='generated images: a glob pattern or a directory')
    src.add_argument('--model_dir', help='run directory; samples its EMA generator')
    p.add_argument('--n_fake', default='50000',
                   help="generated images (default 50000; 'all' for all of --fake_dir)")
    p.add_argument('--n_real', default='all', help="real images: a number or 'all' (default)")
    p.add_argument('--metrics', default='fid', help='comma list of fid,kid,is,pr (default fid)')
    p.add_argument('--network', choices=('tf2015', 'keras'), default='tf2015',
                   help='feature network (default tf2015, see below)')
    p.add_argument('--inception_path', help='network file (tf2015 .pb or keras .h5)')
    p.add_argument('--img_size', type=int,
                   help='resize real (and fake) images to this size; default: the fake size')
    p.add_argument('--batch_size', type=int, default=50, help='feature batch size (default 50)')
    p.add_argument('--seed', type=int, default=0,
                   help='seed of the real/fake file selection, the noise and KID subsets')
    p.add_argument('--cache_dir', default=os.path.join(CACHE_ROOT, 'fid-stats'),
                   help='where real statistics are cached (default %(default)s)')
    p.add_argument('--out', help='JSON results file (default for --model_dir: '
                                 'MODEL_DIR/eval-NETWORK.json)')
    return p.parse_args(argv)


def _parse_n(value, name):
    if value in (None, 'all'):
        return 'all'
    try:
        n = int(value)
    except ValueError:
        raise FIDError(f"--{name} must be a number or 'all', got {value!r}") from None
    if n < 2:
        raise FIDError(f'--{name} must be at least 2')
    return n


def run(args):
    """Evaluate; returns the results dict. Inputs are checked before TF is imported."""
    metrics = [m.strip() for m in args.metrics.split(',') if m.strip()]
    unknown = sorted(set(metrics) - set(METRICS))
    if unknown or not metrics:
        raise FIDError(f'unknown metrics {unknown}; choose from {",".join(METRICS)}')
    if 'is' in metrics and args.network != 'tf2015':
        raise FIDError('IS needs class logits: use --network tf2015')
    n_real = _parse_n(args.n_real, 'n_real')
    n_fake = _parse_n(args.n_fake, 'n_fake')
    if n_fake == 'all' and args.model_dir:
        raise FIDError('--n_fake must be a number with --model_dir')
    real_files = select_files(list_images(args.eval_dir), n_real, args.seed, 'real images')
    fake_files = None
    if args.fake_dir:
        fake_files = select_files(list_images(args.fake_dir), n_fake, args.seed, 'fake images')
    elif not os.path.isdir(args.model_dir):
        raise FIDError(f'--model_dir {args.model_dir} is not a directory')
    weights = args.inception_path
    if args.network == 'tf2015':
        weights = get_tf2015_graph(args.inception_path)
    elif weights and not os.path.isfile(weights):
        raise FIDUnavailable(f'Keras InceptionV3 weights file not found: {weights}')

    extractor = get_extractor(args.network, weights)
    if fake_files is not None:
        fake_batches = load_images(fake_files, args.batch_size, args.img_size)
        n_fake = len(fake_files)
    else:
        import utils  # lazily: the training utilities are only needed here
        generator = utils.load_generator(args.model_dir, ema=True)
        fake_batches = generator_batches(generator, n_fake, args.batch_size, args.seed)
    sizes = []
    fake = compute_features(_record_size(fake_batches, sizes), extractor, n=n_fake,
                            desc='fake features')
    img_size = args.img_size or sizes[0]  # real images are resized to the fake size
    real = real_stats(real_files, len(real_files), img_size, extractor.name, extractor,
                      args.cache_dir, batch_size=args.batch_size)
    results = compute_metrics(real['features'], fake, metrics, seed=args.seed)
    results.update({
        'network': args.network, 'n_real': len(real_files), 'n_fake': n_fake,
        'img_size': img_size, 'eval_dir': args.eval_dir, 'fake_dir': args.fake_dir,
        'model_dir': args.model_dir, 'seed': args.seed, 'real_stats': real['path']})
    return results


def _record_size(batches, sizes):
    for batch in batches:
        sizes.append(batch.shape[1])
        yield batch


def main(argv=None):
    args = parse_args(argv)
    try:
        results = run(args)
    except FIDError as e:
        print(f'fid.py: error: {e}', file=sys.stderr)
        return 2
    out = args.out or (os.path.join(args.model_dir, f'eval-{args.network}.json')
                       if args.model_dir else None)
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, 'w') as f:
            f.write(text + '\n')
        print(f'results written to {out}', file=sys.stderr)
    return 0


if __name__ == '__main__':
    sys.exit(main())
