"""Training throughput of the 05_unet_diffusion UNet.

1. samples/s of the fastai Learner (with the training callbacks: CFG dropout, text encoding, noising, autocast,
   accumulation, NaN guard, clipping, EMA) vs a plain PyTorch loop doing the same work on the same model, data and batch
   (goal: ratio >= 0.95); then, for one whole training step of each (from the first callback's `before_batch` to the
   last one's `after_batch`), the innermost ATen calls other than views and allocations, and the calls that differ by
   name (about one kernel launch each on a GPU; some, like the optimizer's, are batched there and not on the CPU, so
   compare the two paths on one device), and on CUDA the host syncs that torch's sync debug mode reports: they show
   whether the Learner adds device work, or waits for the device where the plain loop does not;
2. seconds per training epoch on cached latents vs encoding the images with the VAE on the fly (goal: >= 5x), with the
   bound that compute puts on it: (VAE encode + UNet training step) / UNet training step, in FLOPs per image. The
   encoder is the preset's VAE unless --vae_path / --vae_preset say otherwise (`--vae_preset celeba256 --image_size
   128`: a random VAE with the architecture of stabilityai/sd-vae-ft-mse, which costs what the pretrained one does).

    python benchmarks/train_step.py --device cpu --preset tiny
    python benchmarks/train_step.py --device cuda --preset celeba64-gpu --bf16 --channels_last --compile
    python benchmarks/train_step.py --device cpu --preset celeba64-gpu --vae_preset celeba256 --image_size 128 --skip learner

Prints one line per measurement and a JSON summary at the end (also written to --out if given).
"""
import argparse, collections, json, os, sys, tempfile, time, warnings
from pathlib import Path

import torch

def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--device', default='cuda' if torch.cuda.is_available() else 'cpu')
    p.add_argument('--preset', default='tiny')
    p.add_argument('--bf16', action='store_true', help='bf16 autocast (CUDA only)')
    p.add_argument('--channels_last', action='store_true')
    p.add_argument('--compile', action='store_true', help='torch.compile the UNet')
    p.add_argument('--bs', type=int, default=None, help="batch size (default: the preset's)")
    p.add_argument('--n_images', type=int, default=None, help='synthetic images (default: enough for --steps batches)')
    p.add_argument('--steps', type=int, default=20, help='timed steps per repeat for Learner vs plain')
    p.add_argument('--warmup', type=int, default=3)
    p.add_argument('--repeats', type=int, default=3, help='alternate plain/Learner this many times; best of each is reported')
    p.add_argument('--text_preset', default='tiny', help="CLIP text encoder size: tiny | small")
    p.add_argument('--vae_path', default=None, help='trained VAE (default: a random VAE of the preset\'s size)')
    p.add_argument('--vae_preset', default=None,
                   help="size of the random VAE (default: the UNet preset's; celeba256 has the architecture of stabilityai/sd-vae-ft-mse)")
    p.add_argument('--image_size', type=int, default=None, help="image size the VAE encodes (default: the preset's)")
    p.add_argument('--data_path', default=None, help='CelebA folder (default: a synthetic set)')
    p.add_argument('--threads', type=int, default=None)
    p.add_argument('--skip', default='', help='comma list of parts to skip: learner,cache')
    p.add_argument('--out', default=None, help='write the JSON summary here')
    p.add_argument('--trace', default=None, help='folder for Chrome traces (chrome://tracing, Perfetto) of the profiled plain and Learner steps')
    p.add_argument('--peak_tflops', type=float, default=None,
                   help="the device's peak dense TFLOP/s for the MFU estimate (default: 989.4 for H100/H200 in bf16, 494.7 in tf32/fp32)")
    return p.parse_args()

def main():
    a = parse()
    if a.threads: torch.set_num_threads(a.threads)
    warnings.simplefilter('ignore')
    from fastai.callback.core import Callback
    from text2img_diffusion.data import make_synthetic_celeba, load_celeba, CelebAItems
    from text2img_diffusion.vae import vae_from_preset, load_pretrained_vae, encode_latents
    from text2img_diffusion.latents import build_latent_cache, latent_dls, read_cache_meta
    from text2img_diffusion.clip_cond import TextConditioner, caption_corpus
    from text2img_diffusion import unet_diffusion as U

    dev = torch.device(a.device)
    p = U.unet_preset(a.preset)
    bs = a.bs or p['bs']
    skip = set(filter(None, a.skip.split(',')))
    tmp = Path(tempfile.mkdtemp(prefix='bench-unet-'))
    n = a.n_images or max(bs * (a.warmup + a.steps) * 10 // 8 + 2 * bs, 200)
    t0 = time.time()
    data = a.data_path or make_synthetic_celeba(tmp/'celeba', n, seed=0, workers=min(8, os.cpu_count() or 1))
    df = load_celeba(data)
    if len(df) > n: df = df.sample(n, random_state=0).sort_index()
    vae = (load_pretrained_vae(a.vae_path) if a.vae_path else vae_from_preset(a.vae_preset or p['vae'])).to(dev).eval().requires_grad_(False)
    size = a.image_size or p['image_size']
    tok, te = U.random_text_encoder(caption_corpus(df), a.text_preset)
    cond = TextConditioner(tok, te.to(dev))
    t1 = time.time()
    cache = build_latent_cache(vae, df, tmp/'cache', size=size, bs=64)
    t_cache = time.time() - t1
    meta = read_cache_meta(cache)
    C, h = meta['shape'][1], meta['shape'][2]
    sched = U.make_noise_scheduler('cosine', 'epsilon')
    info = dict(device=str(torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'), preset=a.preset, bs=bs,
                bf16=a.bf16, channels_last=a.channels_last, compile=a.compile, image_size=size,
                vae=a.vae_path or a.vae_preset or p['vae'], latent_shape=[C, h, h],
                text=a.text_preset, torch_threads=torch.get_num_threads(), n_images=len(df),
                setup_s=round(t1 - t0, 1), cache_build_s=round(t_cache, 2))

    def make_unet():
        torch.manual_seed(0)
        u = U.unet_from_preset(a.preset, cross_attention_dim=cond.dim, latent_channels=C, sample_size=h).to(dev)
        if a.channels_last: u = u.to(memory_format=torch.channels_last)
        return u
    info['params_M'] = round(U.n_params(make_unet()) / 1e6, 2)
    print(f"setup: {json.dumps(info)}", flush=True)

    from torch.utils.flop_counter import FlopCounterMode
    def step_flops(z, emb) -> float:
        "FLOPs per sample of a UNet training step (forward + backward) on latents `z`, counted by torch's FlopCounterMode"
        u = make_unet(); t = torch.zeros(len(z), dtype=torch.long, device=dev)
        with FlopCounterMode(display=False) as fc:
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=a.bf16 and dev.type == 'cuda'):
                out_ = u(z.to(dev), t, encoder_hidden_states=emb, return_dict=False)[0]
            out_.float().pow(2).mean().backward()
        return fc.get_total_flops() / len(z)

    def sync():
        if dev.type == 'cuda': torch.cuda.synchronize()

    # ---- 1. Learner vs plain loop, same model/data/batch ------------------------------------------------------------
    dls = latent_dls(cache, bs=bs, device=dev, seed=0)
    batches = []
    for b in dls.train:
        batches.append((b[0], list(b[1])))
        if len(batches) == a.warmup + a.steps: break
    if len(batches) < a.warmup + a.steps and 'learner' not in skip: raise SystemExit(f"only {len(batches)} batches; raise --n_images")

    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader

    def fixed_dl(k0, k1):
        return DataLoader(list(range(k0, k1)), bs=1, create_batch=lambda idx: (batches[idx[0]][0], tuple(batches[idx[0]][1]), torch.zeros(1)),
                          shuffle=False, device=dev)

    from torch.profiler import profile, ProfilerActivity
    no_kernel = {'aten::' + n for n in ('view', 'as_strided', '_reshape_alias', '_unsafe_view', 'empty', 'empty_strided', 'resize_',
                 'resolve_conj', 'resolve_neg', 'detach', 'alias', 'lift_fresh', 'result_type', 'unsqueeze', 'squeeze', 'expand',
                 't', 'transpose', 'permute', 'slice', 'select', 'split', 'chunk', 'unbind', 'narrow', 'set_', 'is_nonzero')}
    def profiler():
        "CPU ops, and on a GPU its kernels too (the trace shows where the device waits for the host)"
        return profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == 'cuda' else []))
    def save_trace(prof, name):
        if a.trace: Path(a.trace).mkdir(parents=True, exist_ok=True); prof.export_chrome_trace(str(Path(a.trace)/f'{name}_step.json'))

    class SyncCount:
        "the host syncs one block makes, as torch's CUDA sync debug mode reports them (CUDA only; `n` is None elsewhere)"
        def __enter__(self):
            self.n = None
            if dev.type == 'cuda':
                self.w = warnings.catch_warnings(record=True); self.rec = self.w.__enter__(); warnings.simplefilter('always')
                torch.cuda.set_sync_debug_mode('warn')
            return self
        def __exit__(self, *exc):
            if dev.type == 'cuda':
                torch.cuda.set_sync_debug_mode(0); self.w.__exit__(*exc)
                self.n = sum('synchroniz' in str(m.message) for m in self.rec)

    def aten_calls(prof) -> collections.Counter:
        "innermost ATen calls that do work (not views or allocations) recorded by `prof`, by name"
        return collections.Counter(e.name for e in prof.events() if e.name.startswith('aten::') and e.name not in no_kernel
                                   and not any(c.name.startswith('aten::') for c in e.cpu_children))

    def plain(unet, idx, count=False):
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.01)
        ema = __import__('diffusers.training_utils', fromlist=['EMAModel']).EMAModel(
            unet.parameters(), decay=0.999, use_ema_warmup=True, power=0.75, foreach=dev.type == 'cuda')   # as the EMA callback
        ema.to(dev)
        loss_fn = U.DiffusionLoss(sched, 5.0)
        unet.train()
        def step(z, caps):
            drop = (torch.rand(len(caps)) < 0.1).tolist()
            caps = ['' if d else c for c, d in zip(caps, drop)]
            emb = cond(caps, device=dev)[0]
            t = torch.randint(0, 1000, (len(z),), device=dev)
            noise = torch.randn_like(z)
            noisy = sched.add_noise(z, noise, t)
            if a.channels_last: noisy = noisy.contiguous(memory_format=torch.channels_last)
            with torch.autocast('cuda', dtype=torch.bfloat16, enabled=a.bf16 and dev.type == 'cuda'):
                pred = unet(noisy, t, encoder_hidden_states=emb, return_dict=False)[0]
            loss = loss_fn(pred, noise, t)
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
            if not bool(torch.isfinite(norm) & torch.isfinite(loss)): opt.zero_grad(); return
            opt.step(); opt.zero_grad()
            ema.step(unet.parameters())
        for i in idx[:a.warmup]: step(*batches[i])
        if count:
            with profiler() as prof, SyncCount() as syncs: step(*batches[idx[a.warmup]])
            save_trace(prof, 'plain')
            return aten_calls(prof), syncs.n
        sync(); t = time.perf_counter()
        for i in idx[a.warmup:]: step(*batches[i])
        sync(); return len(idx[a.warmup:]) * bs / (time.perf_counter() - t)

    class Timer(Callback):
        order = -100   # before the callbacks that encode the captions and noise the latents
        def before_batch(self):
            if self.iter == a.warmup: sync(); self.t = time.perf_counter()
        def after_fit(self): sync(); self.learn.sps = a.steps * bs / (time.perf_counter() - self.t)

    class CountOps(Callback):
        "profile the batch after the warm-up, from before the first callback's `before_batch` (text encoding, noising)..."
        order = -100
        def before_batch(self):
            if self.iter == a.warmup:
                self.prof, self.syncs = profiler(), SyncCount(); self.prof.__enter__(); self.syncs.__enter__()
    class CountOpsEnd(Callback):
        "...to after the last one's `after_batch` (the Recorder's)"
        order = 1000
        def after_batch(self):
            if self.iter == a.warmup:
                c = self.learn.count_ops
                c.syncs.__exit__(None, None, None); c.prof.__exit__(None, None, None); save_trace(c.prof, 'learner')
                self.learn.counts = aten_calls(c.prof), c.syncs.n

    def learner(unet, count=False):
        dls_ = DataLoaders(fixed_dl(0, a.warmup + (1 if count else a.steps)), fixed_dl(0, 1), device=dev)
        learn = U.diffusion_learner(dls_, unet, cond, sched, lr=1e-4, ema_decay=0.999, bf16=a.bf16, channels_last=a.channels_last,
                                    cbs=[CountOps(), CountOpsEnd()] if count else [Timer()])
        if a.compile: learn.model.unet = torch.compile(learn.model.unet)
        learn.model.to(dev)
        class NoValid(Callback):
            order = 0
            def before_validate(self):
                from fastai.callback.core import CancelValidException
                raise CancelValidException()
        with learn.no_bar(), learn.no_logging(): learn.fit(1, 1e-4, cbs=[NoValid()])
        return learn.counts if count else learn.sps

    res = {}
    if 'learner' not in skip:
        ps, ls = [], []
        peak_mem = 0
        for r in range(a.repeats):
            u = make_unet(); u = torch.compile(u) if a.compile else u
            ps.append(plain(u, list(range(a.warmup + a.steps))))
            del u
            if dev.type == 'cuda': torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(dev)
            ls.append(learner(make_unet()))
            if dev.type == 'cuda': peak_mem = max(peak_mem, torch.cuda.max_memory_allocated(dev))
            print(f"repeat {r}: plain {ps[-1]:.1f} samples/s, Learner {ls[-1]:.1f} samples/s", flush=True)
        res.update(plain_sps=round(max(ps), 2), learner_sps=round(max(ls), 2), learner_over_plain=round(max(ls) / max(ps), 3),
                   plain_all=[round(x, 2) for x in ps], learner_all=[round(x, 2) for x in ls])
        print(f"samples/s: plain PyTorch {max(ps):.1f}, fastai Learner {max(ls):.1f}, ratio {max(ls)/max(ps):.3f} (goal >= 0.95)", flush=True)
        u = make_unet(); u = torch.compile(u) if a.compile else u
        (op_p, sy_p), (op_l, sy_l) = plain(u, list(range(a.warmup + 1)), count=True), learner(make_unet(), count=True)
        diff = {k: op_l[k] - op_p[k] for k in op_l | op_p if op_l[k] != op_p[k]}
        n_p, n_l = op_p.total(), op_l.total()
        res.update(aten_calls_per_step_plain=n_p, aten_calls_per_step_learner=n_l, aten_calls_learner_minus_plain=diff,
                   host_syncs_per_step_plain=sy_p, host_syncs_per_step_learner=sy_l)
        print(f"ATen calls doing work per training step: plain {n_p}, Learner {n_l} ({n_l - n_p:+d}: "
              + (', '.join(f"{k.removeprefix('aten::')} {v:+d}" for k, v in sorted(diff.items(), key=lambda kv: -abs(kv[1]))) or 'same calls')
              + "); host syncs per step: " + (f"plain {sy_p}, Learner {sy_l}" if sy_p is not None else "n/a (CUDA only)"), flush=True)
        # model FLOPs of one training step (the text encoder runs without grad) on one batch, and the MFU they imply at
        # the Learner's speed
        z, caps = batches[0]
        with torch.no_grad(): emb = cond(list(caps), device=dev)[0]
        fps = step_flops(z, emb)
        name = info['device']
        peak = a.peak_tflops or (({True: 989.4, False: 494.7}[a.bf16]) if any(k in name for k in ('H100', 'H200')) else None)
        res.update(train_gflops_per_sample=round(fps / 1e9, 3), peak_tflops=peak,
                   mfu=round(fps * max(ls) / (peak * 1e12), 4) if peak else None,
                   peak_memory_gib=round(peak_mem / 2**30, 2) if dev.type == 'cuda' else None)
        print(f"training FLOPs {fps/1e9:.2f} GFLOP/sample; MFU {res['mfu'] if peak else 'n/a (pass --peak_tflops)'}; "
              f"peak memory {res['peak_memory_gib']} GiB", flush=True)

    # ---- 2. cached latents vs encoding on the fly: one training epoch each --------------------------------------------
    if 'cache' not in skip:
        from text2img_diffusion.data import items_dls
        class EpochTimer(Callback):
            order = 100
            def before_train(self): sync(); self.t = time.perf_counter()
            def after_train(self): sync(); self.learn.train_s = time.perf_counter() - self.t
        def epoch(dls_, vae_=None):
            learn = U.diffusion_learner(dls_, make_unet(), cond, sched, lr=1e-4, ema_decay=0.999, bf16=a.bf16, channels_last=a.channels_last,
                                        vae_on_the_fly=vae_, cbs=[EpochTimer()])
            with learn.no_bar(), learn.no_logging(): learn.fit(1)
            return learn.train_s, len(dls_.train) * bs
        cached = latent_dls(cache, bs=bs, device=dev, seed=0)
        tr, va = df[df.partition == 'train'], df[df.partition == 'valid']
        imgs = items_dls(CelebAItems(tr, size=size, flip=False), CelebAItems(va, size=size), bs=bs,
                         device=dev, seed=0)
        def data_only(dl, vae_=None):
            "seconds to produce one epoch of training latents (no UNet step)"
            sync(); t = time.perf_counter(); k = 0
            for b in dl:
                z = b[0]
                if vae_ is not None:
                    with torch.no_grad(): z = encode_latents(vae_, z)
                k += len(z)
            sync(); return time.perf_counter() - t, k
        dc, _ = data_only(cached.train); df_, _ = data_only(imgs.train, vae)
        res.update(data_only_cached_s=round(dc, 3), data_only_on_the_fly_s=round(df_, 3), data_only_speedup=round(df_ / dc, 1))
        print(f"latents for one epoch, no UNet: cached {dc:.3f}s, decode+resize+VAE encode {df_:.3f}s: {df_/dc:.1f}x", flush=True)
        x1 = imgs.train.one_batch()[0][:1]
        with FlopCounterMode(display=False) as fc, torch.no_grad(): z1 = encode_latents(vae, x1)
        f_enc = fc.get_total_flops()
        with torch.no_grad(): emb1 = cond([''], device=dev)[0]
        f_step = step_flops(z1.float(), emb1)
        res.update(vae_encode_gflops=round(f_enc / 1e9, 3), unet_step_gflops=round(f_step / 1e9, 3), cache_speedup_flop_bound=round((f_enc + f_step) / f_step, 2))
        print(f"FLOPs per image: VAE encode {f_enc/1e9:.2f} G, UNet training step {f_step/1e9:.2f} G: caching can make a whole epoch "
              f"at most {(f_enc + f_step) / f_step:.2f}x faster by compute (decoding the image files adds a little)", flush=True)
        tc, nc = epoch(cached)
        tf, nf = epoch(imgs, vae)
        res.update(cached_epoch_s=round(tc, 2), on_the_fly_epoch_s=round(tf, 2), cached_sps=round(nc / tc, 2),
                   on_the_fly_sps=round(nf / tf, 2), cache_speedup=round((nc / tc) / (nf / tf), 2))
        print(f"epoch of {nc} samples: cached latents {tc:.2f}s ({nc/tc:.1f} samples/s), encode on the fly {tf:.2f}s "
              f"({nf/tf:.1f} samples/s): {res['cache_speedup']:.2f}x (goal >= 5x); one-off cache build {t_cache:.2f}s", flush=True)
    out = dict(info, **res)
    print(json.dumps(out))
    if a.out: Path(a.out).write_text(json.dumps(out, indent=1))

if __name__ == '__main__': main()
