import pytest

from minbert.data import data_dir
from minbert.model import default_checkpoint_dir


@pytest.fixture(scope="session")
def data_root():
    root = data_dir()
    if not (root / "ids-sst-dev.csv").is_file():
        pytest.fail(f"CS224N data not found at {root}: set MINBERT_DATA")
    return root


@pytest.fixture(scope="session")
def ckpt():
    return default_checkpoint_dir()
