"""05_unet_diffusion: the training script under torchrun with 2 CPU processes (gloo): each rank trains on its own
shard of the latent cache, gradients are averaged, and both ranks end with identical weights."""
import json, os, socket, subprocess, sys
from pathlib import Path
from safetensors.torch import load_file
import torch

SCRIPT = r'''
import json, os, sys, warnings
warnings.simplefilter('ignore')
import torch
torch.set_num_threads(1)
from safetensors.torch import save_file
from text2img_diffusion.unet_diffusion import train_unet
from text2img_diffusion.training import trained_model as _unet
from text2img_diffusion.core import world as _world
out, data = sys.argv[1], sys.argv[2]
learn = train_unet(out, data_path=data, preset='tiny', n_images=60, epochs=1, bs=8, seed=7, sample_every=0,
                   progress=False, device='cpu')
rank, world = _world()
save_file({k: v.contiguous() for k, v in _unet(learn).state_dict().items()}, f'{out}/unet-rank{rank}.safetensors')
ids = [str(i) for i in learn.dls.train.dataset.ids]
open(f'{out}/ids-rank{rank}.json', 'w').write(json.dumps(dict(world=world, ids=ids, steps=learn.opt_steps)))
'''

def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_two_cpu_processes_end_with_identical_weights(tmp_path, synth):
    data, _ = synth
    script = tmp_path/'train.py'; script.write_text(SCRIPT)
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1'}
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
                        '--master_port', str(_free_port()), str(script), str(tmp_path/'run'), str(data)],
                       capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    run = tmp_path/'run'
    info = [json.loads((run/f'ids-rank{i}.json').read_text()) for i in range(2)]
    assert [i['world'] for i in info] == [2, 2]
    assert info[0]['steps'] == info[1]['steps'] > 0
    assert info[0]['ids'] and not set(info[0]['ids']) & set(info[1]['ids'])      # disjoint shards
    w0, w1 = (load_file(str(run/f'unet-rank{i}.safetensors')) for i in range(2))
    diff = [k for k in w0 if not torch.equal(w0[k], w1[k])]
    assert not diff, f"{len(diff)} tensors differ between ranks, e.g. {diff[:3]}"
    saved = load_file(str(run/'unet'/'diffusion_pytorch_model.safetensors'))    # what rank 0 saved is what both hold
    assert all(torch.equal(saved[k], w0[k]) for k in w0)
