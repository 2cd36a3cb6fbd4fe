import os, warnings
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('MPLBACKEND', 'Agg')
import pytest
from text2img_diffusion.data import make_synthetic_celeba, load_celeba

def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: heavy integration tests (a real server in a subprocess, ...)')

@pytest.fixture(scope='session')
def synth(tmp_path_factory):
    "A small synthetic CelebA (Kaggle folder layout) and its frame, drawn once per test session"
    p = make_synthetic_celeba(tmp_path_factory.mktemp('celeba')/'synth', 60, seed=1, workers=1)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return p, load_celeba(p)
