import os
import sys

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import pytest  # noqa: E402

# The authors' tiny reference model (see its README); used in place, never copied into the repo.
FIXTURE_DIR = os.environ.get(
    'LADAGAN_FIXTURE', os.path.join(ROOT, '..', 'shared', 'fixtures', 'ladagan-tiny'))


@pytest.fixture(scope='session')
def fixture_dir():
    if not os.path.isdir(FIXTURE_DIR):
        pytest.fail(f'reference fixture not found at {FIXTURE_DIR}; set LADAGAN_FIXTURE')
    return FIXTURE_DIR


@pytest.fixture(scope='session')
def reference(fixture_dir):
    return dict(np.load(os.path.join(fixture_dir, 'reference_outputs.npz')))


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    """48 generated 32x32 images (the embedded dataset, small)."""
    import shapes_data
    return shapes_data.make_shapes_dataset(str(tmp_path_factory.mktemp('shapes')), n_images=48)
