"""The model that ships inside the package: it loads offline, from the installed package, and seeds mean the same
thing in any batch: on the CPU image k of a batch is bit for bit seed k generated alone (06: `per_image_layers`), and
without batch invariance the two agree to float rounding."""
import json, os, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from text2img_diffusion.core import BUNDLED_MODEL
from text2img_diffusion.sampling import generate, load_pipeline

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

# sha256 of the 8-bit pixels of the bundled model's images (generate()'s defaults; 4 seeds, 2 prompts; one CPU thread, as
# kernels split their sums by thread count). Written before the re-layering, so moving code cannot change an image unseen.
IMAGE_SHA256 = {
    'a smiling woman with blond hair and eyeglasses': [
        '1df73754b315644c54d875dc00b413178c343982856d4844528225dc7686fe55',
        '6f900680722d934d8ceaf103295ba4f746cd33cfe934b2bf25c97137df7f4d3a',
        'b64916d03a8183192cb52d638f551efda1e245024bfdd7cb420597a7cbae3ae2',
        '28e9a6bdaf7070a991f05d373254fa82ed399ddd22bd7ebd46435cd205555de0'],
    'a bald man with a mustache': [
        'c86e8b8c6887fa7470ebb06609b049fd8327fcd8ad25809557fac986119dcc93',
        'c2d5cc89a5c5d6312b5e860ee65de4777e969f54bc50ba414f21ee28377d3b6e',
        'e80540c431c26163862721a22e18d55dadb216dce487f476c2c73f5c9763ef9e',
        'b0893116f5cc288661c9c9e961f2d17462bd6eca8a2c19c3dfd9477abb560beb'],
}

def test_bundled_images_unchanged_byte_for_byte():
    import hashlib, torch
    pipe, threads = load_pipeline(None, 'cpu'), torch.get_num_threads()
    torch.set_num_threads(1)
    try: got = {p: [hashlib.sha256(np.asarray(im).tobytes()).hexdigest() for im in
                    generate(p, n=4, seed=[0, 1, 2, 3], model=pipe, progress=False)] for p in IMAGE_SHA256}
    finally: torch.set_num_threads(threads)
    assert got == IMAGE_SHA256, got
