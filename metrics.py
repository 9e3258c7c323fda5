"""The metric maths: FID, KID, Inception Score, precision/recall and the sliced
Wasserstein distance, on numpy arrays of features or images.

Pure numpy/scipy, importable without TensorFlow; the feature networks, the statistics
cache, the in-training monitor and the CLI are in fid.py.
"""
import warnings

import numpy as np
from scipy import linalg
from scipy.special import xlogy

METRICS = ('fid', 'kid', 'is', 'pr', 'swd')  # swd needs no feature network


class MetricError(ValueError):
    """Input a metric cannot be computed from; the message says why."""


# ---------------------------------------------------------------------------------------
# Metrics on features (numpy, float64)
# ---------------------------------------------------------------------------------------

def feature_stats(features):
    """Mean and covariance (float64) of features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(f'need features of shape (N >= 2, D), got {features.shape}')
    return features.mean(axis=0), np.cov(features, rowvar=False)


FID_METHODS = ('sqrtm', 'eigh')


def _sqrtm(a):
    # scipy warns on singular input; non-finite results are handled by the caller.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return linalg.sqrtm(a)


def _psd_eigenvalues(w, what):
    """Eigenvalues of a symmetric matrix that should be positive semi-definite, with the
    round-off negatives (about d * 1e-16 of the largest) set to 0. Clearly negative
    ones mean the input is not a covariance."""
    scale = max(float(np.max(np.abs(w))), np.finfo(np.float64).tiny)
    if w.min() < -1e-8 * scale:
        raise ValueError(f'{what} has an eigenvalue of {w.min():.3g} (largest {scale:.3g}): '
                         'not positive semi-definite; are the inputs covariances?')
    return np.clip(w, 0, None)


def sqrt_psd(sigma):
    """Symmetric square root of a covariance matrix (float64), by `scipy.linalg.eigh`.

    Pass it to `frechet_distance(..., method='eigh', sqrt_sigma1=...)` to compute it once
    for fixed reference statistics.
    """
    sigma = np.atleast_2d(np.asarray(sigma, dtype=np.float64))
    w, v = linalg.eigh(sigma)
    return (v * np.sqrt(_psd_eigenvalues(w, 'sigma1'))) @ v.T


def _trace_sqrt_product_eigh(sigma1, sigma2, sqrt_sigma1=None):
    """Tr sqrt(sigma1 sigma2) = sum sqrt(eig(R sigma2 R)) with R = sigma1^(1/2).

    R sigma2 R is similar to sigma1 sigma2 and symmetric positive semi-definite, so its
    eigenvalues come from the symmetric solver (faster and better conditioned than
    sqrtm of the non-symmetric product); singular covariances need no eps.
    """
    root = sqrt_psd(sigma1) if sqrt_sigma1 is None else np.asarray(sqrt_sigma1, np.float64)
    if root.shape != sigma1.shape:
        raise ValueError(f'sqrt_sigma1 has shape {root.shape}, sigma1 {sigma1.shape}')
    m = root @ sigma2 @ root
    w = linalg.eigvalsh((m + m.T) / 2)  # symmetrise the round-off
    return float(np.sum(np.sqrt(_psd_eigenvalues(w, 'sigma1^1/2 sigma2 sigma1^1/2'))))


def _trace_sqrt_product_sqrtm(sigma1, sigma2, eps):
    """Tr sqrtm(sigma1 @ sigma2), as the TTUR and pytorch-fid code computes it."""
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
    return float(np.trace(covmean))


def frechet_distance(mu1, sigma1, mu2, sigma2, eps=1e-6, method='sqrtm', sqrt_sigma1=None):
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrt(sigma1 sigma2)).

    method='sqrtm' (the reference): `scipy.linalg.sqrtm` of sigma1 @ sigma2, with the
    eps*I shift when it is not finite and the usual check of imaginary parts, as the
    TTUR and pytorch-fid code. method='eigh': the trace from the eigenvalues of
    sigma1^(1/2) sigma2 sigma1^(1/2) (symmetric solver; sqrt_sigma1 = `sqrt_psd(sigma1)`
    can be given when sigma1 is fixed). The two agree to better than 1e-6 relative on
    2048-d covariances (tests/test_fid.py, bench/bench_fid.py); at 2048-d eigh is about
    4x faster than sqrtm, 8x with sqrt_sigma1 precomputed (bench/RESULTS.md).
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f'shapes differ: {mu1.shape}/{mu2.shape}, {sigma1.shape}/{sigma2.shape}')
    if method == 'sqrtm':
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == 'eigh':
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2, sqrt_sigma1)
    else:
        raise ValueError(f'unknown FID method {method!r}; use one of {FID_METHODS}')
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


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
# Sliced Wasserstein distance on image patches (no feature network)
# ---------------------------------------------------------------------------------------

_BINOMIAL_5 = np.array([1, 4, 6, 4, 1], np.float32) / 16


def _blur(images):
    """Separable 5-tap binomial blur of (N, H, W, C) with reflected borders."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='reflect')
    h, w = images.shape[1:3]
    rows = sum(k * padded[:, i:i + h] for i, k in enumerate(_BINOMIAL_5))
    return sum(k * rows[:, :, i:i + w] for i, k in enumerate(_BINOMIAL_5))


def laplacian_pyramid(images, min_size=16):
    """[band-pass levels from the full size down, then the low-pass at min_size]."""
    levels, current = [], images.astype(np.float32)
    while current.shape[1] > min_size:
        down = _blur(current)[:, ::2, ::2]
        up = np.repeat(np.repeat(down, 2, axis=1), 2, axis=2)
        levels.append(current - _blur(up))
        current = down
    return levels + [current]


def _patch_descriptors(level, per_image, rng, size=7):
    """(N * per_image, size*size*C) random patches of one pyramid level, each set
    normalised per channel by its own mean and std (Karras et al. 2018)."""
    n, h, w, c = level.shape
    ys = rng.integers(0, h - size + 1, (n, per_image))
    xs = rng.integers(0, w - size + 1, (n, per_image))
    offsets = np.arange(size)
    rows = (ys[..., None] + offsets)[..., :, None]           # (N, P, size, 1)
    cols = (xs[..., None] + offsets)[..., None, :]           # (N, P, 1, size)
    patches = level[np.arange(n)[:, None, None, None], rows, cols]  # (N, P, size, size, C)
    patches = patches.reshape(-1, size * size, c)
    patches = (patches - patches.mean(axis=(0, 1))) / (patches.std(axis=(0, 1)) + 1e-8)
    return patches.reshape(len(patches), -1)


def sliced_wasserstein(a, b, n_directions=512, n_repeats=4, rng=None):
    """Mean 1-D Wasserstein-1 distance between the projections of two equal-size sets of
    descriptors on random unit directions, averaged over repeats."""
    rng = rng or np.random.default_rng(0)
    if len(a) != len(b):
        raise MetricError('sliced_wasserstein needs sets of equal size')
    distances = []
    for _ in range(n_repeats):
        directions = rng.standard_normal((a.shape[1], n_directions)).astype(np.float32)
        directions /= np.linalg.norm(directions, axis=0, keepdims=True)
        proj_a = np.sort(a @ directions, axis=0)
        proj_b = np.sort(b @ directions, axis=0)
        distances.append(np.mean(np.abs(proj_a - proj_b)))
    return float(np.mean(distances))


def swd(real_images, fake_images, patches_per_image=128, seed=0):
    """Sliced Wasserstein distance of Karras et al. 2018 (ProGAN) between two sets of
    uint8 (N, S, S, 3) images, x 1e3: {'swd_<size>': per pyramid level, 'swd': mean}.

    Random 7x7 patches of every Laplacian-pyramid level (down to 16x16) are compared
    through 1-D projections; no feature network is involved, so it works offline, but
    its values are not comparable with FID.
    """
    real_images, fake_images = np.asarray(real_images), np.asarray(fake_images)
    if real_images.shape[1:] != fake_images.shape[1:]:
        raise MetricError(f'SWD needs images of one size, got {real_images.shape[1:]} and '
                       f'{fake_images.shape[1:]}')
    if real_images.shape[1] < 16:
        raise MetricError(f'SWD needs images of at least 16x16, got {real_images.shape[1]}')
    n = min(len(real_images), len(fake_images))
    if n < 2:
        raise MetricError('SWD needs at least 2 real and 2 generated images')
    rng = np.random.default_rng(seed)
    pyramids = [laplacian_pyramid(images[:n] / 127.5 - 1)
                for images in (real_images, fake_images)]
    results = {}
    for real_level, fake_level in zip(*pyramids):
        descriptors = [_patch_descriptors(level, patches_per_image, rng)
                       for level in (real_level, fake_level)]
        results[f'swd_{real_level.shape[1]}'] = 1e3 * sliced_wasserstein(*descriptors, rng=rng)
    results['swd'] = float(np.mean(list(results.values())))
    return results


# ---------------------------------------------------------------------------------------
# All requested metrics of one evaluation
# ---------------------------------------------------------------------------------------

def compute_metrics(real_feats, fake, metrics, seed=0, fid_method='sqrtm'):
    """The requested metrics from real features and fake outputs (features, logits)."""
    fake_feats = fake['features']
    results = {}
    if 'fid' in metrics:
        results['fid'] = frechet_distance(*feature_stats(real_feats),
                                          *feature_stats(fake_feats), method=fid_method)
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
