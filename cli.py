"""What the command-line scripts (train.py, fid.py, generate.py) share: a quiet start, the
argument parser and validators, the check that outputs can be written, and how a user's
mistake is reported. Plain Python: imported before TensorFlow."""
import argparse
import contextlib
import math
import os
import signal
import sys
import tempfile
import threading
import warnings

USAGE_ERROR = 2   # the exit code of every user mistake
INTERRUPTED = 130  # the shell's code for a Ctrl-C
# Python warnings of these packages are hidden without --verbose.
_NOISY_PACKAGES = r'(tensorflow|keras|absl|h5py|google\.protobuf)(\.|$)'
_verbose = False


class UsageError(Exception):
    """Unusable command-line input; the message says what to change."""


def _one_line(text):
    return ' '.join(str(text).split())


def fail(error, prefix='error', hint=None):
    """Prints `prefix: error` as one line on stderr (whitespace folded), and `hint: ...`
    as a second when given; returns the exit code for a user mistake."""
    print(f'{prefix}: {_one_line(error)}', file=sys.stderr)
    if hint:
        print(f'hint: {_one_line(hint)}', file=sys.stderr)
    return USAGE_ERROR


def interrupted(prefix, what):
    """The one line of a Ctrl-C: what was kept and how to go on; returns the exit code."""
    print(f'\n{prefix}: interrupted; {_one_line(what)}', file=sys.stderr)
    return INTERRUPTED


@contextlib.contextmanager
def ctrl_c_stays_an_interrupt():
    """Within: a Ctrl-C always leaves as KeyboardInterrupt. Raised inside TensorFlow's C++
    code (while tracing or compiling), the KeyboardInterrupt can come out as another error
    (a SystemError, then an AttributeError from the half-built trace); any error after a
    Ctrl-C is taken for the interrupt it hides, so the command ends in its one line."""
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers belong to the main thread
        return
    pressed = threading.Event()

    def on_ctrl_c(signum, frame):
        pressed.set()
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, on_ctrl_c)
    try:
        yield
    except Exception as e:
        if pressed.is_set():
            raise KeyboardInterrupt from e
        raise
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------------------------------------
# A quiet start: TensorFlow's start-up lines and warnings only with --verbose
# ---------------------------------------------------------------------------------------

def quiet(verbose=False):
    """Call before TensorFlow is imported: hides TF/absl C++ log lines and Python warnings
    of TF/Keras; verbose shows all of them (TF_CPP_MIN_LOG_LEVEL=0)."""
    global _verbose
    _verbose = verbose
    if verbose:
        os.environ['TF_CPP_MIN_LOG_LEVEL'] = '0'
        return
    os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
    warnings.filterwarnings('ignore', module=_NOISY_PACKAGES)


def _shows_native_logs():
    return _verbose or os.environ.get('TF_CPP_MIN_LOG_LEVEL', '0') in ('', '0')


@contextlib.contextmanager
def quiet_native_stderr():
    """Hides what native code writes to fd 2: TensorFlow's start-up lines (oneDNN, CUDA
    probes) come before absl reads TF_CPP_MIN_LOG_LEVEL, and some come twice."""
    if _shows_native_logs():
        yield
        return
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2
        yield
        return
    try:
        with open(os.devnull, 'w') as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def import_tensorflow():
    """Imports TensorFlow as quietly as quiet() asked; returns the module."""
    with quiet_native_stderr():
        import tensorflow as tf
        tf.config.list_physical_devices('GPU')  # the CUDA probe logs an error on CPU machines
    if not _verbose:
        import absl.logging
        import keras
        absl.logging.set_verbosity(absl.logging.ERROR)
        tf.get_logger().setLevel('ERROR')
        # keras.utils.get_file prints "Downloading data from ..." even when offline;
        # without interactive logging it goes to absl (hidden) and our own line says why.
        keras.config.disable_interactive_logging()
    return tf


# ---------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------

class Parser(argparse.ArgumentParser):
    """argparse with errors of one line (and a hint to quote globs when the shell expanded
    one into file names), and --verbose."""

    def __init__(self, *args, error_prefix='error', **kwargs):
        super().__init__(*args, **kwargs)
        self.error_prefix = error_prefix
        self.add_argument('--verbose', action='store_true',
                          help="show TensorFlow's log lines and warnings")

    def error(self, message):
        hint = None
        head, sep, rest = message.partition('unrecognized arguments: ')
        if sep:
            extra = rest.split()
            message = f'{head}{sep}{_shorten(extra)}'
            if any(_looks_like_a_file(arg) for arg in extra):
                hint = ("the shell expanded a glob into file names: quote the pattern, "
                        "e.g. 'data/*.png'")
        fail(f'{message} (see {self.prog} --help)', self.error_prefix, hint)
        self.exit(USAGE_ERROR)


def _shorten(words, keep=3):
    if len(words) <= keep:
        return ' '.join(words)
    return f"{' '.join(words[:keep])} ... ({len(words)} in all)"


def _looks_like_a_file(arg):
    return not arg.startswith('-') and os.path.exists(arg)  # what a shell glob expands to


def int_in(low, high, description):
    """argparse type: an integer in [low, high), with a one-line message otherwise."""
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f'{text!r} is not an integer') from None
        if not low <= value < high:
            raise argparse.ArgumentTypeError(f'must be {description}, got {value}')
        return value
    return parse


# numpy's legacy seeding (keras.utils.set_random_seed) takes 32-bit seeds
seed = int_in(0, 2 ** 32, 'in [0, 2**32)')
positive_int = int_in(1, math.inf, 'a positive integer')


def non_negative_float(text):
    """argparse type: a finite number >= 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'{text!r} is not a number') from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f'must be a finite number >= 0, got {text}')
    return value


# ---------------------------------------------------------------------------------------
# Outputs: checked before the work starts
# ---------------------------------------------------------------------------------------

def _nearest_existing(path):
    path = os.path.abspath(path)
    while not os.path.exists(path):
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return path


def check_writable(path, what, is_dir=False):
    """Raises UsageError unless path (a file, or a directory with is_dir) can be written.

    Nothing is created: the nearest existing ancestor must be a writable directory.
    """
    target = os.path.abspath(path)
    if is_dir and os.path.isfile(target):
        raise UsageError(f'cannot write {what} to {path}: it is a file, not a directory')
    if not is_dir and os.path.isdir(target):
        raise UsageError(f'cannot write {what} to {path}: it is a directory')
    existing = _nearest_existing(target if is_dir else os.path.dirname(target))
    if not os.path.isdir(existing):
        raise UsageError(f'cannot write {what} to {path}: {existing} is a file, not a '
                         f'directory')
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as e:
        raise UsageError(f'cannot write {what} to {path}: {existing} is not writable '
                         f'({e.strerror or e})') from None
