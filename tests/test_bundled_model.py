"""The model that ships inside the package: it loads offline, from the installed package, and seeds mean the same
thing in any batch: on the CPU image k of a batch is bit for bit seed k generated alone (06: `per_image_layers`), and
without batch invariance the two agree to float rounding."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from text2img_diffusion.sampling import BUNDLED_MODEL, generate, load_pipeline

def test_bundled_model_is_small_and_complete():
    files = [f for f in BUNDLED_MODEL.rglob('*') if f.is_file()]
    assert (BUNDLED_MODEL/'model_index.json').exists()
    assert sum(f.stat().st_size for f in files) <= 20_000_000                # the design target: 20 MB, fp16
    idx = json.loads((BUNDLED_MODEL/'model_index.json').read_text())
    for comp in ('tokenizer', 'text_encoder', 'unet', 'vae', 'scheduler', 'cvae'): assert idx.get(comp, [None])[0], comp
    assert all(f.suffix != '.bin' for f in files)                      # safetensors only

def test_image_k_of_a_batch_equals_seed_k_alone():
    pipe = load_pipeline(None, 'cpu')
    prompts = ['a smiling woman with blond hair', 'a bald man with a mustache', 'a man with black hair and eyeglasses',
               'a woman with brown hair wearing a hat']
    kw = dict(steps=8, model=pipe, progress=False, output_type='np')
    batch = generate(prompts, seed=[10, 11, 12, 13], **kw)
    for k in range(4):
        alone = generate(prompts[k], seed=10 + k, **kw)[0]
        assert np.array_equal(batch[k], alone), k                           # pixel-identical, float32 even
    assert np.abs(batch[0] - batch[1]).max() > 0.1
    batched = generate(prompts, seed=[10, 11, 12, 13], batch_invariant=False, **kw)    # the faster, batched arithmetic
    assert max(np.abs(a - b).max() for a, b in zip(batched, batch)) < 1e-5

def test_cli_generates_offline(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE='1', TRANSFORMERS_OFFLINE='1')
    r = subprocess.run(['t2i', 'generate', 'a smiling woman with blond hair and eyeglasses', '-n', '2', '--seed', '0',
                        '--steps', '8', '-o', str(tmp_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ['0000000000.png', '0000000001.png', 'grid.png']
