"""Does the `sagan` preset train at its real size and resume? SAGAN's recipe on LadaGAN's
CIFAR-10 backbone (config.py: 20.3M / 6.8M parameters, dot-product attention, spectral
normalisation in G and D, hinge loss) is trained on the labelled shapes
(`python train.py --preset sagan --set n_classes=3`) for --iters iterations at --batch_size:
the first half, then the same command with the full length, which resumes. Checked: every
logged loss is finite, the second command resumed from the first half's checkpoint, and the
checkpoints hold the spectral-norm state (`spectral_u`) and the class embeddings.

    python bench/bench_sagan.py --record    # 300 iterations at batch 16: ~20 min on 2 cores
"""
import argparse
import os
import re
import shutil
import sys

from common import ROOT, logged_metrics, record, run_summary, train_to


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=300, help='iterations (default 300)')
    parser.add_argument('--batch_size', type=int, default=16,
                        help="batch size (default 16; the preset's 128 is 8x slower)")
    parser.add_argument('--work_dir', default=os.path.join(ROOT, '.cache', 'bench_sagan'),
                        help='the run folder, emptied first (default .cache/bench_sagan)')
    parser.add_argument('--record', action='store_true',
                        help='append the result to bench/RESULTS.md')
    return parser.parse_args(argv)


def train(model_dir, total_iter, batch_size):
    """train.py's output of the sagan preset on the labelled shapes up to total_iter."""
    return train_to(model_dir, total_iter,
                    ['--preset', 'sagan', '--set', 'n_classes=3', '--set',
                     f'batch_size={batch_size}', '--metrics_inter', '25'])


def checkpoint_variables(model_dir, n_images):
    import tensorflow as tf
    path = os.path.join(model_dir, 'training-checkpoints', f'ckpt-{n_images}')
    return [name for name, _ in tf.train.list_variables(path)]


def main(argv=None):
    args = parse_args(argv)
    shutil.rmtree(args.work_dir, ignore_errors=True)
    half = args.iters // 2
    train(args.work_dir, half, args.batch_size)
    resumed = train(args.work_dir, args.iters, args.batch_size)
    half_images = half * args.batch_size
    resumed_at = re.search(r'Resumed from \S*ckpt-(\d+)', resumed)
    if not resumed_at or int(resumed_at.group(1)) != half_images:
        sys.exit(f'the second run did not resume from ckpt-{half_images}:\n{resumed[:500]}')
    logged = logged_metrics(args.work_dir)
    finite, speed = run_summary(args.work_dir)
    names = checkpoint_variables(args.work_dir, args.iters * args.batch_size)
    n_u = sum('spectral_u' in name for name in names)
    n_embeddings = sum('class_embedding/embeddings' in name for name in names)
    first, last = logged[0], logged[-1]
    line = (f"sagan preset (cifar10 size) on the labelled shapes (n_classes=3), batch "
            f"{args.batch_size}, {args.iters} iterations as {half} + a resume from ckpt-"
            f"{half_images}: losses {'all finite' if finite else 'NOT FINITE'} over "
            f"{len(logged)} logs (d {first['d_loss']:.3f} -> {last['d_loss']:.3f}, g "
            f"{first['g_loss']:.3f} -> {last['g_loss']:.3f}); the checkpoint holds "
            f"{n_u} spectral_u and {n_embeddings} class-embedding variables "
            f"(G, EMA G, D); {speed:.1f} img/s")
    if args.record:
        record('bench_sagan.py', [line])
    else:
        print(line)
    return 0 if finite else 1


if __name__ == '__main__':
    sys.exit(main())
