"""The text side alone, without an image tower: which adapter on a frozen language model reads free text best?

Each variant is trained with the text-attribute loss alone (BCE of a linear head on the pooled text embedding against
the face's attributes) on template captions, and scored on clip_cond.HELD_OUT_PARAPHRASES the way
`held_out_text_scores` scores a CLIP's text-attribute head No image tower, and the language model's states are
computed once per caption draw, so a variant trains in seconds: a screen for issue #18's levers before a CLIP run
(benchmarks/paraphrase.py) or a bundle retrain. It leaves out the contrastive loss, which also shapes the pooled space.

    python benchmarks/text_head_screen.py --draws 0 1 --seeds 0 1 --out /tmp/screen.json
    python benchmarks/text_head_screen.py --n_faces 1600 --k 12 --epochs 1   # a CLIP run's caption budget (19,200)
    python benchmarks/text_head_screen.py --text_model mpnet --variants pooled adapter   # all-mpnet-base-v2, not MiniLM

Variants: `pooled` (a linear head on the language model's own mean-pooled embedding, no adapter), `adapter` (what
`LMTextEncoder` does), `adapter+pooled` (the mean-pooled embedding added to every adapter input), `adapter+drop`
(token states dropped at random while training), `adapter+noise` (Gaussian noise on the token states), `adapter2` (two
transformer layers instead of one)."""
import argparse, json, time

import numpy as np, pandas as pd, torch, torch.nn as nn, torch.nn.functional as F

from text2img_diffusion.clip_cond import HELD_OUT_PARAPHRASES, held_out_attr_scores, make_lm_encoder, tokenize_prompts
from text2img_diffusion.data import SYNTHETIC_RENDERED, captions_for, sample_attributes

ATTRS = list(SYNTHETIC_RENDERED)


def lm_states(texts, tok, enc, max_length: int = 48, bs: int = 256, layers=None) -> tuple:
    """(token states [N, L, width] float16, attention mask [N, L]) of the frozen language model: its last layer's (what
    `LMTextEncoder` reads), or the mean of hidden `layers` (0: the input embeddings)"""
    hs, ms = [], []
    for i in range(0, len(texts), bs):
        e = tokenize_prompts(texts[i:i+bs], tok, max_length, warn=False)
        if layers is None: h = enc.lm_states(e['input_ids'], e['attention_mask'])
        else:
            with torch.no_grad():
                out = enc.language_model(input_ids=e['input_ids'], attention_mask=e['attention_mask'],
                                         output_hidden_states=True)
            h = torch.stack([out.hidden_states[l] for l in layers]).mean(0) * e['attention_mask'][..., None]
        hs.append(h.half()); ms.append(e['attention_mask'])
    return torch.cat(hs), torch.cat(ms)


def caption_draw(n_faces: int, k: int, draw: int, vocabulary: str = 'templates') -> tuple:
    "`k` template captions for each of `n_faces` synthetic people, and their attribute labels [n_faces*k, n_attrs]"
    r = np.random.default_rng(draw)
    caps, ys = [], []
    for i in range(n_faces):
        a = sample_attributes(r)
        cs = captions_for(a, n=k, seed=draw * 10**7 + i, rendered=SYNTHETIC_RENDERED, vocabulary=vocabulary)
        caps += cs; ys += [[a[n] for n in ATTRS]] * len(cs)
    return caps, torch.tensor(ys, dtype=torch.float32)


class Adapter(nn.Module):
    "`LMTextEncoder`'s adapter (LayerNorm, Linear, transformer layers, LayerNorm, masked mean), with the options"
    def __init__(self, lm_dim, hidden=128, layers=1, pooled=False, token_drop=0., noise=0.):
        super().__init__()
        self.pooled, self.token_drop, self.noise = pooled, token_drop, noise
        self.norm_in, self.proj = nn.LayerNorm(lm_dim), nn.Linear(lm_dim, hidden)
        self.pool_proj = nn.Linear(lm_dim, hidden) if pooled else None
        self.layers = nn.ModuleList([nn.TransformerEncoderLayer(hidden, 4, 2 * hidden, dropout=0., batch_first=True,
                                                                norm_first=True) for _ in range(layers)])
        self.norm_out = nn.LayerNorm(hidden)

    def forward(self, h, mask):
        h, mask = h.float(), mask.clone()
        if self.training and self.token_drop:       # drop whole token states (never every token of a caption)
            keep = torch.rand(mask.shape) >= self.token_drop
            keep[torch.arange(len(mask)), 0] = True
            mask = mask * keep
        if self.training and self.noise: h = h + self.noise * torch.randn_like(h) * h.std(-1, keepdim=True)
        m = mask[..., None].float()
        x = self.proj(self.norm_in(h))
        if self.pooled: x = x + self.pool_proj((h * m).sum(1) / m.sum(1).clamp(min=1))[:, None]
        for layer in self.layers: x = layer(x, src_key_padding_mask=mask == 0)
        x = self.norm_out(x) * m
        return x.sum(1) / m.sum(1).clamp(min=1)


class Pooled(nn.Module):
    "The language model's own sentence embedding: the masked mean of its token states, no adapter"
    def forward(self, h, mask):
        m = mask[..., None].float()
        return (h.float() * m).sum(1) / m.sum(1).clamp(min=1)


# variant → (lm_dim → (the text body, the width of its pooled output))
VARIANTS = {'pooled': lambda d: (Pooled(), d), 'adapter': lambda d: (Adapter(d), 128),
            'adapter+pooled': lambda d: (Adapter(d, pooled=True), 128),
            'adapter+drop': lambda d: (Adapter(d, token_drop=0.15), 128),
            'adapter+noise': lambda d: (Adapter(d, noise=0.5), 128), 'adapter2': lambda d: (Adapter(d, layers=2), 128)}


def train_variant(name, H, M, Y, seed: int, epochs: int, bs: int = 128, lr: float = 2e-3):
    torch.manual_seed(seed)
    body, dim = VARIANTS[name](H.shape[-1])
    head = nn.Linear(dim, Y.shape[1])
    params = list(body.parameters()) + list(head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05)
    steps = epochs * (len(Y) // bs)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps)
    g = torch.Generator().manual_seed(seed)
    body.train()
    for _ in range(epochs):
        order = torch.randperm(len(Y), generator=g)
        for i in range(len(Y) // bs):
            j = order[i*bs:(i+1)*bs]
            loss = F.binary_cross_entropy_with_logits(head(body(H[j], M[j])), Y[j])
            opt.zero_grad(); loss.backward(); opt.step(); sched.step()
    body.eval()
    return lambda h, m: head(body(h, m))


def held_out_scores(predict, H, M) -> tuple:
    "`clip_cond.held_out_attr_scores` of the variant's reading, and each prompt's wrongly read attributes"
    with torch.no_grad(): pred = (predict(H, M) > 0)
    wrong = {q: bad for j, (q, a, _) in enumerate(HELD_OUT_PARAPHRASES)
             if (bad := [k for k, v in a.items() if bool(pred[j, ATTRS.index(k)]) != bool(v)])}
    scores = held_out_attr_scores(pred, ATTRS)
    return {k: scores[k] for k in ('attr_accuracy', 'negation_accuracy', 'prompt_exact')}, wrong


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--variants', nargs='+', default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument('--draws', nargs='+', type=int, default=[0, 1], help='caption draws (fresh faces and captions)')
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1], help='model seeds per draw')
    ap.add_argument('--n_faces', type=int, default=4000); ap.add_argument('--k', type=int, default=4)
    ap.add_argument('--epochs', type=int, default=8); ap.add_argument('--out')
    ap.add_argument('--vocabulary', default='templates', choices=['templates', 'wordnet'])
    ap.add_argument('--lm_layers', nargs='+', type=int, help="mean of these hidden layers (default: the last's)")
    ap.add_argument('--text_model', default='minilm', help="the frozen language model: 'minilm', a folder or a hub id")
    args = ap.parse_args()
    tok, enc = make_lm_encoder(args.text_model, 128, 48, seed=0)
    Hq, Mq = lm_states([q for q, *_ in HELD_OUT_PARAPHRASES], tok, enc, layers=args.lm_layers)
    rows, misses = [], {}
    for draw in args.draws:
        t0 = time.time()
        caps, Y = caption_draw(args.n_faces, args.k, draw, args.vocabulary)
        H, M = lm_states(caps, tok, enc, layers=args.lm_layers)
        print(f'draw {draw}: {len(caps)} captions, states in {time.time() - t0:.0f} s', flush=True)
        for name in args.variants:
            for seed in args.seeds:
                t0 = time.time()
                predict = train_variant(name, H, M, Y, seed, args.epochs)
                s, wrong = held_out_scores(predict, Hq, Mq)
                rows.append(dict(variant=name, draw=draw, seed=seed, **s, seconds=round(time.time() - t0, 1)))
                for q, bad in wrong.items(): misses.setdefault(name, {}).setdefault(q, []).append(bad)
                print(json.dumps(rows[-1]), flush=True)
    df = pd.DataFrame(rows)
    summary = df.drop(columns=['draw', 'seed']).groupby('variant', sort=False).agg(['mean', 'std']).round(3)
    print(summary.to_string())
    for name, qs in misses.items():
        n = len(args.draws) * len(args.seeds)
        print(f'\n{name}: prompts read wrong in most runs')
        for q, bads in sorted(qs.items(), key=lambda kv: -len(kv[1])):
            if len(bads) > n / 2: print(f'  {len(bads)}/{n} {q}: {sorted({b for bs in bads for b in bs})}')
    if args.out:
        with open(args.out, 'w') as f: json.dump(dict(args=vars(args), rows=rows, misses=misses), f, indent=1)


if __name__ == '__main__': main()
