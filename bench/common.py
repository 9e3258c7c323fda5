"""Shared helpers of the bench scripts: machine description and RESULTS.md lines, a fixed
training batch, and the short training runs compared by SWD (bench_precision, bench_ema,
bench_recipe)."""
import argparse
import datetime
import glob
import json
import math
import os
import platform
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'RESULTS.md')


def machine():
    import tensorflow as tf
    cpu = platform.processor() or platform.machine()
    try:
        with open('/proc/cpuinfo') as f:
            cpu = next(line.split(':', 1)[1].strip() for line in f if 'model name' in line)
    except (OSError, StopIteration):
        pass
    return f'{cpu}, {os.cpu_count()} cores, TF {tf.__version__}'


def commit():
    """The checked-out commit ('+changes' when tracked files other than RESULTS.md differ
    from it), or 'unknown' outside a git checkout."""
    try:
        head = subprocess.run(['git', 'rev-parse', '--short', 'HEAD'], capture_output=True,
                              text=True, cwd=ROOT, check=True).stdout.strip()
        dirty = subprocess.run(['git', 'status', '--porcelain', '--untracked-files=no', '--',
                                '.', ':!bench/RESULTS.md'],
                               capture_output=True, text=True, cwd=ROOT, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 'unknown'
    return head + ('+changes' if dirty.strip() else '')


def record(script, lines):
    """Appends a dated section of result lines to bench/RESULTS.md and prints it."""
    header = (f'\n## {datetime.date.today().isoformat()} {script} ({machine()}; '
              f'commit {commit()})\n')
    text = header + ''.join(f'- {line}\n' for line in lines)
    print(text)
    with open(RESULTS, 'a') as f:
        f.write(text)


def fixed_batch(conf, seed):
    """(images, noise_d, noise_g) of one global batch, the same for every variant."""
    import numpy as np
    rng = np.random.default_rng(seed)
    size, batch, noise_dim = conf['img_size'], conf['batch_size'], conf['noise_dim']
    images = rng.uniform(-1, 1, (batch, size, size, 3)).astype(np.float32)
    noise_d = rng.standard_normal((batch, noise_dim)).astype(np.float32)
    noise_g = rng.standard_normal((batch, noise_dim)).astype(np.float32)
    return images, noise_d, noise_g


# ---------------------------------------------------------------------------------------
# Short training runs of the embedded default, compared by SWD
# ---------------------------------------------------------------------------------------

def run_parser(doc, work_subdir):
    """The options of the benches that train the embedded default and compare by SWD."""
    parser = argparse.ArgumentParser(description=doc,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--iters', type=int, default=600,
                        help='training iterations per run (default 600, the embedded default)')
    parser.add_argument('--n_images', type=int, default=1000,
                        help='samples and real images compared per run (default 1000)')
    parser.add_argument('--work_dir', default=os.path.join(ROOT, '.cache', work_subdir),
                        help=f'where the runs are written (default .cache/{work_subdir})')
    parser.add_argument('--record', action='store_true',
                        help='append the results to bench/RESULTS.md')
    return parser


def train_to(model_dir, total_iter, flags):
    """Runs `train.py FLAGS` into model_dir up to iteration total_iter (it resumes from the
    folder's last checkpoint) without FID, and returns its console output."""
    command = [sys.executable, os.path.join(ROOT, 'train.py'), '--model_dir', model_dir,
               '--total_iter', str(total_iter), '--fid_inter', str(total_iter), '--no_fid',
               *flags]
    print(f'training to iteration {total_iter} -> {model_dir}', flush=True)
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        sys.exit(f'train.py {" ".join(flags)} failed:\n{result.stderr[-2000:]}')
    return result.stdout


def train(name, flags, args):
    """Trains `train.py FLAGS` for args.iters iterations in work_dir/NAME-ITERS (a complete
    run there is reused: train.py resumes at its end) and returns the directory."""
    model_dir = os.path.join(args.work_dir, f'{name}-{args.iters}')
    train_to(model_dir, args.iters, flags)
    return model_dir


def logged_metrics(model_dir):
    """The run's metrics.jsonl entries."""
    with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
        return [json.loads(line) for line in f]


def run_summary(model_dir):
    """(every logged loss finite, mean images/s) of a run."""
    logged = logged_metrics(model_dir)
    finite = all(math.isfinite(entry[k]) for entry in logged
                 for k in ('d_loss', 'g_loss', 'gp'))
    speed = sum(entry['images_per_sec'] for entry in logged) / len(logged)
    return finite, speed


def samples(model_dir, n, ema=True):
    import numpy as np

    import checkpoints
    import utils
    generator = checkpoints.load_generator(model_dir, ema=ema)
    noise = np.random.default_rng(123).standard_normal((n, generator.noise_dim))
    images = [generator(noise[i:i + 100].astype(np.float32), training=False)[0]
              for i in range(0, n, 100)]
    return utils.to_uint8(np.concatenate(images))


def ema_and_raw_swd(real, model_dir, n):
    """SWD x1e3 to the real images of n samples of the run's EMA generator and of its raw G."""
    import metrics
    return tuple(metrics.swd(real, samples(model_dir, n, ema=ema))['swd'] for ema in (True, False))


def real_images(n):
    import numpy as np
    from PIL import Image
    files = sorted(glob.glob(os.path.join(ROOT, '.cache', 'shapes32', '*.png')))
    if len(files) < 2 * n:
        sys.exit(f'need {2 * n} shapes images in .cache/shapes32 (run python train.py once)')
    load = lambda paths: np.stack([np.asarray(Image.open(p).convert('RGB')) for p in paths])
    return load(files[:n]), load(files[n:2 * n])
