"""Shared helpers of the bench scripts: machine description and RESULTS.md lines."""
import datetime
import os
import platform
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
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


def record(script, lines):
    """Appends a dated section of result lines to bench/RESULTS.md and prints it."""
    header = f'\n## {datetime.date.today().isoformat()} {script} ({machine()})\n'
    text = header + ''.join(f'- {line}\n' for line in lines)
    print(text)
    with open(RESULTS, 'a') as f:
        f.write(text)
