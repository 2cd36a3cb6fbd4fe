"""One source for each stage's settings: the `train_*` signature. A training notebook's papermill `parameters` cell
lists the same names with the same defaults (the cell may add the notebook's own inputs, such as a judge to report
with), so a papermill job, the CLI and a Python call of the same stage start from the same values."""
import ast, importlib, inspect, json
from pathlib import Path
import pytest

NBS = Path(__file__).resolve().parent.parent/'nbs'
STAGES = {'01b_judge': 'judge:train_judge', '02_vae': 'vae:train_vae', '03_clip_cond': 'clip_cond:train_clip',
          '04_cvae': 'cvae:train_cvae', '05_unet_diffusion': 'unet_diffusion:train_unet'}

def parameters_cell(nb: str) -> dict:
    "name → default value of the notebook's papermill `parameters` cell (plain literals)"
    cells = [c for c in json.loads((NBS/f'{nb}.ipynb').read_text())['cells']
             if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(cells) == 1, f"{nb}: {len(cells)} parameters cells"
    out = {}
    for node in ast.parse(''.join(cells[0]['source'])).body:
        assert isinstance(node, ast.AnnAssign), f"{nb}: the parameters cell holds only `name: type = literal` lines"
        out[node.target.id] = ast.literal_eval(node.value)
    return out

@pytest.mark.parametrize('nb', sorted(STAGES))
def test_parameters_cell_follows_the_train_signature(nb):
    mod, fn = STAGES[nb].split(':')
    sig = inspect.signature(getattr(importlib.import_module(f'text2img_diffusion.{mod}'), fn)).parameters
    cell = parameters_cell(nb)
    shared = [k for k in cell if k in sig and sig[k].default is not inspect.Parameter.empty]   # required: no default
    assert len(shared) >= len(cell) / 2, f"{nb}: most parameters should be {fn}'s; only {shared} of {list(cell)} are"
    norm = lambda v: list(v) if isinstance(v, tuple) else v
    differ = {k: (cell[k], sig[k].default) for k in shared if norm(cell[k]) != norm(sig[k].default)}
    assert not differ, f"{nb}: defaults differ from {fn}'s (cell, signature): {differ}"
