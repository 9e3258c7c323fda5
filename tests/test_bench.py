"""The bench scripts start and explain themselves (--help): an import or argument error
in one of them shows here, not in the middle of a long measurement."""
import glob
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = sorted(glob.glob(os.path.join(ROOT, 'bench', 'bench_*.py'))
                 + [os.path.join(ROOT, 'bench', 'model_stats.py')])


def run(*args, timeout=120):
    env = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3', 'CUDA_VISIBLE_DEVICES': ''}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=ROOT)


@pytest.mark.parametrize('script', SCRIPTS, ids=os.path.basename)
def test_bench_script_explains_itself(script):
    result = run(script, '--help')
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.startswith('usage:') and '--record' in result.stdout
