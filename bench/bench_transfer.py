"""Few-shot transfer (train.py --init_from, freeze_d, ada_target) on data made here.

The source is the embedded default (the demo preset on the generated shapes, 600
iterations, seed 0; trained here if work_dir/source-600 is absent). The target is one class
of the labelled shapes (default: the red circles, one larger shape on a plain background,
unlike the source's one or two shapes on gradients): TARGET_N training images, and
2 x --n_images held-out images of the same class. Every arm trains --iters iterations on
the target with the demo preset's training keys and DiffAugment color,translation, two
seeds each:

  scratch     random weights
  init        --init_from the source
  init+freezeD  --init_from the source, --set freeze_d=2 (D's input conv and down block)
  init+ADA    --init_from the source, --set ada_target=0.6 (p per image, ada_kimg below)

Quality: KID and SWD of --n_images EMA samples against held-out target images. There are
no Inception weights offline, so KID is computed (metrics.kid, the cubic kernel) on
pixel features: the images average-pooled to 8x8x3 and scaled to [-1, 1]; it is not the
Inception KID of the papers, only the same estimator. SWD x1e3 is metrics.swd (ProGAN's).
The floor is real vs real: two disjoint held-out sets; "copy" is the TARGET_N training
images themselves vs the held-out set (what a G that memorised them would score).

    python bench/bench_transfer.py --record
"""
import os
import shutil
import time

import numpy as np

from common import ROOT, record, run_parser, run_summary, samples, train_to

TARGET_N = 150
POLICY = 'color,translation'
ARMS = {
    'scratch': [],
    'init': ['--init_from', '{source}'],
    'init+freezeD': ['--init_from', '{source}', '--set', 'freeze_d=2'],
    'init+ADA': ['--init_from', '{source}', '--set', 'ada_target=0.6', '--set',
                 'ada_kimg={ada_kimg}'],
}
SOURCE_ITERS = 600


def parse_args(argv=None):
    parser = run_parser(__doc__, 'bench_transfer')
    parser.add_argument('--seeds', default='0,1', help='comma-separated seeds (default 0,1)')
    parser.add_argument('--target_class', default='circle',
                        help='class of the labelled shapes used as the target (default circle)')
    parser.add_argument('--ada_kimg', type=float, default=2,
                        help="ada_kimg of the ADA arm: p can go 0 -> 1 in this many thousand "
                             "images (default 2, about 60 iterations of 32)")
    parser.add_argument('--arms', default=','.join(ARMS), help='comma-separated arms')
    parser.set_defaults(iters=200, n_images=500)
    args = parser.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(',') if s.strip()]
    args.arms = [a for a in args.arms.split(',') if a.strip()]
    return args


def load(paths):
    from PIL import Image
    return np.stack([np.asarray(Image.open(p).convert('RGB')) for p in paths])


def target_sets(args):
    """(folder of the TARGET_N training images, held-out images, other held-out images)."""
    import data
    import shapes_data
    import train as train_cli
    labels = data.read_labels(shapes_data.make_shapes_dataset(train_cli.LABELLED_DATA_DIR,
                                                       labelled=True))
    k = labels.names.index(args.target_class)
    files = [f for f, label in zip(labels.files, labels.labels) if label == k]
    need = TARGET_N + 2 * args.n_images
    if len(files) < need:
        raise SystemExit(f'class {args.target_class} has {len(files)} images, need {need}')
    folder = os.path.join(args.work_dir, f'target-{args.target_class}-{TARGET_N}')
    if not os.path.isdir(folder):
        os.makedirs(folder + '.tmp', exist_ok=True)
        for f in files[:TARGET_N]:
            shutil.copy(f, folder + '.tmp')
        os.replace(folder + '.tmp', folder)
    held = files[TARGET_N:]
    return folder, load(held[:args.n_images]), load(held[args.n_images:2 * args.n_images])


def pixel_features(images):
    """uint8 (N, 32, 32, 3) -> (N, 192): 4x4 average pools, scaled to [-1, 1]."""
    n, h, w, c = images.shape
    pooled = images.reshape(n, 8, h // 8, 8, w // 8, c).mean(axis=(2, 4))
    return (pooled.reshape(n, -1) / 127.5 - 1).astype(np.float64)


def quality(real, fake):
    import metrics
    kid, _ = metrics.kid(pixel_features(real), pixel_features(fake), subset_size=len(real))
    return kid * 1e3, metrics.swd(real, fake)['swd']


def mean_sd(values):
    return f'{np.mean(values):.2f} ± {np.std(values):.2f}' if len(values) > 1 else \
        f'{values[0]:.2f}'


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    source = os.path.join(args.work_dir, f'source-{SOURCE_ITERS}')
    train_to(source, SOURCE_ITERS, ['--seed', '0'])  # the embedded default; reused if done
    folder, held, other_held = target_sets(args)
    floor = quality(held, other_held)
    copy = quality(held, load(sorted(os.path.join(folder, f) for f in os.listdir(folder))))
    print(f'floor (real vs real) KID x1e3 {floor[0]:.2f}, SWD {floor[1]:.1f}; copy of the '
          f'{TARGET_N} training images {copy[0]:.2f}, {copy[1]:.1f}', flush=True)
    results = {arm: [] for arm in args.arms}
    for seed in args.seeds:
        for arm in args.arms:
            flags = [f.format(source=source, ada_kimg=args.ada_kimg) for f in ARMS[arm]]
            model_dir = os.path.join(args.work_dir, f'{arm}-seed{seed}-{args.iters}')
            train_to(model_dir, args.iters,
                     ['--file_pattern', folder, '--preset', 'demo', '--seed', str(seed),
                      '--metrics_inter', str(args.iters // 4), '--set', f'policy={POLICY}',
                      *flags])
            kid, swd = quality(held, samples(model_dir, args.n_images))
            finite, speed = run_summary(model_dir)
            results[arm].append((kid, swd))
            print(f'{arm} seed {seed}: KID x1e3 {kid:.2f}, SWD {swd:.1f} ({speed:.0f} img/s'
                  + ('' if finite else ', losses NOT FINITE') + f'; {time.time() - started:.0f}'
                  f' s so far)', flush=True)
    minutes = (time.time() - started) / 60
    lines = [f'target: {TARGET_N} {args.target_class} images of the labelled shapes; source: '
             f'the embedded default ({SOURCE_ITERS} iterations on the shapes); every arm '
             f'{args.iters} iterations of batch 32 (demo preset, policy {POLICY}), seeds '
             f"{','.join(map(str, args.seeds))}; {args.n_images} EMA samples vs "
             f'{args.n_images} held-out target images; KID x1e3 on 8x8 pixel features (no '
             f'Inception offline), SWD x1e3; {minutes:.0f} min in all',
             f'floor (real vs real): KID {floor[0]:.2f}, SWD {floor[1]:.1f}; the '
             f'{TARGET_N} training images themselves: KID {copy[0]:.2f}, SWD {copy[1]:.1f}',
]
    for arm, values in results.items():
        kids, swds = zip(*values)
        lines.append(f'{arm}: KID {mean_sd(kids)}, SWD {mean_sd(swds)} (mean ± sd over '
                     f'seeds; per seed KID/SWD ' + ', '.join(f'{k:.2f}/{s:.1f}' for k, s in values)
                     + ')')
    for line in lines:
        print(line)
    if args.record:
        record('bench_transfer.py', lines)


if __name__ == '__main__':
    os.chdir(ROOT)
    main()
