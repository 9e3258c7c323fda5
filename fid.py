"""Evaluating generators: the feature networks, the cached real statistics, the
in-training FID monitor and the CLI (the metric maths is in metrics.py).

Two feature networks, which give numbers that are NOT comparable with each other:

- ``tf2015``: the 2015 TensorFlow Inception graph (``classify_image_graph_def.pb``) read
  at ``pool_3``. It is the network of the TTUR FID code; pytorch-fid and torch-fidelity
  port its weights, and published FID/KID/IS tables use it. Use it for numbers that are
  compared with papers (SPEC.md §7: the authors said they report pytorch-fid numbers).
- ``keras``: ``keras.applications.InceptionV3`` with ImageNet weights, average-pooled,
  299x299 bilinear resize. It is the authors' in-training monitor (2.5k vs 2.5k FID that
  picks the best checkpoint). Its numbers differ from the published protocol.

Images enter the extractors as uint8 NHWC batches (floats in [0, 255] are accepted too).
Generated images in [-1, 1] become uint8 through `utils.to_uint8`, the rule of the
authors' PNG samples (clip, truncate), so in-memory evaluation and evaluation from PNG
files agree. Image files are listed and decoded by data.py (the training pipeline);
generated images come from sampling.py.

TensorFlow is imported inside the functions that need it, and the CLI checks its
arguments before importing TensorFlow, which takes seconds and writes log lines to stderr.

    python fid.py --eval_dir 'data/celeba/*.png' --model_dir runs/celeba --metrics fid,kid
    python fid.py --eval_dir data/shapes --model_dir runs/shapes --per_class  # per class
"""
import argparse
import contextlib
import hashlib
import json
import os
import sys
import tarfile
import urllib.error
import urllib.request
import uuid

import numpy as np
from tqdm import tqdm

import class_metrics
import cli
import metrics
import utils

TF2015_URL = 'http://download.tensorflow.org/models/image/imagenet/inception-2015-12-05.tgz'
TF2015_FILE = 'classify_image_graph_def.pb'
KERAS_WEIGHTS_FILE = 'inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5'
CACHE_ROOT = os.path.join(os.path.expanduser('~'), '.cache', 'ladagan')
# Fewest real images the in-training FID uses when the data has fewer than n_fid_real:
# below it the covariance of 2048 features is too poor an estimate to rank checkpoints.
MIN_FID_IMAGES = 50


class FIDError(Exception):
    """A user-facing error (bad input). The CLI prints it as one line and exits 2."""


class FIDUnavailable(FIDError):
    """FID cannot be computed: the feature network's weights are missing and cannot be
    downloaded, or (in-training FID) there are fewer than MIN_FID_IMAGES real images."""


def _data():
    # data imports TensorFlow (seconds, log lines): only when images are read.
    cli.import_tensorflow()
    import data
    return data


def find_images(pattern):
    """Sorted decodable image files of a glob pattern or directory (data.list_image_files;
    undecodable files are skipped with a warning by data.check_images)."""
    data = _data()
    try:
        return data.check_images(data.list_image_files(pattern))[0]
    except data.DataError as e:
        raise FIDError(str(e)) from None


def select_files(paths, n, seed, what='images'):
    """n files drawn without replacement with a seeded shuffle; n='all' (or None): all.
    More than there are: all of them, saying so in one line on stderr.

    Like the authors' list_files(seed=42).take(n), but not the same order as tf.data.
    """
    if n in (None, 'all'):
        return list(paths)
    n = int(n)
    if n > len(paths):
        print(f'asked for {n} {what} but only {len(paths)} exist: using all {len(paths)}',
              file=sys.stderr)
        return list(paths)
    order = np.random.default_rng(seed).permutation(len(paths))[:n]
    return [paths[i] for i in sorted(order)]


def common_size(paths):
    """The side of square images that all have one size (read from the file headers);
    FIDError naming two files otherwise. For generated images read without --img_size."""
    from PIL import Image
    first = None
    for path in paths:
        try:
            with Image.open(path) as img:
                size = img.size
        except OSError as e:
            raise FIDError(f'cannot read {path}: {e}') from None
        if first is None:
            first = (path, size)
        if size != first[1] or size[0] != size[1]:
            sizes = f'{first[1][0]}x{first[1][1]} ({first[0]})'
            if size != first[1]:
                sizes += f' and {size[0]}x{size[1]} ({path})'
            raise FIDError(f'generated images must be square and of one size, got {sizes}; '
                           'pass --img_size N to resize them')
    if first is None:
        raise FIDError('no generated images')
    return first[1][0]


def read_images(paths, img_size, batch_size=50, antialias=False, crop='none'):
    """Yield uint8 (B, img_size, img_size, 3) batches of the image files, in order.

    data.decode_uint8_images: the training pipeline's decoding (gray -> RGB, alpha
    dropped, EXIF orientation), crop ('none' or 'center', as config's crop) and bilinear
    resize when an image is not img_size x img_size (no antialias unless asked, as the
    authors), rounded to uint8 as if the data set had been stored resized (the authors'
    monitor keeps the resized floats: at most 0.5/255 apart).
    """
    data = _data()
    import tensorflow as tf
    try:
        yield from data.decode_uint8_images(list(paths), img_size, batch_size, antialias,
                                            crop)
    except data.DataError as e:
        raise FIDError(str(e)) from None
    except tf.errors.OpError as e:
        raise FIDError(f'cannot read an image: {e.message.splitlines()[0]}') from None


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
                'its path (train.py --inception_weights, fid.py --inception_path)') from None
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
    with utils.atomic_write(dest) as tmp, \
            urllib.request.urlopen(url, timeout=60) as r, open(tmp, 'wb') as f:
        while chunk := r.read(1 << 20):
            f.write(chunk)


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
            with tar.extractfile(member) as src, utils.atomic_write(graph) as tmp:
                with open(tmp, 'wb') as dst:
                    dst.write(src.read())
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

def stats_key(file_list, n, img_size, network, resize_method, crop='none'):
    """sha1 of everything the real statistics depend on: the files used (sorted, with
    sizes and mtimes, so edits invalidate), n, img_size, resize method, crop and network.
    'version' changes with the image decoding (2: data.decode_uint8_images; 3: EXIF
    orientation applied)."""
    files = []
    for path in sorted(file_list):
        st = os.stat(path)
        files.append([os.path.abspath(path), st.st_size, st.st_mtime_ns])
    blob = json.dumps({'version': 3, 'files': files, 'n': n, 'img_size': img_size,
                       'resize': resize_method, 'crop': crop, 'network': network},
                      sort_keys=True)
    return hashlib.sha1(blob.encode()).hexdigest()


def real_stats(file_list, n, img_size, network, extractor, cache_dir, loader=read_images,
               batch_size=50, antialias=False, crop='none'):
    """Features, mu and sigma of the first n files of file_list, cached as .npz.

    loader(paths, img_size, batch_size, antialias, crop) yields uint8 batches. The cache
    file is named by `stats_key`; it is written atomically and reused only when the key
    matches. Returns a dict with features, mu, sigma, path and from_cache.
    """
    if n in (None, 'all'):
        n = len(file_list)
    if n > len(file_list):
        raise FIDError(f'asked for {n} real images but only {len(file_list)} were given')
    files = list(file_list)[:n]
    resize = 'bilinear-antialias' if antialias else 'bilinear'
    key = stats_key(files, n, img_size, network, resize, crop)
    path = os.path.join(cache_dir, f'real-{key}.npz') if cache_dir else None
    if path and os.path.isfile(path):
        with np.load(path) as data:
            if str(data['key']) == key:
                return {'features': data['features'], 'mu': data['mu'],
                        'sigma': data['sigma'], 'path': path, 'from_cache': True}
    feats = compute_features(loader(files, img_size, batch_size, antialias, crop),
                             extractor, n=n, desc='real features')['features']
    mu, sigma = metrics.feature_stats(feats)
    if path:
        with utils.atomic_write(path) as tmp:
            np.savez(tmp, features=feats, mu=mu, sigma=sigma, key=key)
    return {'features': feats, 'mu': mu, 'sigma': sigma, 'path': path, 'from_cache': False}


# ---------------------------------------------------------------------------------------
# Generated images and the metrics of one evaluation
# ---------------------------------------------------------------------------------------

def rebatch(batches, size):
    """Regroup a stream of arrays into batches of `size` rows (the last may be smaller)."""
    pending, count = [], 0
    for batch in batches:
        pending.append(batch)
        count += len(batch)
        while count >= size:
            joined = np.concatenate(pending)
            yield joined[:size]
            pending, count = [joined[size:]], count - size
    if count:
        yield np.concatenate(pending)


class InLoopFID:
    """The authors' in-training monitor (SPEC.md §7), for train.py.

    conf['n_fid_real'] EMA samples (fresh noise each call, as the authors) against as
    many real images listed with seed 42, Keras InceptionV3 features. The EMA samples
    come from one XLA program of batch conf['gen_batch_size'] (else fid_batch_size),
    features are computed in batches of conf['fid_batch_size']. The real statistics
    are computed once and cached on disk (cache_dir, keyed by `stats_key`: a second run
    reads them); the square root of their covariance is computed once, so each call
    takes the 'eigh' FID (agrees with sqrtm to < 1e-6 relative, much faster).
    Fewer real images than n_fid_real: all of them against as many samples (one line
    printed); fewer than MIN_FID_IMAGES then: FIDUnavailable. Raises FIDUnavailable
    when the Keras weights are missing. A conditional conf (n_classes > 0): the samples'
    labels are drawn with the frequencies of class_counts (n_classes counts; None:
    uniform), seeded like the noise; the real statistics are those of all eval images.
    """

    def __init__(self, eval_dir, conf, weights='imagenet', cache_dir=None, seed=42,
                 class_counts=None):
        self.class_counts = class_metrics.checked_counts(conf.get('n_classes', 0), class_counts)
        self.batch_size = conf['fid_batch_size']
        self.gen_batch_size = conf.get('gen_batch_size') or self.batch_size
        found = find_images(eval_dir)
        self.n = _in_loop_n(len(found), conf['n_fid_real'], eval_dir)
        files = select_files(found, self.n, seed, 'real images')
        self.extractor = KerasInception(weights=weights)
        self.real = real_stats(files, self.n, conf['img_size'], self.extractor.name,
                               self.extractor, cache_dir, batch_size=self.batch_size,
                               antialias=bool(conf.get('antialias', False)),  # as training
                               crop=conf.get('crop', 'none'))
        self.sqrt_sigma_real = metrics.sqrt_psd(self.real['sigma'])
        self.sampler = None

    def __call__(self, generator, seed=None):
        """FID of n samples of generator; seed None (training): fresh noise every call."""
        if self.sampler is None or self.sampler.generator is not generator:
            import sampling
            self.sampler = sampling.FakeSampler(generator, self.gen_batch_size)
        labels = class_metrics.draw_labels(self.n, self.class_counts, seed)
        batches = rebatch(self.sampler.batches(self.n, seed, labels=labels), self.batch_size)
        fake = compute_features(batches, self.extractor, n=self.n, desc='FID')['features']
        return metrics.frechet_distance(self.real['mu'], self.real['sigma'],
                                        *metrics.feature_stats(fake), method='eigh',
                                        sqrt_sigma1=self.sqrt_sigma_real)


def _in_loop_n(n_found, n_fid_real, eval_dir):
    """How many real images (and samples) the in-training FID uses."""
    if n_found >= n_fid_real:
        return n_fid_real
    if n_found < MIN_FID_IMAGES:
        raise FIDUnavailable(f'only {n_found} real images in {eval_dir}, fewer than the '
                             f'{MIN_FID_IMAGES} an FID needs (fid.MIN_FID_IMAGES)')
    print(f'FID: {n_found} real images in {eval_dir}, fewer than n_fid_real={n_fid_real}: '
          f'using all {n_found} against {n_found} samples')
    return n_found


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------

HELP = """\
Which numbers compare with which published tables:
  --network tf2015  (default) the 2015 TensorFlow Inception graph
                    (classify_image_graph_def.pb from inception-2015-12-05.tgz), pool_3
                    features, images fed as uint8 at their own size and resized inside
                    the graph. It is the network of the TTUR FID code, whose weights
                    pytorch-fid and torch-fidelity port, and of published FID tables.
                    Use it with --n_fake 50000 --n_real all to compare with papers, up
                    to small implementation differences. The LadaGAN paper's FIDs come
                    from pytorch-fid (CelebA-64 1.81 with 50k samples, FFHQ-128 4.48 with
                    70k, LSUN Bedroom-128 5.08 with 30k); which real images the authors
                    used for the reference statistics is not published, so expect
                    approximate agreement only. The file is downloaded once when online;
                    offline, put it in ~/.cache/ladagan/inception-2015-12-05/ or pass
                    --inception_path.
  --network keras   keras.applications.InceptionV3 (ImageNet weights), average-pooled,
                    299x299 bilinear: the authors' in-training monitor (train.py: 2,500
                    EMA samples vs 2,500 real images; picks the best checkpoint). A
                    different network and protocol: NOT comparable with published
                    tables, only with other runs measured the same way.
                    --inception_path = the notop .h5 weights file.
Metrics (all on the features of --network):
  fid  Frechet distance. --fid_method sqrtm (default): scipy.linalg.sqrtm of S1 S2,
       as TTUR and pytorch-fid; eigh: eigenvalues of S1^1/2 S2 S1^1/2, used by the
       training monitor; they agree to better than 1e-6 relative, eigh is faster.
  kid  unbiased MMD^2, cubic kernel, 100 subsets of 1000 (the estimator of Binkowski
       et al. and StyleGAN2-ADA's kid; papers often print it x 1000).
  is   Inception Score, 10 splits of the 1008-way softmax: tf2015 only (as OpenAI's and
       TTUR's code).
  pr   precision/recall, k=3 (Kynkaanniemi et al. 2019) on the Inception features;
       the published ones of StyleGAN2's metric code (used by GANformer) take VGG-16
       features instead, so compare these only between runs.
Real images are resized (bilinear) to the generated size; published protocols store
the data set at the model's resolution beforehand. Real statistics are cached in
--cache_dir (train.py's monitor uses the same directory by default), keyed by the file
list (paths, sizes, mtimes), N, image size, resize and network. Generated images are
quantised as the authors' PNG samples (utils.to_uint8). Errors print one line and
exit with code 2.
"""

DEFAULT_STATS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), '.cache', 'fid')


def parse_args(argv=None):
    p = cli.Parser(
        prog='fid.py', error_prefix='fid.py: error',
        description='FID/KID/IS/precision-recall/SWD of generated images against real ones.',
        epilog=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--eval_dir', required=True,
                   help='real images: a glob pattern (quote it) or a directory')
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument('--fake_dir', help='generated images: a glob pattern or a directory')
    src.add_argument('--model_dir', help='run directory; samples its EMA generator')
    p.add_argument('--n_fake', default='50000',
                   help="generated images (default 50000; 'all' for all of --fake_dir)")
    p.add_argument('--n_real', default='all', help="real images: a number or 'all' (default)")
    p.add_argument('--metrics', default='fid',
                   help='comma list of fid,kid,is,pr,swd (default fid); swd (sliced '
                        'Wasserstein distance on image patches) needs no network: offline, '
                        'it is still computed and the others are listed under '
                        '"not_computed" (exit status 1)')
    p.add_argument('--network', choices=('tf2015', 'keras'), default='tf2015',
                   help='feature network (default tf2015, see below)')
    p.add_argument('--inception_path', help='network file (tf2015 .pb or keras .h5)')
    p.add_argument('--fid_method', choices=metrics.FID_METHODS, default='sqrtm',
                   help='how the FID trace term is computed (default sqrtm, see below)')
    p.add_argument('--img_size', type=cli.positive_int,
                   help='resize real images and --fake_dir images to this size; default: '
                        'the generated size (--fake_dir images must then share one size)')
    p.add_argument('--batch_size', type=cli.positive_int, default=50,
                   help='feature and sampling batch size (default 50)')
    p.add_argument('--seed', type=cli.seed, default=0,
                   help='seed of the real/fake file selection, the noise and KID subsets')
    p.add_argument('--cache_dir', default=DEFAULT_STATS_DIR,
                   help='where real statistics are cached (default %(default)s)')
    p.add_argument('--out', help='JSON results file (default for --model_dir: '
                                 'MODEL_DIR/eval-NETWORK.json)')
    p.add_argument('--per_class', action='store_true', help='a conditional --model_dir: '
                   'also the --metrics but IS of each class against its reals (classes from '
                   '--eval_dir/CLASS/ folders or --labels), with as many fakes (at most '
                   '--n_fake); a table on stderr, "per_class" in the JSON (class_metrics.py)')
    p.add_argument('--labels', metavar='FILE', help='--per_class: the real classes from a '
                   'labels file (CSV rows path,class or JSON {path: class}; see data.py)')
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
    """Evaluate; returns the results dict. Arguments are checked before TF is imported."""
    wanted = [m.strip() for m in args.metrics.split(',') if m.strip()]
    unknown = sorted(set(wanted) - set(metrics.METRICS))
    if unknown or not wanted:
        raise FIDError(f'unknown metrics {unknown}; choose from {",".join(metrics.METRICS)}')
    if 'is' in wanted and args.network != 'tf2015':
        raise FIDError('IS needs class logits: use --network tf2015')
    n_real = _parse_n(args.n_real, 'n_real')
    n_fake = _parse_n(args.n_fake, 'n_fake')
    if n_fake == 'all' and args.model_dir:
        raise FIDError('--n_fake must be a number with --model_dir')
    if args.model_dir and not os.path.isdir(args.model_dir):
        raise FIDError(f'--model_dir {args.model_dir} is not a directory')
    classes = class_metrics.check(args)  # --per_class: the real classes, before any work
    real_files = select_files(find_images(args.eval_dir), n_real, args.seed, 'real images')
    fake_files = img_size = None
    if args.fake_dir:
        fake_files = select_files(find_images(args.fake_dir), n_fake, args.seed, 'fake images')
        img_size = args.img_size or common_size(fake_files)
    needs_network = any(m != 'swd' for m in wanted)
    weights, unavailable = args.inception_path, None
    try:
        if needs_network and args.network == 'tf2015':
            weights = get_tf2015_graph(args.inception_path)
        elif needs_network and weights and not os.path.isfile(weights):
            raise FIDUnavailable(f'Keras InceptionV3 weights file not found: {weights}')
    except FIDUnavailable as e:
        if 'swd' not in wanted:
            raise
        # Offline: the metrics that need no network are still worth computing.
        unavailable, needs_network = str(e), False

    results = {'n_real': len(real_files), 'n_fake': n_fake, 'eval_dir': args.eval_dir,
               'fake_dir': args.fake_dir, 'model_dir': args.model_dir, 'seed': args.seed}
    if fake_files is not None:
        fake_batches = read_images(fake_files, img_size, args.batch_size)
        results['n_fake'] = n_fake = len(fake_files)
    else:
        import checkpoints
        import sampling
        try:
            generator = checkpoints.load_generator(args.model_dir, ema=True)
        except checkpoints.CheckpointError as e:
            raise FIDError(str(e)) from None
        labels = class_metrics.fake_labels(generator, args.model_dir, n_fake, args.seed, results)
        fake_batches = sampling.FakeSampler(generator, args.batch_size).batches(
            n_fake, args.seed, labels=labels)
    sizes = []
    fake_batches = _record_size(fake_batches, sizes)
    if 'swd' in wanted:  # SWD needs the pixels: keep the generated images
        fake_batches = list(tqdm(fake_batches, desc='generated images', unit='batch'))
    if needs_network:
        try:
            extractor = get_extractor(args.network, weights)
        except FIDUnavailable as e:
            if 'swd' not in wanted:
                raise
            unavailable, needs_network = str(e), False
    if unavailable:
        results['not_computed'] = {'metrics': [m for m in wanted if m != 'swd'],
                                   'reason': unavailable}
    real, real_images = None, None
    if needs_network:
        fake = compute_features(iter(fake_batches), extractor, n=n_fake, desc='fake features')
        img_size = img_size or args.img_size or sizes[0]  # reals resized to the fake size
        real = real_stats(real_files, len(real_files), img_size, extractor.name, extractor,
                          args.cache_dir, batch_size=args.batch_size)
        with _hint_more_images():
            results.update(metrics.compute_metrics(real['features'], fake, wanted,
                                                   seed=args.seed, fid_method=args.fid_method))
        results.update({'network': args.network, 'fid_method': args.fid_method,
                        'real_stats': real['path'], 'real_stats_cached': real['from_cache']})
    if 'swd' in wanted:
        img_size = img_size or args.img_size or sizes[0]
        real_images = np.concatenate(list(read_images(real_files, img_size, args.batch_size)))
        with _hint_more_images():
            results.update(metrics.swd(real_images, np.concatenate(fake_batches),
                                       seed=args.seed))
    results['img_size'] = int(img_size)
    if classes:  # with the real features and images of above; prints a table
        results['per_class'] = class_metrics.evaluate(
            generator, classes, real_files, wanted, args, real and real['features'],
            real_images, needs_network and (lambda batches, n, desc: compute_features(
                batches, extractor, n=n, desc=desc)))
    return results


@contextlib.contextmanager
def _hint_more_images():
    """A set too small for a metric: the error names the flags that give it more images."""
    try:
        yield
    except metrics.TooFewSamples as e:
        raise FIDError(f'{e}; evaluate more images: --n_fake N (with --fake_dir, a folder '
                       'holding more files) and --n_real N or all') from None


def _record_size(batches, sizes):
    for batch in batches:
        sizes.append(batch.shape[1])
        yield batch


def main(argv=None):
    args = parse_args(argv)
    cli.quiet(args.verbose)
    out = _out_path(args)
    try:
        if out:  # before the evaluation, which may take hours
            cli.check_writable(out, 'the results')
        with cli.ctrl_c_stays_an_interrupt():
            results = run(args)
    except (FIDError, metrics.MetricError, cli.UsageError) as e:
        return cli.fail(e, prefix='fid.py: error')
    except KeyboardInterrupt:
        return cli.interrupted('fid.py', 'no results written (real statistics are cached only '
                               'when complete); rerun the same command to start again')
    if 'not_computed' in results:
        skipped = results['not_computed']
        print(f"fid.py: warning: {', '.join(skipped['metrics'])} not computed (exit status 1): "
              f"{skipped['reason']}", file=sys.stderr)
    text = json.dumps(results, indent=2)
    print(text)
    if out:
        utils.write_text(out, text + '\n')
        print(f'results written to {out}', file=sys.stderr)
    return 1 if 'not_computed' in results else 0


def _out_path(args):
    """--out, else MODEL_DIR/eval-NETWORK.json (eval-swd.json for SWD alone)."""
    if args.out or not (args.model_dir and os.path.isdir(args.model_dir)):
        return args.out
    name = 'swd' if args.metrics.strip() == 'swd' else args.network
    return os.path.join(args.model_dir, f'eval-{name}.json')


if __name__ == '__main__':
    sys.exit(main())
