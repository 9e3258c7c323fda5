"""What the command-line scripts (train.py, fid.py, generate.py) share: how a user's
mistake is reported. Plain Python: imported before TensorFlow."""
import sys

USAGE_ERROR = 2  # the exit code of every user mistake


def fail(error, prefix='error'):
    """Prints `prefix: error` as one line on stderr (whitespace folded); returns the exit
    code for a user mistake."""
    print(f'{prefix}: {" ".join(str(error).split())}', file=sys.stderr)
    return USAGE_ERROR
