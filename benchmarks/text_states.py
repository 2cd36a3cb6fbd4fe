"""What the text-state cache (03_clip_cond.build_text_state_cache) costs to build, and what a 05 training batch costs
with it, against the in-domain text tower and the language model on the fly. One torch thread.

    python benchmarks/text_states.py --data DATA --out /tmp/text_states.json

DATA: a synthetic set (`t2i synth-data`), e.g. the 10,000 faces `t2i train --preset synthetic64-cpu` draws."""
import argparse, json, os, random, statistics, tempfile, time
from pathlib import Path

import torch, torch.nn.functional as F

from text2img_diffusion.clip_cond import (ClipContrastive, TextConditioner, build_text_state_cache, caption_corpus,
                                          clip_loss, clip_pixels, frame_caption_pool, make_clip, make_lit_clip,
                                          make_lm_encoder, read_text_state_meta, tokenize_prompts,
                                          train_caption_tokenizer)
from text2img_diffusion.core import BUNDLED_MODEL
from text2img_diffusion.data import load_data
from text2img_diffusion.unet_diffusion import make_noise_scheduler, unet_from_preset


def spread(xs) -> dict:
    return dict(median=round(statistics.median(xs), 3), min=round(min(xs), 3), max=round(max(xs), 3), n=len(xs))


def build_costs(df, subset: int, seeds, k: int = 4) -> dict:
    "Seconds to build the cache for the pool of `subset` random faces (per distinct caption), once per seed"
    tok, enc = make_lm_encoder('minilm', 128, 48)
    full = {c for cs in frame_caption_pool(df, k) for c in cs}
    runs = []
    for s in seeds:
        part = df.sample(subset, random_state=s)
        caps = [c for cs in frame_caption_pool(part, k) for c in cs]
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            build_text_state_cache(enc, tok, caps, Path(d)/'ts')
            secs = time.perf_counter() - t0
            n = read_text_state_meta(Path(d)/'ts')['n_captions']
        runs.append(dict(seed=s, captions=len(caps), distinct=n, seconds=round(secs, 1),
                         ms_per_caption=round(1e3 * secs / n, 2)))
    per = [r['ms_per_caption'] for r in runs]
    return dict(runs=runs, full_pool_distinct=len(full) + 1, ms_per_caption=spread(per),
                full_pool_minutes=spread([p * (len(full) + 1) / 6e4 for p in per]))


def batch_costs(cond, pool, n_batches: int, bs: int = 32, seed: int = 0) -> dict:
    "Seconds per 05 training batch (text encoding + celeba64 UNet step) and of its text encoding alone"
    torch.manual_seed(seed); random.seed(seed)
    unet = unet_from_preset('celeba64', cross_attention_dim=cond.dim, latent_channels=4, sample_size=16)
    opt, sched = torch.optim.AdamW(unet.parameters(), 5e-4), make_noise_scheduler()
    text, total = [], []
    for i in range(n_batches + 2):                        # two warm-up batches
        caps = [random.choice(random.choice(pool)) for _ in range(bs)]
        caps = ['' if random.random() < 0.1 else c for c in caps]      # CFG dropout
        t0 = time.perf_counter()
        with torch.no_grad(): emb = cond(caps)[0].float()
        t1 = time.perf_counter()
        z = torch.randn(bs, 4, 16, 16); noise = torch.randn_like(z)
        t = torch.randint(0, 1000, (bs,))
        loss = F.mse_loss(unet(sched.add_noise(z, noise, t), t, encoder_hidden_states=emb).sample, noise)
        loss.backward(); opt.step(); opt.zero_grad()
        if i >= 2: text.append(t1 - t0); total.append(time.perf_counter() - t0)
    return dict(text_seconds=spread(text), batch_seconds=spread(total))


def clip_costs(model, tok, pool, n_batches: int, bs: int = 128, size: int = 48, seed: int = 0) -> dict:
    "Seconds per 03 training batch (`small` CLIP, contrastive loss only) of `model` on captions of `pool`"
    torch.manual_seed(seed); random.seed(seed)
    net, L = ClipContrastive(model), model.config.text_config.max_position_embeddings
    opt = torch.optim.Adam([q for q in net.parameters() if q.requires_grad], 2e-3)
    out = []
    for i in range(n_batches + 2):
        caps = [random.choice(random.choice(pool)) for _ in range(bs)]
        t0 = time.perf_counter()
        enc = tokenize_prompts(caps, tok, L, warn=False)
        loss = clip_loss(net(clip_pixels(torch.rand(bs, 3, 64, 64) * 2 - 1, size), enc['input_ids'],
                             enc['attention_mask']))
        loss.backward(); opt.step(); opt.zero_grad()
        if i >= 2: out.append(time.perf_counter() - t0)
    return dict(batch_seconds=spread(out))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--data', required=True); ap.add_argument('--out', required=True)
    ap.add_argument('--subset', type=int, default=1000); ap.add_argument('--seeds', type=int, nargs='+', default=[0, 1])
    ap.add_argument('--batches', type=int, default=8)
    ap.add_argument('--skip_build', action='store_true'); ap.add_argument('--clip_only', action='store_true')
    a = ap.parse_args()
    torch.set_num_threads(1)
    df = load_data(a.data)
    res = dict(load_before=os.getloadavg(), threads=torch.get_num_threads())
    if not a.skip_build: res['build'] = build_costs(df, a.subset, a.seeds)
    part = df[df.partition == 'train'].sample(500, random_state=0)
    pool = [p for p in frame_caption_pool(part, 4) if p]
    tok, enc = make_lm_encoder('minilm', 128, 48)
    lm = TextConditioner(tok, enc)
    if a.clip_only:   # 03: the from-scratch text tower against LiT on cached states
        stok = train_caption_tokenizer(caption_corpus(part, 4), vocab_size=2000, max_length=48)
        res['clip_scratch'] = clip_costs(make_clip('small', stok, 48, seed=0), stok, pool, a.batches)
        with tempfile.TemporaryDirectory() as d:
            build_text_state_cache(enc, tok, [c for cs in pool for c in cs], Path(d)/'ts')
            enc.use_state_cache(Path(d)/'ts', tok)
            res['clip_lm_cached'] = clip_costs(make_lit_clip('small', enc, 48, seed=0), tok, pool, a.batches)
            res['clip_lm_cached']['counts'] = dict(enc.state_counts)
        Path(a.out).write_text(json.dumps(res, indent=1)); print(json.dumps(res, indent=1))
        return
    scratch = TextConditioner.from_pretrained(BUNDLED_MODEL, dtype=torch.float32)   # as 03 saves it
    res['in_domain'] = batch_costs(scratch, pool, a.batches)
    with tempfile.TemporaryDirectory() as d:
        build_text_state_cache(enc, tok, [c for cs in pool for c in cs], Path(d)/'ts')
        enc.use_state_cache(Path(d)/'ts', tok)
        res['lm_cached'] = batch_costs(lm, pool, a.batches) | dict(counts=dict(enc.state_counts))
        enc.cache_states(False)
    res['lm_on_the_fly'] = batch_costs(lm, pool, max(3, a.batches // 2))
    res['load_after'] = os.getloadavg()
    Path(a.out).write_text(json.dumps(res, indent=1))
    print(json.dumps(res, indent=1))


if __name__ == '__main__': main()
