"""The three commands as a user meets them at the console: each mistake ends in one line
on stderr (two with a hint) and exit code 2, before TensorFlow loads; --help loads no
TensorFlow; Ctrl-C in fid.py ends in one line."""
import concurrent.futures
import os
import re
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = ('train.py', 'fid.py', 'generate.py')
PREFIX = {'train.py': 'error: ', 'fid.py': 'fid.py: error: ', 'generate.py': 'error: '}
GLOB_HINT = 'hint: the shell expanded a glob into file names: quote the pattern'
READ_ONLY = '{read_only}/out'  # a path in a directory that cannot be written

# name: (arguments, a fragment of the error line). Every case fails before TensorFlow
# loads; train.py's arguments come after `--model_dir run --total_iter 1`, so that a case
# that stopped failing trains one iteration instead of the 600 of the demo preset.
TRAIN = {
    'total_iter_zero': (['--total_iter', '0'], '--total_iter: must be a positive integer'),
    'total_iter_word': (['--total_iter', 'many'], "'many' is not an integer"),
    'seed_negative': (['--seed', '-1'], '--seed: must be in [0, 2**32)'),
    'grad_accum_zero': (['--grad_accum', '0'], '--grad_accum'),
    'unknown_flag': (['--iterations', '5'], 'unrecognized arguments: --iterations'),
    'unquoted_glob': (['--file_pattern', 'a.png', 'b.png', 'c.png'],
                      'unrecognized arguments: b.png c.png'),
    'model_dir_is_a_file': (['--model_dir', 'afile'], 'it is a file'),
    'model_dir_under_a_file': (['--model_dir', 'afile/run'], 'afile is a file'),
    'model_dir_read_only': (['--model_dir', READ_ONLY], 'not writable'),
    'tpu_without_strategy': (['--tpu', 'local'], '--tpu local needs --strategy tpu'),
    'missing_weights': (['--inception_weights', 'none.h5'], '--inception_weights none.h5'),
    'unknown_strategy': (['--strategy', 'gpu'], "invalid choice: 'gpu'"),
    'unknown_preset': (['--preset', 'cifar'], "unknown preset 'cifar'"),
    'set_without_value': (['--set', 'batch_size'], 'KEY=VALUE'),
}
REAL = ['--eval_dir', 'real']
FID = {
    'no_eval_dir': (['--fake_dir', 'real'], 'required: --eval_dir'),
    'no_source': (REAL, 'one of the arguments --fake_dir --model_dir is required'),
    'two_sources': (REAL + ['--fake_dir', 'real', '--model_dir', 'real'], 'not allowed with'),
    'batch_size_zero': (REAL + ['--fake_dir', 'real', '--batch_size', '0'], '--batch_size'),
    'batch_size_word': (REAL + ['--fake_dir', 'real', '--batch_size', 'big'], "'big' is not"),
    'seed_negative': (REAL + ['--fake_dir', 'real', '--seed', '-3'], '--seed'),
    'img_size_zero': (REAL + ['--fake_dir', 'real', '--img_size', '0'], '--img_size'),
    'unknown_network': (REAL + ['--fake_dir', 'real', '--network', 'vgg'], "'vgg'"),
    'out_read_only': (REAL + ['--fake_dir', 'real', '--out', READ_ONLY], 'not writable'),
    'out_under_a_file': (REAL + ['--fake_dir', 'real', '--out', 'afile/r.json'], 'afile'),
    'out_is_a_directory': (REAL + ['--fake_dir', 'real', '--out', 'real'], 'is a directory'),
    'train_flag': (REAL + ['--fake_dir', 'real', '--inception_weights', 'w.h5'],
                   'unrecognized arguments: --inception_weights'),
    'unquoted_glob': (['--eval_dir', 'a.png', 'b.png', 'c.png', '--fake_dir', 'real'],
                      'unrecognized arguments: b.png c.png'),
    'n_real_one': (REAL + ['--fake_dir', 'real', '--n_real', '1'], '--n_real'),
}
MODEL = ['--model_dir', '{fixture}']
GENERATE = {
    'n_zero': (MODEL + ['--n', '0'], '--n: must be a positive integer'),
    'n_word': (MODEL + ['--n', 'ten'], "'ten' is not an integer"),
    'seed_negative': (MODEL + ['--seed', '-1'], '--seed'),
    'negative_truncation': (MODEL + ['--truncation', '-1'], '--truncation'),
    'unknown_flag': (MODEL + ['--samples', '4'], 'unrecognized arguments: --samples'),
    'unquoted_glob': (['--model_dir', 'a.png', 'b.png', 'c.png'], 'unrecognized arguments'),
    'no_model': (['--n', '4'], 'give either --model_dir DIR or --pretrained NAME'),
    'unknown_pretrained': (['--pretrained', 'cifar100'], "invalid choice: 'cifar100'"),
    'missing_model_dir': (['--model_dir', 'nowhere'], '--model_dir nowhere is not a directory'),
    'no_config': (['--model_dir', 'real'], 'config.json'),
    'missing_checkpoint': (MODEL + ['--checkpoint', 'ckpt-9'], 'ckpt-9.index'),
    'jpeg_out': (MODEL + ['--out', 'x.jpg'], '.png'),
    'out_under_a_file': (MODEL + ['--out', 'afile/x.png'], 'afile is a file'),
    'out_read_only': (MODEL + ['--out', READ_ONLY + '.png'], 'not writable'),
    'one_keyframe': (MODEL + ['--n', '1', '--interpolate', '4'], '--n 2'),
    'keras_suffix': (MODEL + ['--export_keras', 'g.h5'], '.keras'),
}
CASES = {'train.py': TRAIN, 'fid.py': FID, 'generate.py': GENERATE}


def read_only_dir(tmp_path):
    if os.geteuid() != 0:
        path = tmp_path / 'read-only'
        path.mkdir()
        path.chmod(0o555)
        return str(path)
    if os.path.isdir('/proc'):  # root may write into read-only directories, not into /proc
        return '/proc'
    pytest.skip('no read-only directory to test with')


@pytest.fixture(scope='module')
def place(tmp_path_factory):
    """A working directory with a file, three PNGs a shell glob could expand to, and a
    folder of real images."""
    root = tmp_path_factory.mktemp('console')
    (root / 'afile').write_text('not a directory')
    (root / 'real').mkdir()
    for name in ('a.png', 'b.png', 'c.png', 'real/0.png', 'real/1.png'):
        Image.new('RGB', (8, 8)).save(root / name)
    return root


def run(script, args, cwd, timeout=120):
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    return subprocess.run([sys.executable, os.path.join(ROOT, script), *args], cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def mistakes(place, fixture_dir, tmp_path_factory):
    """{(script, case): CompletedProcess} of every case, run a few at a time."""
    where = {'fixture': fixture_dir, 'read_only': read_only_dir(tmp_path_factory.mktemp('ro'))}
    jobs = {}
    for script, cases in CASES.items():
        for name, (args, _) in cases.items():
            args = [a.format(**where) for a in args]
            if script == 'train.py':
                args = ['--model_dir', 'run', '--total_iter', '1', *args]
            jobs[script, name] = args
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = {key: pool.submit(run, key[0], args, place) for key, args in jobs.items()}
        return {key: future.result() for key, future in futures.items()}


@pytest.mark.parametrize('script, case', [(s, c) for s in SCRIPTS for c in CASES[s]])
def test_a_mistake_ends_in_one_line_and_exit_code_2(script, case, mistakes, place):
    result = mistakes[script, case]
    lines = result.stderr.splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert 'Traceback' not in result.stderr and 1 <= len(lines) <= 2, result.stderr[-3000:]
    assert lines[0].startswith(PREFIX[script]) and CASES[script][case][1] in lines[0], lines
    hints = [line for line in lines[1:] if line.startswith(GLOB_HINT)]
    assert len(hints) == len(lines) - 1 == (case == 'unquoted_glob'), lines
    assert not os.path.exists(place / 'run')  # train.py wrote nothing


def test_every_script_has_ten_mistakes_in_its_table():
    assert all(len(cases) >= 10 for cases in CASES.values())


# The script's --help, run as `python script --help`, then the modules it loaded.
HELP_PROBE = """
import runpy, sys
sys.argv = sys.argv[1:]
try:
    runpy.run_path(sys.argv[0], run_name='__main__')
except SystemExit as e:
    assert e.code in (0, None), e.code
print('loaded:', [m for m in ('tensorflow', 'keras') if m in sys.modules])
"""


@pytest.mark.parametrize('script', SCRIPTS)
def test_help_is_fast_because_it_loads_no_tensorflow(script):
    result = subprocess.run([sys.executable, '-c', HELP_PROBE, os.path.join(ROOT, script),
                             '--help'], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.startswith('usage:') and '--verbose' in result.stdout
    assert result.stdout.strip().splitlines()[-1] == 'loaded: []'


PROGRESS_BAR = re.compile(r'/s\]|s/\w+\]')  # tqdm's rate, e.g. "[00:03, 3.50batch/s]"


def test_ctrl_c_in_fid_ends_in_one_line(fixture_dir, tmp_path):
    real = tmp_path / 'real'
    real.mkdir()
    for i in range(4):
        Image.fromarray(np.full((32, 32, 3), 60 * i, np.uint8)).save(real / f'{i}.png')
    out = tmp_path / 'eval.json'
    env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
    # SWD needs no feature network; 10**6 samples take long enough to be interrupted.
    proc = subprocess.Popen(
        [sys.executable, os.path.join(ROOT, 'fid.py'), '--eval_dir', str(real), '--model_dir',
         fixture_dir, '--metrics', 'swd', '--n_fake', '1000000', '--out', str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    stderr, started = [], threading.Event()

    def read():
        while char := proc.stderr.read(1):
            stderr.append(char)
            started.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert started.wait(300), 'fid.py wrote nothing on stderr'  # its progress bar
        proc.send_signal(signal.SIGINT)
        proc.wait(120)
    finally:
        proc.kill()
        reader.join()
    text = ''.join(stderr)
    lines = [line.strip() for line in re.split(r'[\r\n]', text) if line.strip()]
    said = [line for line in lines if not PROGRESS_BAR.search(line)]
    assert proc.returncode != 0 and 'Traceback' not in text, text[-3000:]
    assert len(said) == 1 and said[0].startswith('fid.py: interrupted; no results'), said
    assert not out.exists()


def _press_ctrl_c_and_raise(error):
    """What TensorFlow's C++ code can do with a Ctrl-C: the KeyboardInterrupt raised in it
    comes out as another error."""
    try:
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(10)  # the handler raises in here
    except KeyboardInterrupt:
        raise error from None
    pytest.fail('SIGINT raised no KeyboardInterrupt')


def test_an_error_after_ctrl_c_leaves_as_the_interrupt():
    import cli
    before = signal.getsignal(signal.SIGINT)
    half_built = AttributeError("'SymbolicTensor' object has no attribute '_type_spec'")
    with pytest.raises(KeyboardInterrupt) as caught, cli.ctrl_c_stays_an_interrupt():
        _press_ctrl_c_and_raise(half_built)
    assert caught.value.__cause__ is half_built
    assert signal.getsignal(signal.SIGINT) is before


def test_errors_without_ctrl_c_leave_unchanged():
    import cli
    with pytest.raises(AttributeError, match='a real bug'), cli.ctrl_c_stays_an_interrupt():
        raise AttributeError('a real bug')
    with pytest.raises(KeyboardInterrupt), cli.ctrl_c_stays_an_interrupt():
        _press_ctrl_c_and_raise(KeyboardInterrupt())


NATIVE_LOG_LINE = re.compile(r'^[IWEF]\d{4} |absl::InitializeLog|cuInit', re.M)


def test_verbose_shows_what_is_hidden_by_default(tmp_path):
    """--verbose brings TensorFlow's C++ start-up lines back (the Ctrl-C test above shows
    that without it fid.py says nothing but its progress and its one line)."""
    (tmp_path / 'empty').mkdir()
    result = run('fid.py', ['--eval_dir', 'empty', '--fake_dir', 'empty', '--verbose'],
                 tmp_path)
    assert result.returncode == 2 and NATIVE_LOG_LINE.search(result.stderr), result.stderr
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith('fid.py: error:') and 'holds no image files' in last
