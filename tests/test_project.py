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

PAPERMILL_JOBS = ['01_eda', '01b_judge', '02_vae', '03_clip_cond', '04_cvae', '05_unet_diffusion', '08_eval']

def test_training_notebooks_have_papermill_parameters():
    import json
    for nb in [ROOT/'nbs'/f'{name}.ipynb' for name in PAPERMILL_JOBS]:
        cells = json.loads(nb.read_text())['cells']
        tagged = [c for c in cells if 'parameters' in c.get('metadata', {}).get('tags', [])]
        assert len(tagged) == 1, f"{nb.name}: {len(tagged)} papermill parameters cells"

def test_papermill_help_lists_types_and_comments():
    "`papermill --help-notebook` shows each training notebook's parameters with a type and a comment"
    for name in PAPERMILL_JOBS:
        r = run(sys.executable, '-m', 'papermill', '--help-notebook', str(ROOT/'nbs'/f'{name}.ipynb'))
        assert r.returncode == 0, r.stderr
        params = [l for l in r.stdout.splitlines() if l.startswith('  ') and '(default' in l]
        assert params and not [l for l in params if 'Unknown type' in l], f"{name}: parameters without a type: {params}"
        lines = r.stdout.splitlines()
        for i, l in enumerate(lines):     # the comment follows the default on the same line, or on the next one, indented
            if l in params:
                same = l.split('(default', 1)[1].split(')', 1)[-1].strip()
                assert same or (i + 1 < len(lines) and lines[i + 1].startswith(' ' * 20)), f"{name}: no comment for {l.strip()}"

def test_public_api_is_documented():
    "Every exported function and class has a docstring, so the site's show_doc entries say what it does"
    import importlib, inspect, pkgutil, text2img_diffusion as t
    missing = []
    for m in pkgutil.iter_modules(t.__path__):
        if m.name.startswith('_'): continue
        mod = importlib.import_module(f'text2img_diffusion.{m.name}')
        missing += [f'{m.name}.{n}' for n in mod.__all__
                    if (inspect.isfunction(getattr(mod, n)) or inspect.isclass(getattr(mod, n))) and not (getattr(mod, n).__doc__ or '').strip()]
    assert not missing, f"exported without a docstring: {missing}"

def test_docs_processing_runs_clean(tmp_path):
    "nbdev's processing for the docs site (what `nbdev_docs` does before Quarto renders) runs with no error or warning"
    import shutil
    for f in ['settings.ini', 'setup.py']: shutil.copy(ROOT/f, tmp_path/f)
    shutil.copytree(ROOT/'nbs', tmp_path/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    r = run(sys.executable, '-W', 'error::UserWarning', '-c', 'from nbdev.serve import proc_nbs; proc_nbs(n_workers=1)', cwd=tmp_path)
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    proc = tmp_path/'_proc'
    assert sorted(p.name for p in proc.glob('*.ipynb')) == sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
    assert 'show_doc' in (proc/'10_train_pipeline.ipynb').read_text()
