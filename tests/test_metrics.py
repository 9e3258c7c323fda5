"""Tests of metrics.py, the metric maths: every metric against an independent computation
written here from its definition (or the closed form), never against our own earlier output.

Tolerances: float64 metrics agree to 1e-6 relative; float32 ones (SWD, precision/recall
distances) to 1e-4.
"""
import os
import subprocess
import sys

import numpy as np
import pytest
from scipy import linalg, ndimage

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import metrics  # noqa: E402

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
    # Eigenvalues below d * eps of the largest are round-off of zeros (singular
    # covariances when N < d): their square roots would bias the trace.
    def root_of_psd_eigenvalues(w):
        return np.sqrt(np.where(w > len(w) * np.finfo(float).eps * np.abs(w).max(), w, 0))

    w, v = linalg.eigh(s1)
    root1 = v @ np.diag(root_of_psd_eigenvalues(w)) @ v.T
    tr_covmean = np.sum(root_of_psd_eigenvalues(linalg.eigvalsh(root1 @ s2 @ root1)))
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
    with pytest.warns(RuntimeWarning, match='subsets of 30 samples instead of 1000'):
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


def test_metrics_imports_without_tensorflow():
    code = 'import sys, metrics; print("tensorflow" in sys.modules)'
    out = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == 'False'


# --- FID, IS, precision/recall: the issue-16 cases ----------------------------------------

def test_fid_of_identical_sets_with_fewer_samples_than_dimensions_is_zero():
    # 50 samples in 128-d: 79 zero eigenvalues whose round-off square roots used to add up.
    x = np.random.default_rng(30).normal(size=(50, 128))
    mu, sigma = metrics.feature_stats(x)
    assert abs(metrics.frechet_distance(mu, sigma, mu, sigma, method='eigh')) < 1e-8


def test_inception_score_splits_at_floor_boundaries():
    n, splits = 5003, 10
    p = np.random.default_rng(31).dirichlet(np.ones(10) * 0.3, size=n)

    def score(part):
        py = part.mean(0)
        return np.exp(np.mean(np.sum(p_log(part, py), axis=1)))

    def p_log(part, py):
        return part * (np.log(part) - np.log(py))

    floor_parts = [p[i * n // splits:(i + 1) * n // splits] for i in range(splits)]
    want = [score(part) for part in floor_parts]
    got = metrics.inception_score(p, splits=splits)
    assert got == pytest.approx((np.mean(want), np.std(want)), rel=1e-9)
    # np.array_split puts the 3 larger chunks first: a different partition and result.
    other = [score(part) for part in np.array_split(p, splits)]
    assert abs(np.std(other) - got[1]) > 1e-9


def _pr_brute_force(real, fake, k):
    # The definition in float64: pairwise distances, k-th neighbour (self at index 0),
    # membership with <= as the NVlabs code.
    real, fake = real.astype(np.float64), fake.astype(np.float64)

    def dist(a, b):
        return np.sqrt(((a[:, None] - b[None]) ** 2).sum(-1))

    r_real = np.sort(dist(real, real), axis=1)[:, k]
    r_fake = np.sort(dist(fake, fake), axis=1)[:, k]
    precision = np.mean(np.any(dist(fake, real) <= r_real[None], axis=1))
    recall = np.mean(np.any(dist(real, fake) <= r_fake[None], axis=1))
    return precision, recall


@pytest.mark.parametrize('offset', [0.0, 300.0])
def test_precision_recall_against_float64_brute_force_near_and_far_from_origin(offset):
    rng = np.random.default_rng(32)
    real = (rng.normal(size=(200, 16)) + offset).astype(np.float32)
    fake = (rng.normal(size=(150, 16)) * 0.8 + 0.6 + offset).astype(np.float32)
    want = _pr_brute_force(real, fake, k=3)
    assert 0.1 < want[0] < 0.95 and 0.1 < want[1] < 0.95, want
    assert metrics.precision_recall(real, fake, k=3) == pytest.approx(want, abs=1e-3)


def test_precision_recall_counts_a_point_on_the_ball_surface():
    # Radii 1 (k=1) around 0..4: -1 and 5 lie exactly on a surface, 10 outside.
    real = np.arange(5, dtype=np.float32)[:, None]
    fake = np.array([[-1.0], [5.0], [10.0]], np.float32)
    assert metrics.precision_recall(real, fake, k=1)[0] == pytest.approx(2 / 3)


def test_bad_inputs_are_one_clear_error_each():
    rng = np.random.default_rng(33)
    logits = rng.normal(size=(100, 10))
    with pytest.raises(metrics.MetricError, match='logits'):
        metrics.inception_score(logits)
    probs = rng.dirichlet(np.ones(10), size=100)
    with pytest.raises(metrics.MetricError, match='at least 10 images, got 1'):
        metrics.inception_score(probs[:1])
    with pytest.raises(metrics.MetricError, match='at least 2 images, got 1'):
        metrics.inception_score(probs[:1], splits=1)
    with pytest.raises(metrics.MetricError, match='at least 2 feature vectors, got 1'):
        metrics.feature_stats(probs[:1])
    one = np.zeros((1, 32, 32, 3), np.uint8)
    with pytest.raises(metrics.MetricError, match='at least 2 generated images, got 1'):
        metrics.swd(np.zeros((4, 32, 32, 3), np.uint8), one)
    nan = rng.normal(size=(50, 8))
    nan[3, 2] = np.nan
    clean = rng.normal(size=(50, 8))
    for call in (lambda: metrics.feature_stats(nan), lambda: metrics.kid(clean, nan),
                 lambda: metrics.precision_recall(nan, clean),
                 lambda: metrics.compute_metrics(clean, {'features': nan}, ['fid'])):
        with pytest.raises(metrics.MetricError, match='1 NaN or infinite values'):
            call()


# --- Laplacian pyramid and SWD as ProGAN defines them ---------------------------------------

_KERNEL = np.outer([1, 4, 6, 4, 1], [1, 4, 6, 4, 1]) / 256.0


def _ref_down(image):
    # One 2-D channel: 5x5 binomial convolution, mirrored borders, every 2nd pixel.
    return ndimage.convolve(image, _KERNEL, mode='mirror')[::2, ::2]


def _ref_up(image, shape):
    # Zeros between the pixels, then the same convolution with 4x the kernel.
    up = np.zeros(shape)
    up[::2, ::2] = image
    return ndimage.convolve(up, 4 * _KERNEL, mode='mirror')


def _ref_pyramid(image, n_levels):
    # Gaussian levels g_i, then band-pass g_i - up(g_{i+1}); last = coarsest g.
    gauss = [np.asarray(image, np.float64)]
    for _ in range(n_levels - 1):
        gauss.append(_ref_down(gauss[-1]))
    bands = [g - _ref_up(g_next, g.shape) for g, g_next in zip(gauss, gauss[1:])]
    return bands + [gauss[-1]]


@pytest.mark.parametrize('size', [32, 37])
def test_laplacian_pyramid_of_a_ramp_is_zero_inside(size):
    y, x = np.mgrid[:size, :size]
    ramp = (3.0 * x + 2.0 * y)[None, :, :, None]
    band = metrics.laplacian_pyramid(ramp)[0]
    # A half-pixel shift (np.repeat upsampling) would leave 0.5 * the gradient here.
    assert np.abs(band[0, 4:-4, 4:-4, 0]).max() < 1e-4


def test_laplacian_pyramid_of_an_impulse_is_the_binomial_response():
    image = np.zeros((1, 32, 32, 1))
    image[0, 16, 16, 0] = 1.0
    band, low = metrics.laplacian_pyramid(image)
    k = np.array([1, 4, 6, 4, 1]) / 16
    want_low = np.zeros((16, 16))
    want_low[7:10, 7:10] = np.outer(k[::2], k[::2])  # the blurred impulse, every 2nd pixel
    np.testing.assert_allclose(low[0, :, :, 0], want_low, atol=1e-7)
    inserted = np.zeros(32)
    inserted[14:19:2] = k[::2]
    g = 2 * np.convolve(inserted, k, mode='same')  # 1-D up: zeros, blur, gain 2 per axis
    want_band = -np.outer(g, g)
    want_band[16, 16] += 1
    np.testing.assert_allclose(band[0, :, :, 0], want_band, atol=1e-7)
    assert band[0, 16, 16, 0] == pytest.approx(1 - (76 / 256) ** 2, abs=1e-7)


def test_laplacian_pyramid_matches_the_reference_and_rebuilds_the_image():
    images = np.random.default_rng(34).uniform(0, 255, (2, 68, 40, 3))
    levels = metrics.laplacian_pyramid(images)
    assert [lv.shape[1:3] for lv in levels] == [(68, 40), (34, 20)]
    for c in range(3):
        ref = _ref_pyramid(images[1, :, :, c], 2)
        for got, want in zip(levels, ref):
            np.testing.assert_allclose(got[1, :, :, c], want, atol=1e-3)
    rebuilt = levels[-1][..., 0]
    for band in levels[-2::-1]:
        rebuilt = np.stack([_ref_up(r, band.shape[1:3]) for r in rebuilt]) + band[..., 0]
    np.testing.assert_allclose(rebuilt, images[..., 0], atol=1e-3)


def _ref_swd_levels(real, fake, per_image, seed, directions):
    """SWD x1e3 per level from the definition, with the corners drawn in swd's documented
    order (level by level; real then fake; ys then xs) and the given directions."""
    sizes = [real.shape[1:3]]
    while min((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2) >= 16:
        sizes.append(((sizes[-1][0] + 1) // 2, (sizes[-1][1] + 1) // 2))
    pyramids = [[[_ref_pyramid(image[:, :, c], len(sizes)) for c in range(image.shape[2])]
                 for image in images] for images in (real, fake)]
    rng = np.random.default_rng(seed)
    out = []
    for level, (h, w) in enumerate(sizes):
        sets = []
        for pyramid in pyramids:
            ys = rng.integers(0, h - 6, (len(pyramid), per_image))
            xs = rng.integers(0, w - 6, (len(pyramid), per_image))
            desc = np.array([[ch[level][y:y + 7, x:x + 7] for ch in pyramid[i]]
                             for i in range(len(pyramid))
                             for y, x in zip(ys[i], xs[i])])  # (n*P, C, 7, 7)
            desc = (desc - desc.mean(axis=(0, 2, 3), keepdims=True)) / desc.std(
                axis=(0, 2, 3), keepdims=True)
            sets.append(desc.reshape(len(desc), -1))
        dists = []
        for d in directions:
            d = d / np.linalg.norm(d, axis=0)
            a, b = np.sort(sets[0] @ d, axis=0), np.sort(sets[1] @ d, axis=0)
            dists.append(np.mean(np.abs(a - b)))
        out.append(1e3 * np.mean(dists))
    return out


@pytest.mark.parametrize('shape', [(32, 32), (50, 50), (48, 40), (37, 37)])
def test_swd_per_level_matches_the_definition(shape):
    rng = np.random.default_rng(35)
    real = rng.integers(0, 256, (3, *shape, 3)).astype(np.uint8)
    fake = np.clip(real * 0.7 + rng.integers(0, 60, real.shape), 0, 255).astype(np.uint8)
    directions = rng.standard_normal((2, 3 * 49, 16))
    got = metrics.swd(real, fake, patches_per_image=8, seed=3, directions=directions)
    want = _ref_swd_levels(real, fake, 8, 3, directions)
    levels = [v for key, v in got.items() if key != 'swd']
    assert len(levels) == 2 and levels == pytest.approx(want, rel=1e-4)
    assert got['swd'] == pytest.approx(np.mean(want), rel=1e-4)
    assert f'swd_{shape[0]}' in got


def test_swd_uses_4_repeats_of_128_directions_and_the_first_n_of_a_larger_set():
    real, fake = _shapes_like(12, 36), _shapes_like(10, 37)
    got = metrics.swd(real, fake, patches_per_image=4, seed=1)
    # The same draws: corners, then 4 x (147, 128) normals per level.
    rng = np.random.default_rng(1)
    want = []
    for size in (32, 16):
        rng.integers(0, size - 6, (10, 4)), rng.integers(0, size - 6, (10, 4))
        rng.integers(0, size - 6, (10, 4)), rng.integers(0, size - 6, (10, 4))
        want.append([rng.standard_normal((147, 128)) for _ in range(4)])
    fixed = metrics.swd(real[:10], fake, patches_per_image=4, seed=1,
                        directions=np.array(want[0]))
    assert got['swd_32'] == pytest.approx(fixed['swd_32'], rel=1e-6)
