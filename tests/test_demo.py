"""demo.ipynb runs top to bottom (on the fixture checkpoint, so without network), from a
working directory other than the repository root, as a notebook opened in a subfolder."""
import os

import nbclient
import nbformat

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_demo_notebook_runs(fixture_dir, monkeypatch):
    # The kernel inherits the environment: the notebook loads the fixture, not the Hub.
    monkeypatch.setenv('LADAGAN_DEMO_MODEL_DIR', fixture_dir)
    monkeypatch.setenv('HF_HUB_OFFLINE', '1')
    monkeypatch.setenv('TF_CPP_MIN_LOG_LEVEL', '2')
    monkeypatch.setenv('CUDA_VISIBLE_DEVICES', '')
    # The notebook's own setup cell, not the environment, puts the repository on sys.path.
    monkeypatch.delenv('LADAGAN_REPO', raising=False)
    monkeypatch.setenv('PYTHONPATH', os.pathsep.join(
        p for p in os.environ.get('PYTHONPATH', '').split(os.pathsep)
        if p and os.path.abspath(p) != ROOT))
    elsewhere = os.path.join(ROOT, 'tests')
    notebook = nbformat.read(os.path.join(ROOT, 'demo.ipynb'), as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == 'code']
    assert code and not any(cell.outputs for cell in code)  # committed with outputs cleared
    # Opens in Colab: the badge first, then a setup cell that clones only there.
    assert notebook.cells[0].source.startswith('[![Open In Colab]')
    setup = code[0].source
    assert "if 'google.colab' in sys.modules:" in setup and 'git' in setup
    assert 'requirements.txt' in setup and 'sys.path.insert(0, REPO)' in setup
    nbclient.NotebookClient(notebook, timeout=600, kernel_name='python3',
                            resources={'metadata': {'path': elsewhere}}).execute()  # raises on errors

    outputs = [output for cell in code for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == 'error']
    text = ''.join(o.get('text', '') for o in outputs if o.output_type == 'stream')
    assert f'repository: {ROOT}' in text
    assert f'model: {fixture_dir}' in text
    pictures = [o for o in outputs if o.output_type == 'display_data']
    # grid, truncated grid, attention maps, interpolation strip and GIF
    assert sum('image/png' in o.data for o in pictures) >= 4
    assert any('image/gif' in o.data for o in pictures)
