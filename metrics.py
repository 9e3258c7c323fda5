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


class TooFewSamples(MetricError):
    """A set is too small for the metric; more images fix it (fid.py names the flag)."""


def _check_finite(x, what):
    bad = int(np.size(x) - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise MetricError(f'{what} contain {bad} NaN or infinite values')


def _noise_floor(w):
    """Level below which eigenvalues of a d x d matrix are round-off: d * eps * largest.
    Their square roots (about 1e-8 of the scale each) would otherwise add up."""
    return len(w) * np.finfo(np.float64).eps * float(np.max(np.abs(w), initial=0.0))


# ---------------------------------------------------------------------------------------
# Metrics on features (numpy, float64)
# ---------------------------------------------------------------------------------------

def feature_stats(features):
    """Mean and covariance (float64) of features (N, D)."""
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2:
        raise MetricError(f'need features of shape (N, D), got {features.shape}')
    if len(features) < 2:
        raise TooFewSamples(f'a covariance needs at least 2 feature vectors, got {len(features)}')
    _check_finite(features, 'features')
    return features.mean(axis=0), np.cov(features, rowvar=False)


FID_METHODS = ('sqrtm', 'eigh')


def _sqrtm(a):
    # scipy warns on singular input; non-finite results are handled by the caller.
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return linalg.sqrtm(a)


def _psd_eigenvalues(w, what):
    """Eigenvalues of a symmetric matrix that should be positive semi-definite, with the
    round-off ones (below d * eps of the largest, either sign) set to 0: with fewer
    samples than dimensions the null space would add sum sqrt(round-off) to the trace.
    Clearly negative ones mean the input is not a covariance."""
    scale = max(float(np.max(np.abs(w))), np.finfo(np.float64).tiny)
    if w.min() < -1e-8 * scale:
        raise ValueError(f'{what} has an eigenvalue of {w.min():.3g} (largest {scale:.3g}): '
                         'not positive semi-definite; are the inputs covariances?')
    return np.where(w > _noise_floor(w), w, 0.0)


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

    Fewer samples than dimensions (singular covariances): eigh sets the round-off
    eigenvalues to 0, so identical sets give 0 to 1e-8; sqrtm keeps the reference's
    sqrt of round-off, about -4e-6 for two identical sets of 50 samples in 128-d.
    """
    mu1, mu2 = np.atleast_1d(mu1).astype(np.float64), np.atleast_1d(mu2).astype(np.float64)
    sigma1 = np.atleast_2d(sigma1).astype(np.float64)
    sigma2 = np.atleast_2d(sigma2).astype(np.float64)
    if mu1.shape != mu2.shape or sigma1.shape != sigma2.shape:
        raise ValueError(f'shapes differ: {mu1.shape}/{mu2.shape}, {sigma1.shape}/{sigma2.shape}')
    for value, what in ((mu1, 'mu1'), (sigma1, 'sigma1'), (mu2, 'mu2'), (sigma2, 'sigma2')):
        _check_finite(value, what)
    if method == 'sqrtm':
        tr_covmean = _trace_sqrt_product_sqrtm(sigma1, sigma2, eps)
    elif method == 'eigh':
        tr_covmean = _trace_sqrt_product_eigh(sigma1, sigma2, sqrt_sigma1)
    else:
        raise ValueError(f'unknown FID method {method!r}; use one of {FID_METHODS}')
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * tr_covmean)


def _two_sets(feats_a, feats_b, what):
    """Both feature sets as float64 (N, D) arrays of one D, finite."""
    sets = [np.asarray(f, dtype=np.float64) for f in (feats_a, feats_b)]
    for x in sets:
        if x.ndim != 2:
            raise MetricError(f'{what} needs features of shape (N, D), got {x.shape}')
        _check_finite(x, 'features')
    if sets[0].shape[1] != sets[1].shape[1]:
        raise MetricError(f'{what}: feature sizes differ, {sets[0].shape} and {sets[1].shape}')
    return sets


def kid(feats_a, feats_b, n_subsets=100, subset_size=1000, seed=0):
    """Kernel Inception Distance (Binkowski et al. 2018): the unbiased MMD^2 with the cubic
    kernel k(x, y) = (x.y / d + 1)^3 on n_subsets random subsets of subset_size rows of
    each set (drawn without replacement); returns its mean and its std over the subsets
    (np.std, ddof 0, as the authors' code and torch-fidelity), i.e. the spread of one
    subset's estimate, not the standard error of the mean.

    A set smaller than subset_size: the subsets take m = min(subset_size, len(a), len(b))
    rows (with a RuntimeWarning); when m equals both set sizes every subset is the whole
    set and the std is 0.
    """
    a, b = _two_sets(feats_a, feats_b, 'KID')
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise TooFewSamples(f'KID needs at least 2 samples in each set, got {len(a)} and '
                            f'{len(b)}')
    if m < subset_size:
        warnings.warn(f'KID subsets of {m} samples instead of {subset_size}: a set has only '
                      f'{min(len(a), len(b))}', RuntimeWarning)
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


def _check_probabilities(probs, splits):
    if probs.ndim != 2:
        raise MetricError(f'IS needs class probabilities of shape (N, classes), got '
                          f'{probs.shape}')
    _check_finite(probs, 'class probabilities')
    sums = probs.sum(axis=1)
    if probs.min() < 0 or np.max(np.abs(sums - 1)) > 1e-3:
        raise MetricError(f'IS needs probabilities (>= 0, rows summing to 1), got values in '
                          f'[{probs.min():.3g}, {probs.max():.3g}] and row sums in '
                          f'[{sums.min():.3g}, {sums.max():.3g}]: logits? take a softmax')
    if len(probs) < max(2, splits):
        # Every split needs an image; the IS of one image is 1 whatever it shows.
        raise TooFewSamples(f'IS with {splits} splits needs at least {max(2, splits)} '
                            f'images, got {len(probs)}')


def inception_score(probs, splits=10):
    """Inception Score (Salimans et al. 2016): mean and std (ddof 0) over `splits` chunks of
    exp(E_x KL(p(y|x) || p(y))), p(y) the chunk's mean prediction.

    Chunk i is rows floor(i N / splits) to floor((i + 1) N / splits), as the OpenAI code
    and torch-fidelity split (np.array_split would put the larger chunks first).
    """
    probs = np.asarray(probs, dtype=np.float64)
    _check_probabilities(probs, splits)
    bounds = [i * len(probs) // splits for i in range(splits + 1)]
    scores = []
    for start, stop in zip(bounds[:-1], bounds[1:]):
        part = probs[start:stop]
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


def _centred(x, center):
    # |a|^2 + |b|^2 - 2ab loses the digits of the distance to cancellation when the
    # points are far from the origin (0.02 at an offset of 300 in float32); distances
    # do not change with the origin, so it is moved to the data first (in float64).
    return (x - center).astype(np.float32)


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
    """Fraction of query rows inside at least one ball around a reference row (a point
    on a ball's surface counts as inside: `<=`, as the NVlabs code)."""
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
    to the k-th nearest neighbour (the point itself not counted). Precision is the
    fraction of fakes inside a real ball (`<=`), recall the fraction of reals inside a
    fake ball, as the NVlabs code. Distances are taken in float32 row blocks (50k x 2048
    features fit in memory) after moving the origin to the data in float64: to each set's
    mean for its k-NN radii, to the real mean between the sets.
    """
    real, fake = _two_sets(real_feats, fake_feats, 'precision/recall')
    if min(len(real), len(fake)) <= k:
        raise TooFewSamples(f'precision/recall with k={k} needs more than {k} samples per '
                            f'set, got {len(real)} real and {len(fake)} generated')
    center = real.mean(axis=0)
    real_radii = _knn_sq_radii(_centred(real, center), k)
    fake_radii = _knn_sq_radii(_centred(fake, fake.mean(axis=0)), k)
    real32, fake32 = _centred(real, center), _centred(fake, center)
    return _coverage(fake32, real32, real_radii), _coverage(real32, fake32, fake_radii)


# ---------------------------------------------------------------------------------------
# Sliced Wasserstein distance on image patches (Karras et al. 2018), no feature network
# ---------------------------------------------------------------------------------------

_BINOMIAL_5 = np.array([1, 4, 6, 4, 1], np.float32) / 16
SWD_MIN_SIZE = 16  # the coarsest level of ProGAN's pyramid
NHOOD = 7          # neighbourhood (patch) side


def _blur(images):
    """5x5 binomial blur ([1, 4, 6, 4, 1] / 16 in each direction) of (N, H, W, C), with
    mirrored borders (edge pixel not repeated: scipy.ndimage mode 'mirror', as ProGAN)."""
    padded = np.pad(images, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='reflect')
    h, w = images.shape[1:3]
    rows = sum(k * padded[:, i:i + h] for i, k in enumerate(_BINOMIAL_5))
    return sum(k * rows[:, :, i:i + w] for i, k in enumerate(_BINOMIAL_5))


def _pyr_down(images):
    """Blur, then every 2nd pixel from the first: H -> ceil(H / 2) (cv2.pyrDown)."""
    return _blur(images)[:, ::2, ::2]


def _pyr_up(images, shape):
    """Zero insertion into an (h, w) grid, then the blur with 4x the kernel (cv2.pyrUp):
    the zeros halve the mean in each direction. Pixel i lands on 2i, so a ramp stays
    in place (np.repeat would shift it by half a pixel)."""
    up = np.zeros((len(images), *shape, images.shape[3]), images.dtype)
    up[:, ::2, ::2] = images
    return 4 * _blur(up)


def pyramid_sizes(height, width, min_size=SWD_MIN_SIZE):
    """(h, w) of each level: the image, then ceil(h / 2) x ceil(w / 2) while both sides
    of the next level are >= min_size. Powers of two give ProGAN's levels (32: 32, 16)."""
    sizes = [(height, width)]
    while min(-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)) >= min_size:
        sizes.append((-(-sizes[-1][0] // 2), -(-sizes[-1][1] // 2)))
    return sizes


def laplacian_pyramid(images, min_size=SWD_MIN_SIZE):
    """[band-pass levels from the full size down, then the low-pass], float32, levels as
    `pyramid_sizes`: level_i = g_i - pyr_up(g_{i+1}), g_0 the image, g_{i+1} =
    pyr_down(g_i). Any size; the image is g_last + the band-pass levels brought up."""
    current = np.asarray(images, np.float32)
    levels = []
    for _ in pyramid_sizes(*current.shape[1:3], min_size)[1:]:
        down = _pyr_down(current)
        levels.append(current - _pyr_up(down, current.shape[1:3]))
        current = down
    return levels + [current]


def _patch_descriptors(level, per_image, rng, size=NHOOD):
    """(N * per_image, C*size*size) random size x size neighbourhoods of one level, in
    ProGAN's (channel, y, x) order, normalised per channel by the mean and std over all
    of them (ProGAN's finalize_descriptors); a channel with std 0 is only centred.

    Top-left corners: ys = rng.integers(0, H - size + 1, (N, per_image)), then xs alike.
    """
    n, h, w, c = level.shape
    ys = rng.integers(0, h - size + 1, (n, per_image))
    xs = rng.integers(0, w - size + 1, (n, per_image))
    offsets = np.arange(size)
    rows = (ys[..., None] + offsets)[..., :, None]           # (N, P, size, 1)
    cols = (xs[..., None] + offsets)[..., None, :]           # (N, P, 1, size)
    patches = level[np.arange(n)[:, None, None, None], rows, cols]  # (N, P, size, size, C)
    patches = patches.reshape(-1, size, size, c).transpose(0, 3, 1, 2)
    patches = patches - patches.mean(axis=(0, 2, 3), keepdims=True)
    std = patches.std(axis=(0, 2, 3), keepdims=True)
    patches = patches / np.where(std > 0, std, 1)
    return patches.reshape(len(patches), -1).astype(np.float32)


def sliced_wasserstein(a, b, n_directions=128, n_repeats=4, rng=None, directions=None):
    """Sliced Wasserstein-1 distance of two equal-size sets of descriptors (N, D): the
    rows projected on random unit directions, each projection sorted, the mean absolute
    difference; averaged over repeats (ProGAN: 4 repeats of 128 directions).

    directions: (n_repeats, D, n) or (D, n) arrays used instead of rng.standard_normal
    ((D, n_directions)) per repeat; each column is normalised to unit length.
    """
    a, b = np.asarray(a, np.float32), np.asarray(b, np.float32)
    if a.ndim != 2 or a.shape != b.shape:
        raise MetricError(f'sliced_wasserstein needs two sets of one shape (N, D), got '
                          f'{a.shape} and {b.shape}')
    if directions is None:
        rng = rng or np.random.default_rng(0)
        directions = [rng.standard_normal((a.shape[1], n_directions))
                      for _ in range(n_repeats)]
    elif np.ndim(directions) == 2:
        directions = [directions]
    distances = []
    for dirs in directions:
        dirs = np.asarray(dirs, np.float64)
        dirs = (dirs / np.linalg.norm(dirs, axis=0, keepdims=True)).astype(np.float32)
        # (direction, row): each direction's projections contiguous, so sorting is fast.
        proj_a = np.sort(dirs.T @ a.T, axis=1)
        proj_b = np.sort(dirs.T @ b.T, axis=1)
        distances.append(np.mean(np.abs(proj_a - proj_b)))
    return float(np.mean(distances))


def _check_images(images, what):
    images = np.asarray(images)
    if images.ndim != 4:
        raise MetricError(f'SWD needs {what} images of shape (N, H, W, C), got {images.shape}')
    if min(images.shape[1:3]) < SWD_MIN_SIZE:
        raise MetricError(f'SWD needs images of at least {SWD_MIN_SIZE}x{SWD_MIN_SIZE}, got '
                          f'{images.shape[1]}x{images.shape[2]}')
    if len(images) < 2:
        raise TooFewSamples(f'SWD needs at least 2 {what} images, got {len(images)}')
    _check_finite(images, f'{what} images')
    return images


def swd(real_images, fake_images, patches_per_image=128, seed=0, n_directions=128,
        n_repeats=4, directions=None):
    """Sliced Wasserstein distance of Karras et al. 2018 (ProGAN's released code) between
    two sets of (N, H, W, C) images (uint8 or float, any scale: the descriptors are
    normalised), x 1e3: {'swd_<h>': one per pyramid level, h its height; 'swd': mean}.

    Per level of the Laplacian pyramid (`laplacian_pyramid`: 5x5 binomial filter,
    zero-insertion upsampling, mirrored borders; levels halve, rounding up, while both
    sides stay >= 16, so 64 -> 64, 32, 16; 50 -> 50, 25; 48x40 -> 48x40, 24x20; 37 -> 37, 19),
    patches_per_image random 7x7 neighbourhoods of each image, normalised per channel over
    each set, are compared by `sliced_wasserstein` (n_repeats x n_directions directions).
    Unequal sets: the first min(N_real, N_fake) images of each are used, as ProGAN
    compares equal counts. Random numbers: np.random.default_rng(seed), level by level,
    the real set's then the fake set's corners, then that level's directions (unless
    `directions` is given: then the same ones at every level).

    No feature network is involved, so it works offline; its values are not comparable
    with FID.
    """
    real_images = _check_images(real_images, 'real')
    fake_images = _check_images(fake_images, 'generated')
    if real_images.shape[1:] != fake_images.shape[1:]:
        raise MetricError(f'SWD needs images of one size, got {real_images.shape[1:]} and '
                          f'{fake_images.shape[1:]}')
    n = min(len(real_images), len(fake_images))
    rng = np.random.default_rng(seed)
    pyramids = [laplacian_pyramid(images[:n]) for images in (real_images, fake_images)]
    results = {}
    for real_level, fake_level in zip(*pyramids):
        descriptors = [_patch_descriptors(level, patches_per_image, rng)
                       for level in (real_level, fake_level)]
        results[f'swd_{real_level.shape[1]}'] = 1e3 * sliced_wasserstein(
            *descriptors, n_directions, n_repeats, rng=rng, directions=directions)
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
