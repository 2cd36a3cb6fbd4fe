"""The project's own wiring: the t2i command, the docs site configuration, the README."""
import configparser, subprocess, sys
from pathlib import Path
import yaml

ROOT = Path(__file__).resolve().parent.parent

def run(*args, **kw):
    return subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)

def test_t2i_help_lists_commands():
    r = run('t2i', '--help')
    assert r.returncode == 0 and 'synth-data' in r.stdout and 'eda' in r.stdout
    r = run('t2i', 'nope')
    assert r.returncode == 2 and 'choose from' in r.stderr

def test_t2i_synth_data_then_eda(tmp_path, synth):
    r = run('t2i', 'synth-data', str(tmp_path/'d'), '--n', '30', '--workers', '1', '--as_zip')
    assert r.returncode == 0, r.stderr
    assert (tmp_path/'d'/'img_align_celeba.zip').exists()
    r = run('t2i', 'eda', str(tmp_path/'d'), '--out', str(tmp_path/'eda'), '--n_sample', '20')
    assert r.returncode == 0, r.stderr
    assert {'summary.json', 'sample_grid.png', 'attribute_prevalence.png'} <= {p.name for p in (tmp_path/'eda').iterdir()}

def test_sidebar_lists_every_notebook():
    side = yaml.safe_load((ROOT/'nbs'/'sidebar.yml').read_text())['website']['sidebar']['contents']
    nbs = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
    assert sorted(side) == nbs, f"sidebar.yml {sorted(side)} != notebooks {nbs}"
    assert side[0] == 'index.ipynb' and side[1:] == sorted(side[1:])

def test_quarto_and_settings():
    q = yaml.safe_load((ROOT/'nbs'/'_quarto.yml').read_text())
    assert q['metadata-files'] == ['nbdev.yml', 'sidebar.yml'] and q['project']['type'] == 'website'
    cfg = configparser.ConfigParser(); cfg.read(ROOT/'settings.ini'); d = cfg['DEFAULT']
    assert d['tst_flags'].split() == ['notest', 'slow', 'gpu']
    assert d['allowed_cell_metadata_keys'] == 'tags' and d['custom_sidebar'] == 'True'
    assert d['console_scripts'] == 't2i=text2img_diffusion.cli:main'

def test_readme_generated_from_index():
    r = run(sys.executable, str(ROOT/'.ci'/'readme.py'), '--check')
    assert r.returncode == 0, r.stdout + r.stderr

PAPERMILL_JOBS = ['01_eda', '02_vae', '03_clip_cond', '04_cvae', '05_unet_diffusion', '08_eval']

def test_training_notebooks_have_papermill_parameters():
    import json
    for nb in [ROOT/'nbs'/f'{name}.ipynb' for name in PAPERMILL_JOBS]:
        cells = json.loads(nb.read_text())['cells']
        tagged = [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(tagged) == 1, f"{nb.name}: {len(tagged)} papermill parameters cells"
