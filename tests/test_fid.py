"""Tests of fid.py: every metric against an independent computation, the feature networks
on small stand-ins, the statistics cache and the CLI's errors. Nothing is downloaded.

Tolerances: float64 metrics agree to 1e-6 relative; features from float32 graphs to 1e-5.
"""
import json
import os
import subprocess
import sys
import urllib.error

import numpy as np
import pytest
from PIL import Image
from scipy import linalg

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import fid  # noqa: E402
import metrics  # noqa: E402
import sampling  # noqa: E402

# ---------------------------------------------------------------------------------------
# FID
# ---------------------------------------------------------------------------------------


def test_fid_matches_closed_form_for_diagonal_gaussians():
    rng = np.random.default_rng(0)
    mu1, mu2 = rng.normal(size=16), rng.normal(size=16)
    s1, s2 = rng.uniform(0.1, 3, 16), rng.uniform(0.1, 3, 16)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    got = metrics.frechet_distance(mu1, np.diag(s1), mu2, np.diag(s2))
    assert got == pytest.approx(expected, rel=1e-9)


def _fid_by_eigh(x, y):
    # Independent of sqrtm: Tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)).
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    w, v = linalg.eigh(s1)
    root1 = v @ np.diag(np.sqrt(np.clip(w, 0, None))) @ v.T
    tr_covmean = np.sum(np.sqrt(np.clip(linalg.eigvalsh(root1 @ s2 @ root1), 0, None)))
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * tr_covmean


def test_fid_matches_numpy_on_random_features_and_is_symmetric():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(400, 32))
    y = rng.normal(size=(300, 32)) @ rng.normal(size=(32, 32)) * 0.5 + 0.3
    d_xy = metrics.frechet_distance(*metrics.feature_stats(x), *metrics.feature_stats(y))
    d_yx = metrics.frechet_distance(*metrics.feature_stats(y), *metrics.feature_stats(x))
    assert d_xy == pytest.approx(_fid_by_eigh(x, y), rel=1e-6)
    assert d_xy == pytest.approx(d_yx, rel=1e-6)
    assert d_xy > 1


def test_fid_of_identical_sets_is_zero():
    x = np.random.default_rng(2).normal(size=(200, 64))
    mu, sigma = metrics.feature_stats(x)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma)) < 1e-6


def test_feature_stats_are_float64_mean_and_covariance():
    x = np.random.default_rng(3).normal(size=(50, 4)).astype(np.float32)
    mu, sigma = metrics.feature_stats(x)
    assert mu.dtype == sigma.dtype == np.float64
    np.testing.assert_allclose(mu, x.astype(np.float64).mean(0), rtol=1e-12)
    centred = x.astype(np.float64) - mu
    np.testing.assert_allclose(sigma, centred.T @ centred / 49, rtol=1e-12)


def test_fid_adds_eps_when_sqrtm_is_not_finite(monkeypatch):
    calls = []
    real_sqrtm = metrics.linalg.sqrtm

    def flaky_sqrtm(a):
        calls.append(a)
        return np.full_like(a, np.nan) if len(calls) == 1 else real_sqrtm(a)

    monkeypatch.setattr(metrics.linalg, 'sqrtm', flaky_sqrtm)
    s1, s2 = np.array([1.0, 2.0]), np.array([3.0, 0.5])
    eps = 1e-2
    with pytest.warns(RuntimeWarning, match='not finite'):
        got = metrics.frechet_distance(np.zeros(2), np.diag(s1), np.zeros(2), np.diag(s2), eps=eps)
    expected = np.sum(s1 + s2 - 2 * np.sqrt((s1 + eps) * (s2 + eps)))
    assert len(calls) == 2 and got == pytest.approx(expected, rel=1e-9)


def test_fid_rejects_large_imaginary_parts():
    # diag(1, -1) is not a covariance: its square root is imaginary.
    with pytest.raises(ValueError, match='imaginary'):
        metrics.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2))


def _power_law_features(rng, n, d, decay=1.3, scale=5.0, shift=None):
    """Inception-like features: a power-law covariance spectrum in a random basis,
    non-negative after a ReLU (pool_3 averages ReLU outputs)."""
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    spectrum = scale * np.arange(1, d + 1) ** -decay
    shift = np.abs(rng.normal(0.3, 0.2, d)) if shift is None else shift
    return np.maximum((rng.normal(size=(n, d)) * np.sqrt(spectrum)) @ basis + shift, 0)


@pytest.mark.parametrize('seed,d,n1,n2', [(0, 96, 400, 300), (1, 128, 1000, 100),
                                          (2, 64, 5000, 70)])
def test_fid_eigh_agrees_with_sqrtm_on_random_covariances(seed, d, n1, n2):
    rng = np.random.default_rng(seed)
    x = _power_law_features(rng, n1, d)
    y = _power_law_features(rng, n2, d) * 1.1
    s_x, s_y = metrics.feature_stats(x), metrics.feature_stats(y)
    ref = metrics.frechet_distance(*s_x, *s_y, method='sqrtm')
    got = metrics.frechet_distance(*s_x, *s_y, method='eigh')
    assert got == pytest.approx(ref, rel=1e-6)
    assert got == pytest.approx(_fid_by_eigh(x, y), rel=1e-9)
    # The square root of the fixed covariance can be computed once.
    root = metrics.sqrt_psd(s_x[1])
    np.testing.assert_allclose(root @ root, s_x[1], rtol=0, atol=1e-9 * np.abs(s_x[1]).max())
    assert metrics.frechet_distance(*s_x, *s_y, method='eigh', sqrt_sigma1=root) == got
    # Swapping the sets gives the same distance.
    assert metrics.frechet_distance(*s_y, *s_x, method='eigh') == pytest.approx(got, rel=1e-6)


def test_fid_eigh_agrees_with_sqrtm_on_singular_covariances():
    # 40 samples in 64 dimensions: both covariances have rank 39.
    rng = np.random.default_rng(20)
    mix = rng.normal(size=(64, 64))
    x = rng.normal(size=(40, 64)) @ mix
    y = rng.normal(size=(40, 64)) @ mix * 0.8 + 0.3
    s_x, s_y = metrics.feature_stats(x), metrics.feature_stats(y)
    assert np.linalg.matrix_rank(s_x[1]) == 39
    ref = metrics.frechet_distance(*s_x, *s_y, method='sqrtm')
    assert metrics.frechet_distance(*s_x, *s_y, method='eigh') == pytest.approx(ref, rel=1e-6)
    # Exactly singular diagonal covariances against the closed form.
    s1, s2 = np.array([1.0, 0.0, 2.0, 0.0]), np.array([3.0, 0.5, 0.0, 0.0])
    expected = np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    for method in metrics.FID_METHODS:
        got = metrics.frechet_distance(np.zeros(4), np.diag(s1), np.zeros(4), np.diag(s2),
                                   method=method)
        assert got == pytest.approx(expected, rel=1e-9), method


def test_fid_eigh_rejects_non_covariances_and_unknown_methods():
    with pytest.raises(ValueError, match='not positive semi-definite'):
        metrics.frechet_distance(np.zeros(2), np.diag([1.0, -1.0]), np.zeros(2), np.eye(2),
                             method='eigh')
    with pytest.raises(ValueError, match='not positive semi-definite'):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.diag([1.0, -1.0]),
                             method='eigh')
    with pytest.raises(ValueError, match='unknown FID method'):
        metrics.frechet_distance(np.zeros(2), np.eye(2), np.zeros(2), np.eye(2), method='svd')


@pytest.mark.slow
def test_fid_eigh_agrees_with_sqrtm_at_2048_dimensions():
    # The real size (about a minute of sqrtm on 2 cores): 2,500 vs 2,500 as in training.
    rng = np.random.default_rng(21)
    s_x = metrics.feature_stats(_power_law_features(rng, 2500, 2048))
    s_y = metrics.feature_stats(_power_law_features(rng, 2500, 2048) * 1.05)
    ref = metrics.frechet_distance(*s_x, *s_y, method='sqrtm')
    assert metrics.frechet_distance(*s_x, *s_y, method='eigh') == pytest.approx(ref, rel=1e-6)


# ---------------------------------------------------------------------------------------
# KID, IS, precision/recall
# ---------------------------------------------------------------------------------------


def _mmd2_unbiased_loops(x, y):
    # The textbook estimator written pair by pair.
    m, d = len(x), x.shape[1]

    def k(a, b):
        return (np.dot(a, b) / d + 1) ** 3

    xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m)) / (m * m)
    return xx + yy - 2 * xy


def test_kid_matches_direct_computation_on_one_subset():
    rng = np.random.default_rng(4)
    x = rng.normal(size=(40, 8))
    y = rng.normal(size=(40, 8)) + 0.5
    # subset_size = set size: every subset is a permutation of the whole set.
    mean, std = metrics.kid(x, y, n_subsets=3, subset_size=40)
    assert mean == pytest.approx(_mmd2_unbiased_loops(x, y), rel=1e-9)
    assert std == pytest.approx(0, abs=1e-9)


def test_kid_caps_subset_size_and_is_seeded():
    rng = np.random.default_rng(5)
    x, y = rng.normal(size=(30, 8)), rng.normal(size=(50, 8))
    a = metrics.kid(x, y, n_subsets=5, subset_size=1000, seed=1)
    assert a == metrics.kid(x, y, n_subsets=5, subset_size=1000, seed=1)
    assert a != metrics.kid(x, y, n_subsets=5, subset_size=1000, seed=2)
    # The subset size is capped at the smaller set (30).
    assert a == metrics.kid(x, y, n_subsets=5, subset_size=30, seed=1)
    assert a != metrics.kid(x, y, n_subsets=5, subset_size=29, seed=1)


def test_inception_score_extremes():
    n_classes = 7
    same = np.tile(np.eye(n_classes)[2], (70, 1))
    assert metrics.inception_score(same, splits=10) == pytest.approx((1.0, 0.0), abs=1e-9)
    uniform_onehot = np.eye(n_classes)[np.arange(140) % n_classes]
    mean, std = metrics.inception_score(uniform_onehot, splits=10)
    assert mean == pytest.approx(n_classes, rel=1e-9) and std == pytest.approx(0, abs=1e-9)


def test_inception_score_matches_kl_formula():
    rng = np.random.default_rng(6)
    p = rng.dirichlet(np.ones(5) * 0.5, size=100)
    py = p.mean(0)
    expected = np.exp(np.mean(np.sum(p * np.log(p / py), axis=1)))
    assert metrics.inception_score(p, splits=1)[0] == pytest.approx(expected, rel=1e-9)


def test_precision_recall_identical_and_far_apart():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(300, 64))
    assert metrics.precision_recall(x, x.copy(), k=3) == (1.0, 1.0)
    assert metrics.precision_recall(x, x + 100.0, k=3) == (0.0, 0.0)


def test_precision_recall_against_brute_force_and_in_blocks(monkeypatch):
    rng = np.random.default_rng(8)
    real = rng.normal(size=(120, 5))
    fake = rng.normal(size=(90, 5)) + 1.0
    d_rr = np.linalg.norm(real[:, None] - real[None], axis=-1)
    d_ff = np.linalg.norm(fake[:, None] - fake[None], axis=-1)
    d_fr = np.linalg.norm(fake[:, None] - real[None], axis=-1)
    r_real = np.sort(d_rr, axis=1)[:, 3]
    r_fake = np.sort(d_ff, axis=1)[:, 3]
    precision = np.mean(np.any(d_fr <= r_real[None], axis=1))
    recall = np.mean(np.any(d_fr.T <= r_fake[None], axis=1))
    assert 0.2 < precision < 0.95 and 0.2 < recall < 0.95
    # Tiny blocks: the block loop must give the same answer as one block.
    monkeypatch.setattr(metrics, '_block_rows', lambda n_cols: 7)
    p, r = metrics.precision_recall(real, fake, k=3)
    assert p == pytest.approx(precision, abs=1 / 90 + 1e-9)
    assert r == pytest.approx(recall, abs=1 / 120 + 1e-9)


# ---------------------------------------------------------------------------------------
# uint8 quantisation and image files
# ---------------------------------------------------------------------------------------


class ConstantGenerator:
    """Ignores the noise; returns the first rows of fixed images (TF ops, so it traces)."""

    def __init__(self, images, noise_dim=3):
        self.images, self.noise_dim, self.seen = np.asarray(images, np.float32), noise_dim, []

    def __call__(self, z, training):
        import tensorflow as tf
        assert not training
        self.seen.append(tuple(z.shape))
        return tf.constant(self.images)[:z.shape[0]], []


def test_fakes_are_quantised_as_the_authors_pngs():
    # x*127.5 + 127.5, clipped, then TRUNCATED (the authors' astype('uint8')):
    # 0 -> 127.5 -> 127 and 0.999 -> 254.37 -> 254.
    values = np.array([-2.0, -1.0, 0.0, 0.999, 1.0, 3.0], np.float32)
    gen = ConstantGenerator(np.broadcast_to(values[:, None, None, None], (6, 2, 2, 3)))
    (batch,) = list(sampling.FakeSampler(gen, batch_size=6).batches(6))
    assert batch.dtype == np.uint8
    np.testing.assert_array_equal(batch[:, 0, 0, 0], [0, 0, 127, 254, 255, 255])


def _save_pngs(images, directory):
    os.makedirs(directory, exist_ok=True)
    paths = []
    for i, img in enumerate(images):
        path = os.path.join(directory, f'{i:04d}.png')
        Image.fromarray(img).save(path)
        paths.append(path)
    return paths


def test_read_images_converts_gray_and_rgba_and_resizes(tmp_path):
    rgb = np.random.default_rng(9).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    gray = rgb[..., 0]
    Image.fromarray(gray).save(tmp_path / 'a_gray.png')
    Image.fromarray(np.dstack([rgb, np.full((8, 8), 7, np.uint8)])).save(tmp_path / 'b_rgba.png')
    Image.fromarray(rgb).save(tmp_path / 'c_rgb.png')
    paths = fid.find_images(str(tmp_path / '*.png'))
    (batch,) = list(fid.read_images(paths, 8, batch_size=3))
    assert batch.dtype == np.uint8 and batch.shape == (3, 8, 8, 3)
    np.testing.assert_array_equal(batch[0], np.dstack([gray] * 3))
    np.testing.assert_array_equal(batch[1], rgb)
    np.testing.assert_array_equal(batch[2], rgb)
    # Resize: a constant image stays constant; the batch is 4x4.
    Image.fromarray(np.full((8, 8, 3), 200, np.uint8)).save(tmp_path / 'd_const.png')
    batches = list(fid.read_images([str(tmp_path / 'd_const.png')], 4, batch_size=2))
    np.testing.assert_array_equal(batches[0], np.full((1, 4, 4, 3), 200, np.uint8))


def test_generated_images_of_mixed_sizes_are_rejected(tmp_path):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / 'a.png')
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / 'b.png')
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(tmp_path / 'c.png')
    paths = fid.find_images(str(tmp_path))
    with pytest.raises(fid.FIDError, match=r'one size, got 8x8 .*a.png.* and 16x16 .*b.png'):
        fid.common_size(paths)
    with pytest.raises(fid.FIDError, match=r'square .* got 6x8'):
        fid.common_size(paths[2:])
    assert fid.common_size(paths[:1]) == 8
    # With a size given they are resized.
    assert [b.shape for b in fid.read_images(paths, 8, 3)] == [(3, 8, 8, 3)]


def test_empty_directories_and_bad_files_are_clear_errors(tmp_path):
    (tmp_path / 'empty').mkdir()
    with pytest.raises(fid.FIDError, match='holds no image files'):
        fid.find_images(str(tmp_path / 'empty'))
    with pytest.raises(fid.FIDError, match='No file matches'):
        fid.find_images(str(tmp_path / 'nothing' / '*.png'))
    (tmp_path / 'bad').mkdir()
    (tmp_path / 'bad' / 'x.png').write_bytes(b'not a png')
    with pytest.warns(UserWarning), pytest.raises(fid.FIDError, match='None of the 1'):
        fid.find_images(str(tmp_path / 'bad'))


# ---------------------------------------------------------------------------------------
# Feature networks
# ---------------------------------------------------------------------------------------


def _make_fake_tf2015_graph(path, size=8, dim=2048, seed=0):
    """A GraphDef with the 2015 graph's interface: JPEG decoder -> 'ExpandDims' ->
    resize -> (x-128)/128 -> 1x1 conv to dim -> 'pool_3' (B,1,1,dim) -> a batch-1
    'pool_3/_reshape' -> 'softmax/logits/MatMul' -> 'softmax/logits' -> 'softmax'."""
    import tensorflow as tf
    rng = np.random.default_rng(seed)
    kernel = rng.normal(size=(3, dim)).astype(np.float32)
    weights = (rng.normal(size=(dim, 1008)) * 0.01).astype(np.float32)
    bias = rng.normal(size=1008).astype(np.float32)
    graph = tf.Graph()
    with graph.as_default():
        contents = tf.compat.v1.placeholder(tf.string, [], name='DecodeJpeg/contents')
        x = tf.cast(tf.io.decode_jpeg(contents, channels=3, name='DecodeJpeg'), tf.float32)
        x = tf.expand_dims(x, 0, name='ExpandDims')
        x = tf.raw_ops.ResizeBilinear(images=x, size=[size, size], name='ResizeBilinear')
        x = tf.nn.conv2d((x - 128.0) / 128.0, kernel[None, None], 1, 'VALID')
        pool = tf.nn.avg_pool2d(x, size, size, 'VALID', name='pool_3')
        flat = tf.reshape(pool, [1, dim], name='pool_3/_reshape')  # static batch 1
        logits = tf.matmul(flat, tf.constant(weights, name='softmax/weights'),
                           name='softmax/logits/MatMul')
        tf.nn.softmax(tf.nn.bias_add(logits, bias, name='softmax/logits'), name='softmax')
    with open(path, 'wb') as f:
        f.write(graph.as_graph_def().SerializeToString())
    return kernel, weights


@pytest.fixture(scope='module')
def fake_graph(tmp_path_factory):
    path = str(tmp_path_factory.mktemp('graph') / fid.TF2015_FILE)
    kernel, weights = _make_fake_tf2015_graph(path)
    return path, kernel, weights


@pytest.fixture(scope='module')
def fake_tf2015(fake_graph):
    return fid.TF2015Inception(fake_graph[0])


@pytest.fixture(scope='module')
def small_graph(tmp_path_factory):
    # 64-d features for the end-to-end tests: sqrtm of a 2048x2048 matrix takes about
    # a minute on 2 CPU cores.
    path = str(tmp_path_factory.mktemp('small') / fid.TF2015_FILE)
    _make_fake_tf2015_graph(path, dim=64, seed=1)
    return path, fid.TF2015Inception(path)


def test_tf2015_loader_on_a_small_graph(fake_graph, fake_tf2015):
    _, kernel, weights = fake_graph
    images = np.random.default_rng(10).integers(0, 256, (5, 8, 8, 3), dtype=np.uint8)
    out = fake_tf2015(images)  # batch 5 although the graph's reshape is batch 1
    expected = ((images.astype(np.float64) - 128) / 128).mean(axis=(1, 2)) @ kernel
    assert out['features'].shape == (5, 2048) and out['logits'].shape == (5, 1008)
    np.testing.assert_allclose(out['features'], expected, rtol=1e-5, atol=1e-5)
    # IS logits are pool_3 @ W without the bias, as the TTUR/OpenAI code.
    np.testing.assert_allclose(out['logits'], expected @ weights, rtol=1e-4, atol=1e-5)
    # Images are fed at their own size: the graph resizes them.
    assert fake_tf2015(images[:2, :4, :4])['features'].shape == (2, 2048)
    assert fid.get_extractor('tf2015', fake_graph[0]).name.startswith('tf2015-')


def test_tf2015_rejects_a_graph_without_the_tensors(tmp_path):
    import tensorflow as tf
    graph = tf.Graph()
    with graph.as_default():
        tf.constant(1.0, name='something')
    path = tmp_path / 'other.pb'
    path.write_bytes(graph.as_graph_def().SerializeToString())
    with pytest.raises(fid.FIDError, match='ExpandDims'):
        fid.TF2015Inception(str(path))


@pytest.mark.skipif(not os.environ.get('LADAGAN_INCEPTION_2015'),
                    reason='set LADAGAN_INCEPTION_2015 to classify_image_graph_def.pb')
def test_tf2015_real_graph():
    ext = fid.TF2015Inception(os.environ['LADAGAN_INCEPTION_2015'])
    images = np.random.default_rng(11).integers(0, 256, (3, 32, 32, 3), dtype=np.uint8)
    out = ext(images)
    assert out['features'].shape == (3, 2048) and out['logits'].shape == (3, 1008)
    assert (out['features'] >= 0).all()  # pool_3 averages ReLU outputs
    one = ext(images[1:2])
    np.testing.assert_allclose(one['features'][0], out['features'][1], rtol=1e-4, atol=1e-4)


def test_tf2015_offline_without_file_is_unavailable(tmp_path, monkeypatch):
    def offline(url, dest):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(fid, '_download', offline)
    with pytest.raises(fid.FIDUnavailable) as info:
        fid.get_tf2015_graph(cache_dir=str(tmp_path / 'cache'))
    message = str(info.value)
    assert fid.TF2015_URL in message and '--inception_path' in message
    assert str(tmp_path / 'cache') in message and '\n' not in message
    with pytest.raises(fid.FIDUnavailable, match='not found'):
        fid.get_tf2015_graph(str(tmp_path / 'missing.pb'))


def test_tf2015_graph_is_taken_from_cache_or_tgz(tmp_path, monkeypatch, fake_graph):
    import tarfile
    tgz = tmp_path / 'inception.tgz'
    with tarfile.open(tgz, 'w:gz') as tar:
        tar.add(fake_graph[0], arcname=fid.TF2015_FILE)
    downloads = []

    def fake_download(url, dest):
        downloads.append(url)
        with open(tgz, 'rb') as src, open(dest, 'wb') as dst:
            dst.write(src.read())

    monkeypatch.setattr(fid, '_download', fake_download)
    cache = str(tmp_path / 'cache')
    path = fid.get_tf2015_graph(cache_dir=cache)
    assert path == os.path.join(cache, fid.TF2015_FILE) and downloads == [fid.TF2015_URL]
    assert open(path, 'rb').read() == open(fake_graph[0], 'rb').read()
    assert fid.get_tf2015_graph(cache_dir=cache) == path and len(downloads) == 1


def test_keras_inception_random_weights_gives_2048_features():
    ext = fid.KerasInception(weights=None)
    images = np.random.default_rng(12).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    feats = ext(images)['features']
    assert feats.shape == (2, 2048) and np.isfinite(feats).all()
    assert feats.std() > 0
    # The same images give the same features, whatever else is in the batch.
    np.testing.assert_allclose(ext(images[::-1])['features'][::-1], feats, rtol=1e-4, atol=1e-5)


def test_keras_inception_falls_back_when_xla_cannot_compile():
    import tensorflow as tf
    ext = object.__new__(fid.KerasInception)
    ext._jit, ext._fn = True, None
    # numpy_function has no XLA kernel: the jit-compiled call fails, the plain one works.
    ext._forward = lambda images: tf.numpy_function(
        lambda x: x.reshape(len(x), -1).astype(np.float32), [images], tf.float32)
    images = np.arange(24, dtype=np.uint8).reshape(2, 2, 2, 3)
    np.testing.assert_array_equal(ext(images)['features'], images.reshape(2, -1))
    np.testing.assert_array_equal(ext(images)['features'], images.reshape(2, -1))


def test_keras_inception_offline_is_unavailable(monkeypatch):
    import keras

    def offline(**kwargs):
        raise Exception('URL fetch failure on https://storage.googleapis.com/...')

    monkeypatch.setattr(keras.applications, 'InceptionV3', offline)
    with pytest.raises(fid.FIDUnavailable, match=fid.KERAS_WEIGHTS_FILE):
        fid.KerasInception(weights='imagenet')
    with pytest.raises(fid.FIDUnavailable, match='not found'):
        fid.KerasInception(weights='/nonexistent/weights.h5')
    with pytest.raises(fid.FIDError, match='unknown network'):
        fid.get_extractor('vgg')


# ---------------------------------------------------------------------------------------
# Feature passes, PNG round trip, statistics cache
# ---------------------------------------------------------------------------------------


def test_in_memory_uint8_features_equal_png_round_trip(tmp_path, fake_tf2015):
    import tensorflow as tf

    class ReshapeGenerator:  # z -> 0.6 z as an 8x8 RGB image: values beyond [-1, 1] too
        noise_dim = 8 * 8 * 3

        def __call__(self, z, training):
            return tf.reshape(z, [-1, 8, 8, 3]) * 0.6, []

    batches = list(sampling.FakeSampler(ReshapeGenerator(), batch_size=4).batches(7, seed=13))
    assert [len(b) for b in batches] == [4, 3]
    in_memory = fid.compute_features(batches, fake_tf2015)
    z = np.random.default_rng(13).standard_normal((7, 192)).astype(np.float32)
    x = z.reshape(7, 8, 8, 3) * np.float32(0.6)
    # The authors write PNGs of np.clip(x * 127.5 + 127.5, 0, 255).astype('uint8').
    pngs = np.clip(x * 127.5 + 127.5, 0, 255).astype('uint8')
    paths = _save_pngs(pngs, str(tmp_path / 'png'))
    from_files = fid.compute_features(fid.read_images(paths, 8, batch_size=4), fake_tf2015)
    np.testing.assert_array_equal(in_memory['features'], from_files['features'])
    np.testing.assert_array_equal(in_memory['logits'], from_files['logits'])


def test_compute_features_keeps_n_and_pads_the_last_batch():
    seen = []

    def extractor(batch):
        seen.append(len(batch))
        return {'features': batch.reshape(len(batch), -1).astype(np.float32)}

    batches = [np.full((4, 2, 2, 3), i, np.uint8) for i in range(3)]
    out = fid.compute_features(batches, extractor, n=10)
    assert out['features'].shape == (10, 12) and seen == [4, 4, 4]
    np.testing.assert_array_equal(out['features'][:, 0], [0] * 4 + [1] * 4 + [2] * 2)
    with pytest.raises(fid.FIDError, match='got 12 images, expected 20'):
        fid.compute_features(batches, extractor, n=20)


class CountingExtractor:
    """Features = the first pixels of the image; counts its calls (feature passes)."""

    def __init__(self):
        self.calls = 0

    def __call__(self, batch):
        self.calls += 1
        return {'features': batch.reshape(len(batch), -1)[:, :16].astype(np.float32)}


@pytest.fixture
def real_files(tmp_path):
    images = np.random.default_rng(14).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8)
    return _save_pngs(images, str(tmp_path / 'real'))


def test_real_stats_cache_is_reused_and_invalidated(tmp_path, real_files):
    cache = str(tmp_path / 'stats')
    ext = CountingExtractor()

    def stats(files, n, img_size=8):
        return fid.real_stats(files, n, img_size, 'counting', ext, cache, batch_size=5)

    first = stats(real_files, 10)  # batches of 5: two passes
    assert ext.calls == 2 and not first['from_cache'] and os.path.isfile(first['path'])
    second = stats(real_files, 10)
    assert ext.calls == 2 and second['from_cache'] and second['path'] == first['path']
    np.testing.assert_array_equal(second['features'], first['features'])
    mu, sigma = metrics.feature_stats(first['features'])
    np.testing.assert_allclose(second['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(second['sigma'], sigma, rtol=1e-12)
    # Anything the statistics depend on changes the key.
    assert not stats(real_files, 9)['from_cache'] and ext.calls == 4
    assert not stats(real_files[1:], 10)['from_cache'] and ext.calls == 6
    assert not stats(real_files, 10, img_size=4)['from_cache'] and ext.calls == 8
    os.utime(real_files[0], ns=(1, 1))  # an edited file
    assert not stats(real_files, 10)['from_cache'] and ext.calls == 10
    assert stats(real_files, 10)['from_cache'] and ext.calls == 10
    assert not [f for f in os.listdir(cache) if f.endswith('.tmp')]


def test_real_stats_with_fewer_images_than_asked(tmp_path, real_files):
    with pytest.raises(fid.FIDError, match='asked for 20 real images but only 12'):
        fid.real_stats(real_files, 20, 8, 'counting', CountingExtractor(), str(tmp_path))


def test_select_files_takes_all_when_asked_for_more_and_says_so(real_files, capsys):
    assert fid.select_files(real_files, 20, seed=0, what='real images') == real_files
    captured = capsys.readouterr()
    assert captured.err == 'asked for 20 real images but only 12 exist: using all 12\n'
    assert fid.select_files(real_files, 12, seed=0) == real_files  # all, silently
    assert capsys.readouterr().err == ''


def test_stats_key_depends_on_the_crop(real_files):
    keys = {crop: fid.stats_key(real_files, 12, 8, 'net', 'bilinear', crop)
            for crop in ('none', 'center')}
    assert keys['none'] != keys['center']
    assert keys['none'] == fid.stats_key(real_files, 12, 8, 'net', 'bilinear')  # default


def test_read_images_center_crop(tmp_path):
    wide = np.random.default_rng(15).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    Image.fromarray(wide).save(tmp_path / 'wide.png')
    (batch,) = list(fid.read_images([str(tmp_path / 'wide.png')], 8, crop='center'))
    np.testing.assert_array_equal(batch[0], wide[:, 4:12])  # the centre 8x8 square


def test_select_files_is_seeded():
    paths = [f'{i}.png' for i in range(50)]
    a = fid.select_files(paths, 10, seed=0)
    assert a == fid.select_files(paths, 10, seed=0) and len(set(a)) == 10
    assert a != fid.select_files(paths, 10, seed=1)
    assert fid.select_files(paths, 'all', seed=0) == paths


# ---------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------


def _cli(*args):
    return subprocess.run([sys.executable, os.path.join(ROOT, 'fid.py'), *args],
                          capture_output=True, text=True, timeout=120)


@pytest.fixture
def bad_inputs(tmp_path, real_files):
    (tmp_path / 'empty').mkdir()
    mixed = tmp_path / 'mixed'
    mixed.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(mixed / 'a.png')
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(mixed / 'b.png')
    return {'REAL': os.path.dirname(real_files[0]), 'EMPTY': str(tmp_path / 'empty'),
            'MIXED': str(mixed)}


@pytest.mark.parametrize('extra,message', [
    (['--eval_dir', '/nonexistent/*.png', '--fake_dir', 'REAL'], 'No file matches'),
    (['--eval_dir', 'EMPTY', '--fake_dir', 'REAL'], 'holds no image files'),
    (['--fake_dir', 'EMPTY'], 'holds no image files'),
    (['--fake_dir', 'MIXED'], 'must be square and of one size'),
    (['--network', 'tf2015', '--inception_path', '/nonexistent.pb', '--fake_dir', 'REAL'],
     'Inception graph not found'),
    (['--network', 'keras', '--inception_path', '/nonexistent.h5', '--fake_dir', 'REAL'],
     'weights file not found'),
    (['--model_dir', '/nonexistent'], 'is not a directory'),
    (['--metrics', 'fid,xyz', '--fake_dir', 'REAL'], 'unknown metrics'),
])
def test_cli_errors_are_one_line(extra, message, bad_inputs, capsys):
    args = [bad_inputs.get(a, a) for a in extra]
    if '--eval_dir' not in args:
        args = ['--eval_dir', bad_inputs['REAL']] + args
    if '--fake_dir' in args and '--n_fake' not in args:
        args += ['--n_fake', 'all']
    assert fid.main(args) == 2
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('fid.py: error:'), captured.err
    assert message in lines[0] and not captured.out


def test_cli_error_in_a_subprocess_is_one_line_without_traceback(bad_inputs):
    result = _cli('--eval_dir', bad_inputs['EMPTY'], '--fake_dir', bad_inputs['REAL'])
    assert result.returncode == 2 and 'Traceback' not in result.stderr
    # The error is the last line (TensorFlow may log lines of its own before it).
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('fid.py: error:') and 'holds no image files' in last, result.stderr


def test_cli_tf2015_offline_without_the_file_is_one_line(tmp_path, monkeypatch, capsys,
                                                          real_files):
    def offline(url, dest):
        raise urllib.error.URLError('no network')

    monkeypatch.setattr(fid, '_download', offline)
    monkeypatch.setattr(fid, 'CACHE_ROOT', str(tmp_path / 'cache'))
    code = fid.main(['--eval_dir', os.path.dirname(real_files[0]), '--fake_dir',
                     os.path.dirname(real_files[0]), '--n_fake', 'all'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert err.startswith('fid.py: error: cannot download the Inception 2015 graph')
    assert fid.TF2015_FILE in err and str(tmp_path / 'cache') in err


def test_cli_end_to_end_on_the_small_graph(tmp_path, small_graph):
    graph, ext = small_graph
    rng = np.random.default_rng(15)
    real = _save_pngs(rng.integers(0, 256, (30, 8, 8, 3), dtype=np.uint8), str(tmp_path / 'r'))
    fake = _save_pngs(rng.integers(0, 200, (20, 8, 8, 3), dtype=np.uint8), str(tmp_path / 'f'))
    out = tmp_path / 'res.json'
    args = ['--eval_dir', str(tmp_path / 'r' / '*.png'), '--fake_dir', str(tmp_path / 'f'),
            '--n_fake', '20', '--metrics', 'fid,kid,is,pr', '--network', 'tf2015',
            '--inception_path', graph, '--batch_size', '8', '--cache_dir',
            str(tmp_path / 'c'), '--out', str(out)]
    result = _cli(*args)
    assert result.returncode == 0, result.stderr
    res = json.loads(out.read_text())
    real_f = fid.compute_features(fid.read_images(real, 8, 8), ext)['features']
    fake_o = fid.compute_features(fid.read_images(fake, 8, 8), ext)
    expected = metrics.compute_metrics(real_f, fake_o, ['fid', 'kid', 'is', 'pr'])
    for key, value in expected.items():
        assert res[key] == pytest.approx(value, rel=1e-4, abs=1e-6), key
    assert res['n_real'] == 30 and res['n_fake'] == 20 and res['network'] == 'tf2015'
    assert res['fid_method'] == 'sqrtm' and not res['real_stats_cached']
    assert os.path.isfile(res['real_stats'])
    # Second run: the real statistics come from the cache; eigh gives the same FID.
    result = _cli(*args, '--fid_method', 'eigh')
    assert result.returncode == 0, result.stderr
    again = json.loads(out.read_text())
    assert again['real_stats_cached'] and again['real_stats'] == res['real_stats']
    assert again['fid'] == pytest.approx(res['fid'], rel=1e-6)


def test_model_dir_uses_the_ema_generator(tmp_path, monkeypatch, small_graph):
    import tensorflow as tf

    import checkpoints
    import utils
    graph, ext = small_graph
    calls = {}

    class TinyGenerator:
        noise_dim = 4

        def __call__(self, z, training):
            assert not training
            img = tf.tanh(z[:, None, None, :3]) * tf.ones((1, 8, 8, 1))
            return img, []

    def load_generator(model_dir, ema):
        calls['args'] = (model_dir, ema)
        return TinyGenerator()

    monkeypatch.setattr(checkpoints, 'load_generator', load_generator)
    real = _save_pngs(np.random.default_rng(16).integers(0, 256, (12, 8, 8, 3), dtype=np.uint8),
                      str(tmp_path / 'r'))
    model_dir = tmp_path / 'run'
    model_dir.mkdir()
    argv = ['--eval_dir', str(tmp_path / 'r'), '--model_dir', str(model_dir), '--n_fake', '10',
            '--network', 'tf2015', '--inception_path', graph, '--batch_size', '4',
            '--cache_dir', str(tmp_path / 'c'), '--metrics', 'fid,is']
    assert fid.main(argv) == 0
    assert calls['args'] == (str(model_dir), True)
    res = json.loads((model_dir / 'eval-tf2015.json').read_text())
    z = np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32)
    fakes = utils.to_uint8(TinyGenerator()(z, False)[0].numpy())
    real_f = fid.compute_features(fid.read_images(real, 8, 4), ext)['features']
    expected = metrics.compute_metrics(real_f, ext(fakes), ['fid', 'is'])
    assert res['fid'] == pytest.approx(expected['fid'], rel=1e-4)
    assert res['is_mean'] == pytest.approx(expected['is_mean'], rel=1e-4)


def test_model_dir_checkpoint_errors_are_one_line(tmp_path, capsys, real_files):
    (tmp_path / 'run').mkdir()
    code = fid.main(['--eval_dir', os.path.dirname(real_files[0]), '--model_dir',
                     str(tmp_path / 'run'), '--n_fake', '10', '--network', 'keras'])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and 'config.json' in err, err


# ---------------------------------------------------------------------------------------
# Fakes under XLA and the in-training monitor
# ---------------------------------------------------------------------------------------


class DenseGenerator:
    """A small Keras generator with the project's interface: z -> (images, attention)."""

    def __init__(self, noise_dim=5, size=4):
        import keras
        self.noise_dim = noise_dim
        self.model = keras.Sequential([
            keras.Input((noise_dim,)), keras.layers.Dense(size * size * 3),
            keras.layers.Reshape((size, size, 3)), keras.layers.Activation('tanh')])

    def __call__(self, z, training=False):
        return self.model(z, training=training), []


def test_fake_sampler_compiles_one_xla_program_for_a_fixed_batch():
    import tensorflow as tf

    import utils
    gen = DenseGenerator()
    sampler = sampling.FakeSampler(gen, batch_size=4)
    batches = list(sampler.batches(10, seed=3))
    assert [b.shape for b in batches] == [(4, 4, 4, 3), (4, 4, 4, 3), (2, 4, 4, 3)]
    assert sampler.traces == 1 and sampler._sampler._images._jit_compile
    list(sampler.batches(7))
    assert sampler.traces == 1
    z = np.random.default_rng(3).standard_normal((10, 5)).astype(np.float32)
    eager = utils.to_uint8(gen(tf.constant(z))[0].numpy())
    # XLA may round the last bit differently; truncation then moves a level at most.
    diff = np.abs(np.concatenate(batches).astype(int) - eager.astype(int))
    assert diff.max() <= 1 and diff.mean() < 0.01
    # Same seed, same images; no seed, fresh noise.
    np.testing.assert_array_equal(np.concatenate(list(sampler.batches(10, seed=3))),
                                  np.concatenate(batches))
    assert not np.array_equal(next(sampler.batches(4)), next(sampler.batches(4)))


def test_fake_sampler_falls_back_when_xla_cannot_compile():
    import tensorflow as tf

    class NumpyGenerator:  # numpy_function has no XLA kernel
        noise_dim = 2

        def __call__(self, z, training):
            img = tf.numpy_function(lambda a: np.tanh(a[:, :1, None, None]) *
                                    np.ones((1, 2, 2, 3), np.float32), [z], tf.float32)
            return img, []

    sampler = sampling.FakeSampler(NumpyGenerator(), batch_size=3)
    with pytest.warns(RuntimeWarning, match='XLA cannot compile'):
        batches = list(sampler.batches(5, seed=0))
    assert [len(b) for b in batches] == [3, 2]
    assert len(list(sampler.batches(5))) == 2  # no second warning or trace needed


def test_rebatch():
    stream = [np.arange(3), np.arange(3, 10), np.arange(10, 11)]
    out = list(fid.rebatch(stream, 4))
    assert [len(b) for b in out] == [4, 4, 3]
    np.testing.assert_array_equal(np.concatenate(out), np.arange(11))


def test_in_loop_fid_matches_direct_computation(tmp_path, monkeypatch, real_files):
    class Stub(CountingExtractor):
        name = 'stub'

        def __init__(self, weights):
            super().__init__()

    monkeypatch.setattr(fid, 'KerasInception', Stub)
    fixed = np.random.default_rng(17).uniform(-1, 1, (3, 8, 8, 3)).astype(np.float32)
    gen = ConstantGenerator(fixed)
    # Generation in batches of 3 (one program), features in batches of 4.
    conf = {'n_fid_real': 10, 'fid_batch_size': 4, 'gen_batch_size': 3, 'img_size': 8}
    monitor = fid.InLoopFID(os.path.dirname(real_files[0]), conf, weights=None,
                            cache_dir=str(tmp_path / 'c'))
    assert monitor.extractor.calls == 3 and not monitor.real['from_cache']
    second = fid.InLoopFID(os.path.dirname(real_files[0]), conf, None, str(tmp_path / 'c'))
    assert second.real['from_cache'] and second.extractor.calls == 0
    value = monitor(gen)
    assert monitor.extractor.calls == 6 and set(gen.seen) == {(3, 3)}
    assert monitor.sampler.traces == 1 and monitor(gen) == value
    assert monitor.sampler.traces == 1 and monitor.extractor.calls == 9
    chosen = fid.select_files(sorted(real_files), 10, seed=42)
    real = np.stack([np.asarray(Image.open(p)) for p in chosen])
    mu, sigma = metrics.feature_stats(Stub(None)(real)['features'])
    fakes = np.clip(np.concatenate([fixed] * 3 + [fixed[:1]]) * 127.5 + 127.5, 0, 255)
    fake_feats = Stub(None)(fakes.astype(np.uint8))['features']
    expected = metrics.frechet_distance(mu, sigma, *metrics.feature_stats(fake_feats),
                                        method='sqrtm')
    assert value == pytest.approx(expected, rel=1e-6)
    np.testing.assert_allclose(monitor.real['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(monitor.real['sigma'], sigma, rtol=1e-12)


def test_in_loop_fid_without_gen_batch_size_uses_fid_batch_size(tmp_path, monkeypatch,
                                                                real_files):
    class Stub(CountingExtractor):
        name = 'stub'

        def __init__(self, weights):
            super().__init__()

    monkeypatch.setattr(fid, 'KerasInception', Stub)
    gen = ConstantGenerator(np.zeros((4, 8, 8, 3)))
    monitor = fid.InLoopFID(os.path.dirname(real_files[0]),
                            {'n_fid_real': 6, 'fid_batch_size': 4, 'img_size': 8}, None)
    monitor(gen)
    assert set(gen.seen) == {(4, 3)} and monitor.real['path'] is None


def _stub_keras(monkeypatch):
    class Stub(CountingExtractor):
        name = 'stub'

        def __init__(self, weights):
            super().__init__()

    monkeypatch.setattr(fid, 'KerasInception', Stub)
    return Stub


def test_in_loop_fid_with_fewer_real_images_than_n_fid_real_uses_all(tmp_path, monkeypatch,
                                                                      capsys):
    stub = _stub_keras(monkeypatch)
    images = np.random.default_rng(18).integers(0, 256, (fid.MIN_FID_IMAGES, 4, 4, 3),
                                                dtype=np.uint8)
    files = _save_pngs(images, str(tmp_path / 'real'))
    conf = {'n_fid_real': 100, 'fid_batch_size': 16, 'gen_batch_size': 8, 'img_size': 4}
    monitor = fid.InLoopFID(str(tmp_path / 'real'), conf, None)
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 1 and f'{len(files)} real images' in lines[0]
    assert 'n_fid_real=100' in lines[0] and f'using all {len(files)}' in lines[0]
    mu, sigma = metrics.feature_stats(stub(None)(images)['features'])
    np.testing.assert_allclose(monitor.real['mu'], mu, rtol=1e-12)
    np.testing.assert_allclose(monitor.real['sigma'], sigma, rtol=1e-12)
    gen = ConstantGenerator(np.zeros((8, 4, 4, 3)))
    monitor(gen)
    # 50 reals, then as many fakes (not 100: 7 batches), in batches of 16.
    assert monitor.n == len(files) and monitor.extractor.calls == 4 + 4


def test_in_loop_fid_below_the_minimum_is_unavailable(tmp_path, monkeypatch, real_files):
    _stub_keras(monkeypatch)
    conf = {'n_fid_real': 100, 'fid_batch_size': 4, 'img_size': 8}
    with pytest.raises(fid.FIDUnavailable, match=f'only 12 real images in .*fewer than the '
                                                 f'{fid.MIN_FID_IMAGES} an FID needs'):
        fid.InLoopFID(os.path.dirname(real_files[0]), conf, None)
    assert fid.MIN_FID_IMAGES == 50  # the README states it


def test_in_loop_fid_crops_the_real_images_as_training(tmp_path, monkeypatch):
    stub = _stub_keras(monkeypatch)
    tall = np.random.default_rng(19).integers(0, 256, (12, 8, 4, 3), dtype=np.uint8)
    _save_pngs(tall, str(tmp_path / 'real'))  # 4 wide, 8 high
    conf = {'n_fid_real': 12, 'fid_batch_size': 4, 'img_size': 4}
    cache = str(tmp_path / 'cache')
    squashed = fid.InLoopFID(str(tmp_path / 'real'), conf, None, cache)
    cropped = fid.InLoopFID(str(tmp_path / 'real'), {**conf, 'crop': 'center'}, None, cache)
    assert not cropped.real['from_cache'] and cropped.real['path'] != squashed.real['path']
    mu, _ = metrics.feature_stats(stub(None)(tall[:, 2:6])['features'])  # centre 4x4 squares
    np.testing.assert_allclose(cropped.real['mu'], mu, rtol=1e-12)
    assert np.abs(squashed.real['mu'] - mu).max() > 1


def test_cli_with_fewer_images_than_asked_uses_all_and_says_so(tmp_path, capsys):
    rng = np.random.default_rng(20)
    _save_pngs(rng.integers(0, 256, (6, 16, 16, 3), dtype=np.uint8), str(tmp_path / 'real'))
    _save_pngs(rng.integers(0, 256, (5, 16, 16, 3), dtype=np.uint8), str(tmp_path / 'fake'))
    code = fid.main(['--eval_dir', str(tmp_path / 'real'), '--fake_dir', str(tmp_path / 'fake'),
                     '--n_real', '10', '--n_fake', '9', '--metrics', 'swd'])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert 'asked for 10 real images but only 6 exist: using all 6' in captured.err
    assert 'asked for 9 fake images but only 5 exist: using all 5' in captured.err
    results = json.loads(captured.out)
    assert results['n_real'] == 6 and results['n_fake'] == 5 and results['swd'] > 0


def test_cli_help_explains_the_networks():
    result = _cli('--help')
    assert result.returncode == 0
    text = ' '.join(result.stdout.split())
    for phrase in ('NOT comparable', 'pytorch-fid', 'TTUR', 'in-training monitor',
                   'LadaGAN paper', '--fid_method', 'scipy.linalg.sqrtm', 'VGG-16'):
        assert phrase in text, phrase


# --- sliced Wasserstein distance (no feature network) ------------------------------------

def _shapes_like(n, seed):
    """uint8 32x32 images: random rectangles on random backgrounds."""
    rng = np.random.default_rng(seed)
    images = np.repeat(rng.integers(0, 256, (n, 1, 1, 3)), 32, axis=1).repeat(32, axis=2)
    for image in images:
        y, x = rng.integers(0, 20, 2)
        image[y:y + 12, x:x + 12] = rng.integers(0, 256, 3)
    return images.astype(np.uint8)


def test_sliced_wasserstein_of_a_shift_is_the_mean_projected_shift():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((300, 6)).astype(np.float32)
    shift = np.array([1.0, -2.0, 0.5, 0.0, 3.0, 1.0], np.float32)
    got = metrics.sliced_wasserstein(a, a + shift, n_directions=64, n_repeats=2,
                                 rng=np.random.default_rng(5))
    want_rng, want = np.random.default_rng(5), []
    for _ in range(2):
        d = want_rng.standard_normal((6, 64)).astype(np.float32)
        want.append(np.mean(np.abs(shift @ (d / np.linalg.norm(d, axis=0)))))
    assert got == pytest.approx(np.mean(want), rel=1e-4)
    assert metrics.sliced_wasserstein(a, a) == 0.0


def test_laplacian_pyramid_levels_rebuild_the_image():
    images = _shapes_like(3, 0).astype(np.float32)
    band, low = metrics.laplacian_pyramid(images)
    assert band.shape == (3, 32, 32, 3) and low.shape == (3, 16, 16, 3)
    up = np.repeat(np.repeat(low, 2, axis=1), 2, axis=2)
    np.testing.assert_allclose(band + metrics._blur(up), images, atol=1e-3)


def test_swd_grows_with_blur_and_is_smallest_for_the_same_distribution():
    real, other_real = _shapes_like(200, 1), _shapes_like(200, 2)
    blurred = [real.astype(np.float32)]
    for _ in range(3):
        blurred.append(metrics._blur(blurred[-1]))
    values = [metrics.swd(other_real, np.round(b).astype(np.uint8))['swd'] for b in blurred]
    assert values[0] < values[1] < values[2] < values[3], values
    assert set(metrics.swd(real, other_real)) == {'swd_32', 'swd_16', 'swd'}


def test_swd_errors_are_clear():
    with pytest.raises(metrics.MetricError, match='at least 16x16'):
        metrics.swd(np.zeros((4, 8, 8, 3), np.uint8), np.zeros((4, 8, 8, 3), np.uint8))
    with pytest.raises(metrics.MetricError, match='one size'):
        metrics.swd(np.zeros((4, 32, 32, 3), np.uint8), np.zeros((4, 16, 16, 3), np.uint8))


def test_cli_swd_works_offline_without_a_network(tmp_path):
    for name, images in (('real', _shapes_like(40, 3)), ('fake', _shapes_like(40, 4))):
        os.makedirs(tmp_path / name)
        for i, image in enumerate(images):
            Image.fromarray(image).save(tmp_path / name / f'{i}.png')
    result = _cli('--eval_dir', str(tmp_path / 'real'), '--fake_dir', str(tmp_path / 'fake'),
                     '--n_fake', 'all', '--metrics', 'swd', '--inception_path', '/nonexistent')
    assert result.returncode == 0, result.stderr[-2000:]
    numbers = json.loads(result.stdout)
    assert numbers['swd'] > 0 and numbers['n_fake'] == 40 and numbers['img_size'] == 32
