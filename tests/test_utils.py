"""utils.atomic_write: the one way the project writes files."""
import os
import subprocess
import sys
import textwrap

import pytest

import utils

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_write_that_raises_leaves_the_old_file_and_no_temp_file(tmp_path):
    path = tmp_path / 'config.json'
    path.write_text('old')
    with pytest.raises(RuntimeError):
        with utils.atomic_write(path) as tmp:
            with open(tmp, 'w') as f:
                f.write('half of the new')
            raise RuntimeError('disk full')
    assert path.read_text() == 'old' and os.listdir(tmp_path) == ['config.json']


def test_a_writer_killed_mid_write_leaves_the_old_file(tmp_path):
    path = tmp_path / 'samples.png'
    path.write_bytes(b'old')
    script = textwrap.dedent(f'''
        import os, sys
        sys.path.insert(0, {ROOT!r})
        import utils
        with utils.atomic_write({str(path)!r}) as tmp:
            with open(tmp, 'wb') as f:
                f.write(b'partial')
                f.flush()
                os.kill(os.getpid(), 9)
    ''')
    result = subprocess.run([sys.executable, '-c', script])
    assert result.returncode == -9
    assert path.read_bytes() == b'old'
    leftovers = [f for f in os.listdir(tmp_path) if f != 'samples.png']
    # A kill cannot clean up: the leftover is hidden, keeps the extension and carries the mark.
    assert len(leftovers) == 1 and leftovers[0].startswith('.samples' + utils.TEMP_MARK)
    assert leftovers[0].endswith('.png')


def test_a_completed_write_replaces_the_file_and_creates_folders(tmp_path):
    path = tmp_path / 'a' / 'b' / 'metrics.jsonl'
    utils.write_text(path, 'one\n')
    utils.write_text(path, 'two\n')
    assert path.read_text() == 'two\n' and os.listdir(path.parent) == ['metrics.jsonl']
    utils.write_json(tmp_path / 'c.json', {'k': 1})
    assert (tmp_path / 'c.json').read_text() == '{\n    "k": 1\n}'


def test_metric_maths_imports_without_tensorflow():
    code = 'import sys, metrics, utils, config; print("tensorflow" in sys.modules)'
    result = subprocess.run([sys.executable, '-c', code], cwd=ROOT, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == 'False'
