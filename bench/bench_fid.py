"""Cost of FID: feature extraction speed, one in-training evaluation done our way against
the authors' way at equal N, and sqrtm against eigh for the Frechet distance.

    python bench/bench_fid.py --record     # ~3 min on 2 idle CPU cores; appends to bench/RESULTS.md
    python bench/bench_fid.py --n 500 --preset celeba_64

Offline and without weights files: Keras InceptionV3 with random weights (weights=None)
costs the same as with the ImageNet weights. The tf2015 network is not measured: the
real graph cannot be downloaded here and the small stand-in graph of the tests says
nothing about its speed. The generator is the chosen preset with random weights, the
real images a procedural data set (shapes_data.make_shapes_dataset).

In-training evaluation, N fakes against N real images, with compiled programs (ours after
one warm-up call; the authors' way then reuses the same compiled sampler and extractor):
- ours (fid.InLoopFID): EMA samples from one XLA program, quantised in memory, Keras
  features, real statistics computed once and cached (disk and memory), Frechet
  distance by eigh with the square root of the real covariance computed once.
- the authors' way: the same samples written as PNG files, read back, the real
  images read and their features computed again every time, Frechet distance by
  scipy.linalg.sqrtm. Same extractor (XLA) and generator, so the difference is the
  protocol only.
Both use the same noise, so their FIDs must agree (PNG round trip is exact).

sqrtm vs eigh: 2048-d covariances of synthetic Inception-like features (power-law
spectrum, non-negative), --n_cov samples per set.
"""
import argparse
import os
import shutil
import tempfile
import time

import numpy as np
from common import record

import metrics  # noqa: E402  (common puts the project on sys.path)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=100,
                   help='images per set in the in-training evaluation (default 100; '
                        'training uses n_fid_real=2500)')
    p.add_argument('--preset', default='tiny', help='generator preset (default tiny, 32x32)')
    p.add_argument('--batch_size', type=int, default=50,
                   help='generation and feature batch size (default 50, as the authors)')
    p.add_argument('--feature_batches', type=int, default=2,
                   help='timed batches for the feature extraction speed (default 2)')
    p.add_argument('--dim', type=int, default=2048, help='covariance size (default 2048)')
    p.add_argument('--n_cov', type=int, default=2500,
                   help='samples per set for the sqrtm/eigh covariances (default 2500)')
    p.add_argument('--work_dir', help='where images and statistics go (default: a temp dir, '
                                      'removed afterwards)')
    p.add_argument('--record', action='store_true',
                   help='append the result lines to bench/RESULTS.md')
    return p.parse_args()


class Timer:
    def __init__(self):
        self.times = {}

    def __call__(self, name):
        timer = self

        class Section:
            def __enter__(self):
                self.start = time.perf_counter()

            def __exit__(self, *exc):
                timer.times[name] = timer.times.get(name, 0.0) + time.perf_counter() - self.start

        return Section()


def power_law_features(rng, n, d, scale=1.0):
    """Inception-like features: power-law covariance spectrum in a random basis, ReLU."""
    basis, _ = np.linalg.qr(rng.normal(size=(d, d)))
    spectrum = 5.0 * np.arange(1, d + 1) ** -1.3
    shift = np.abs(rng.normal(0.3, 0.2, d))
    return np.maximum((rng.normal(size=(n, d)) * np.sqrt(spectrum)) @ basis + shift, 0) * scale


def bench_sqrtm_eigh(d, n, seed=0):
    rng = np.random.default_rng(seed)
    real = metrics.feature_stats(power_law_features(rng, n, d))
    fake = metrics.feature_stats(power_law_features(rng, n, d, scale=1.05))
    t = time.perf_counter()
    ref = metrics.frechet_distance(*real, *fake, method='sqrtm')
    t_sqrtm = time.perf_counter() - t
    t = time.perf_counter()
    full = metrics.frechet_distance(*real, *fake, method='eigh')
    t_eigh = time.perf_counter() - t
    t = time.perf_counter()
    root = metrics.sqrt_psd(real[1])
    t_root = time.perf_counter() - t
    t = time.perf_counter()
    cached = metrics.frechet_distance(*real, *fake, method='eigh', sqrt_sigma1=root)
    t_cached = time.perf_counter() - t
    rel = max(abs(full - ref), abs(cached - ref)) / abs(ref)
    return (f'Frechet distance, {d}-d covariances of {n} synthetic features: sqrtm '
            f'{t_sqrtm:.1f} s, eigh {t_eigh:.1f} s ({t_sqrtm / t_eigh:.1f}x faster), eigh with '
            f'the real sqrt cached {t_cached:.1f} s ({t_sqrtm / t_cached:.0f}x faster; the '
            f'sqrt itself {t_root:.1f} s once); FID {ref:.6g}, relative difference {rel:.1e}')


def authors_way(fid, sampler, extractor, real_files, n, img_size, batch_size, png_dir, seed,
                timer):
    """The authors' monitor: PNGs written and read back, real features every time, sqrtm."""
    from PIL import Image
    shutil.rmtree(png_dir, ignore_errors=True)
    os.makedirs(png_dir)
    paths = []
    with timer('generate + write PNG'):
        for batch in sampler.batches(n, seed):
            for image in batch:
                paths.append(os.path.join(png_dir, f'{len(paths):05d}.png'))
                Image.fromarray(image).save(paths[-1])
    with timer('read PNG + fake features'):
        fake = fid.compute_features(fid.read_images(paths, img_size, batch_size), extractor,
                                    n=n)['features']
    with timer('read real + real features'):
        real = fid.compute_features(fid.read_images(real_files, img_size, batch_size),
                                    extractor, n=n)['features']
    with timer('sqrtm FID'):
        return metrics.frechet_distance(*metrics.feature_stats(real),
                                        *metrics.feature_stats(fake), method='sqrtm')


def main():
    args = parse_args()
    import config
    import fid
    import model
    import shapes_data

    conf = config.get_config(args.preset, n_fid_real=args.n, fid_batch_size=args.batch_size,
                             gen_batch_size=args.batch_size)
    img_size = conf['img_size']
    work = args.work_dir or tempfile.mkdtemp(prefix='bench_fid-')
    lines = []
    try:
        # Feature extraction speed.
        extractor = fid.KerasInception(weights=None)
        images = np.random.default_rng(0).integers(0, 256, (args.batch_size, img_size,
                                                            img_size, 3), dtype=np.uint8)
        extractor(images)  # compile
        t = time.perf_counter()
        for _ in range(args.feature_batches):
            extractor(images)
        rate = args.feature_batches * args.batch_size / (time.perf_counter() - t)
        lines.append(f'feature extraction, Keras InceptionV3 (XLA, random weights = same cost), '
                     f'batch {args.batch_size}, {img_size}px uint8 -> 299px: {rate:.1f} images/s '
                     f'(tf2015 not measured: its graph cannot be downloaded offline)')
        print(lines[-1], flush=True)

        # One in-training evaluation, ours against the authors' way, at equal N.
        pattern = shapes_data.make_shapes_dataset(os.path.join(work, 'real'), args.n, img_size)
        generator = model.build_generator(conf, name='ema_generator')
        stub = fid.KerasInception  # the monitor builds its own extractor: reuse ours
        fid.KerasInception = lambda weights: extractor
        try:
            t = time.perf_counter()
            monitor = fid.InLoopFID(pattern, conf, weights=None,
                                    cache_dir=os.path.join(work, 'stats'))
            t_setup = time.perf_counter() - t
        finally:
            fid.KerasInception = stub
        t = time.perf_counter()
        fid.real_stats(fid.select_files(fid.find_images(pattern), args.n, 42), args.n,
                       img_size, extractor.name, extractor, os.path.join(work, 'stats'),
                       batch_size=args.batch_size)
        t_cached = time.perf_counter() - t
        monitor(generator, seed=1)  # warm-up: compiles the generator
        t = time.perf_counter()
        ours = monitor(generator, seed=2)
        t_ours = time.perf_counter() - t

        t = time.perf_counter()
        metrics.frechet_distance(monitor.real['mu'], monitor.real['sigma'], monitor.real['mu'],
                             monitor.real['sigma'], method='eigh',
                             sqrt_sigma1=monitor.sqrt_sigma_real)
        t_fid_ours = time.perf_counter() - t

        # The monitor's compiled sampler and extractor: no warm-up needed.
        real_files = fid.select_files(fid.find_images(pattern), args.n, 42)  # as the monitor
        timer = Timer()
        t = time.perf_counter()
        theirs = authors_way(fid, monitor.sampler, extractor, real_files, args.n, img_size,
                             args.batch_size, os.path.join(work, 'png'), 2, timer)
        t_theirs = time.perf_counter() - t
        rel = abs(ours - theirs) / abs(theirs)
        stages = ', '.join(f'{k} {v:.1f} s' for k, v in timer.times.items())
        lines.append(
            f'in-training FID, {args.preset} generator ({img_size}px), N={args.n} fakes vs '
            f'{args.n} reals, 2048-d Keras features: ours {t_ours:.1f} s per evaluation '
            f'(XLA samples in memory, cached real statistics, eigh) vs the authors\' way '
            f'{t_theirs:.1f} s (PNG round trip, real features recomputed, sqrtm: {stages}): '
            f'{t_theirs / t_ours:.1f}x faster; same noise -> FID {ours:.6g} vs {theirs:.6g} '
            f'(relative difference {rel:.1e}). Setup once: {t_setup:.1f} s (real statistics '
            f'and their sqrt), {t_cached:.2f} s when the statistics are read from the cache')
        print(lines[-1], flush=True)
        ours_2500 = (t_ours - t_fid_ours) / args.n * 2500 + t_fid_ours
        t_sqrtm = timer.times['sqrtm FID']
        theirs_2500 = (t_theirs - t_sqrtm) / args.n * 2500 + t_sqrtm
        lines.append(
            f'estimate for N=2500 (training default), per-image stages scaled linearly, '
            f'FID step fixed (ours eigh {t_fid_ours:.1f} s, theirs sqrtm {t_sqrtm:.1f} s): '
            f'ours ~{ours_2500:.0f} s vs authors\' way ~{theirs_2500:.0f} s per evaluation '
            f'({theirs_2500 / ours_2500:.1f}x)')
        print(lines[-1], flush=True)

        lines.append(bench_sqrtm_eigh(args.dim, args.n_cov))
        print(lines[-1], flush=True)
        load = os.getloadavg()[0]
        lines.append(f'load average at the end {load:.1f} on {os.cpu_count()} cores '
                     f'(shared machine: times are noisy)')
    finally:
        if not args.work_dir:
            shutil.rmtree(work, ignore_errors=True)
    print('\n'.join(lines))
    if args.record:
        record('bench_fid.py', lines)


if __name__ == '__main__':
    main()
