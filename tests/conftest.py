import os

import pytest
from hypothesis import HealthCheck, settings

from minbert.data import data_dir
from minbert.model import default_checkpoint_dir
from tests.helpers import QUICKSTART, TINY, run_cli

# tests/test_fuzz.py: CI runs a fixed, derandomized set of generated examples; MINBERT_FUZZ=long a random, larger one
_FUZZ = dict(deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
settings.register_profile("ci", derandomize=True, print_blob=True, **_FUZZ)
settings.register_profile("long", derandomize=False, print_blob=True, **_FUZZ)
settings.load_profile("long" if os.environ.get("MINBERT_FUZZ") == "long" else "ci")


@pytest.fixture(scope="session")
def data_root():
    root = data_dir()
    if not (root / "ids-sst-dev.csv").is_file():
        pytest.fail(f"CS224N data not found at {root}: set MINBERT_DATA")
    return root


@pytest.fixture(scope="session")
def ckpt():
    return default_checkpoint_dir()


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """(run directory, its output): the quickstart on a tiny budget, trained once for every test that only reads a
    finished run."""
    run = tmp_path_factory.mktemp("tiny") / "run"
    return run, run_cli(str(QUICKSTART), *TINY, f"out={run}")
