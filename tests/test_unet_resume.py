"""05_unet_diffusion: a run killed with SIGKILL mid-epoch resumes from its last checkpoint and ends bit-identical
to a run that was never interrupted (tiny preset, CPU, one thread)."""
import json, os, signal, subprocess, sys
from pathlib import Path
from safetensors.torch import load_file
import torch

SCRIPT = r'''
import os, signal, sys, warnings
warnings.simplefilter('ignore')
import torch
torch.set_num_threads(1)
from fastai.callback.core import Callback
from text2img_diffusion.unet_diffusion import train_unet
out, data, mode = sys.argv[1], sys.argv[2], sys.argv[3]

class KillMidEpoch(Callback):
    "SIGKILL this process in the middle of the third epoch (after the epoch-2 checkpoint)"
    order = 99
    def after_batch(self):
        if self.training and self.epoch == 2 and self.iter == 1: os.kill(os.getpid(), signal.SIGKILL)
train_unet(out, data_path=data, preset='tiny', n_images=60, epochs=4, bs=8, seed=5, sample_every=0, progress=False,
           cbs=[KillMidEpoch()] if mode == 'kill' else None, resume=out if mode == 'resume' else None)
'''

def _start(script, out, data, mode):
    env = {**os.environ, 'OMP_NUM_THREADS': '1', 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1'}
    return subprocess.Popen([sys.executable, str(script), str(out), str(data), mode], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)

def _finish(proc) -> subprocess.CompletedProcess:
    out, err = proc.communicate(timeout=600)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

def _run(script, out, data, mode): return _finish(_start(script, out, data, mode))

def _weights(run, sub):
    return load_file(str(Path(run)/sub/'diffusion_pytorch_model.safetensors'))

def test_sigkill_mid_epoch_then_resume_is_bit_identical(tmp_path, synth):
    data, _ = synth
    script = tmp_path/'train.py'; script.write_text(SCRIPT)
    # the uninterrupted run and the one to kill are independent, one thread each: side by side on two cores
    procs = [_start(script, tmp_path/'full', data, 'full'), _start(script, tmp_path/'cut', data, 'kill')]
    full, killed = map(_finish, procs)
    assert full.returncode == 0, full.stderr[-3000:]
    assert killed.returncode == -signal.SIGKILL, (killed.returncode, killed.stderr[-3000:])
    latest = json.loads((tmp_path/'cut'/'checkpoints'/'latest.json').read_text())
    assert latest['epoch'] == 2, latest                       # killed during epoch 3: last checkpoint is epoch 2
    assert not (tmp_path/'cut'/'unet').exists()
    resumed = _run(script, tmp_path/'cut', data, 'resume')
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for sub in ('unet', 'unet_ema'):
        a, b = _weights(tmp_path/'full', sub), _weights(tmp_path/'cut', sub)
        assert a.keys() == b.keys()
        diff = [k for k in a if not torch.equal(a[k], b[k])]
        assert not diff, f"{sub}: {len(diff)} tensors differ, e.g. {diff[:3]}"
    m1, m2 = (json.loads((tmp_path/r/'metrics.json').read_text()) for r in ('full', 'cut'))
    assert m1['opt_steps'] == m2['opt_steps'] > 0
    assert m1['train_loss'] == m2['train_loss'] and m1['valid_loss'] == m2['valid_loss']
