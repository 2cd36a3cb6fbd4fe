"""Held-out paraphrases (clip_cond.HELD_OUT_PARAPHRASES): the in-domain text tower vs a locked pretrained LM + adapter.

Three measurements, each optional:

  text side   train a CLIP from scratch and a LiT CLIP (all-MiniLM-L6-v2 + adapter) at the same budget on the same
              synthetic data, for a few seeds; score the text-attribute head on the held-out paraphrases (every asked
              attribute, the ones stated by negation, whole prompts) and text→image retrieval of a right face
  --costs     encoding 8 prompts (16 texts under guidance) with the LM encoder vs a 20-step generate() of 8 images
              with the bundled pipeline
  --pipelines A B   the image side: each pipeline's images for the held-out prompts, scored by the bundled judge

usage (CPU, ~4 min per trained CLIP at the defaults; one torch thread):
  python benchmarks/paraphrase.py --out /tmp/para --seeds 0 1 --n_images 2000 --size 32 --epochs 6
  python benchmarks/paraphrase.py --out /tmp/para --vocabularies templates wordnet   # the captions' words (issue #18)
  python benchmarks/paraphrase.py --costs --no-text [--costs_text_model minilm]
  python benchmarks/paraphrase.py --no-text --pipelines text2img_diffusion/bundled/celeba64 NEW_BUNDLE --n_seeds 4

The image side reports, beside each share, its 95% interval with the prompts drawn again (asked_correct_95) and the
(prompt, attribute) pairs drawn right in fewer than half the images (missed).
"""
import argparse, json, tempfile, time
from pathlib import Path

import numpy as np, pandas as pd, torch

from text2img_diffusion.core import BUNDLED_JUDGE, BUNDLED_MODEL
from text2img_diffusion.clip_cond import (HELD_OUT_PARAPHRASES, encode_prompts, held_out_prompt_set, make_lm_encoder,
                                          train_clip)
from text2img_diffusion.data import SYNTHETIC_RENDERED, captions_for, make_synthetic_celeba, sample_attributes
from text2img_diffusion.judge import asked_right, generate_images, judge_predict, load_judge, prompt_faithfulness
from text2img_diffusion.sampling import DEFAULT_GUIDANCE, load_pipeline, seeded_generators

KEYS = [('held_out_text_attrs', 'attr_accuracy'), ('held_out_text_attrs', 'negation_accuracy'),
        ('held_out_text_attrs', 'prompt_exact'), ('held_out_recall', 'hit@1'), ('held_out_recall', 'hit@5'),
        ('held_out_recall', 'chance'), ('paraphrase', 'hit@1'), ('probe', 'accuracy'), ('retrieval_caption', 'R@1'),
        ('train_seconds', None)]


def text_side(args) -> pd.DataFrame:
    "Train both encoders per seed and caption vocabulary on one synthetic set; a row per (encoder, vocabulary, seed)"
    rows = []
    with tempfile.TemporaryDirectory() as td:
        data = args.data_path or make_synthetic_celeba(Path(td)/'synth', args.n_images, seed=0)
        for seed in args.seeds:
            for vocabulary in args.vocabularies:
                for text_model in args.encoders:
                    name = f'{text_model.replace("/", "_")}-seed{seed}'
                    out = Path(args.out or td)/(name if vocabulary == 'templates' else f'{name}-{vocabulary}')
                    _, _, m = train_clip(out, data_path=str(data), preset=args.preset, n_images=args.n_images,
                                         size=args.size, epochs=args.epochs, bs=args.bs, lr=args.lr, seed=seed,
                                         text_model=text_model, adapter_layers=args.adapter_layers,
                                         token_dropout=args.token_dropout,
                                         caption_vocabulary=vocabulary, caption_pool=args.caption_pool)
                    row = dict(encoder=text_model, vocabulary=vocabulary, seed=seed)
                    for k, sub in KEYS: row[f'{k}.{sub}' if sub else k] = m[k][sub] if sub else m[k]
                    rows.append(row); print(json.dumps(row), flush=True)
    return pd.DataFrame(rows)


def summarise(df: pd.DataFrame) -> pd.DataFrame:
    "mean ± sd over seeds per encoder (and vocabulary); the mean alone for one seed"
    by = ['encoder', 'vocabulary'] if 'vocabulary' in df else ['encoder']
    g = df.drop(columns='seed').groupby(by, sort=False)
    mean, sd, n = g.mean(), g.std(ddof=1), g.size().iloc[0]
    out = mean.map('{:.3f}'.format)                     # formatted here: pandas' str dtype turns 'x' + NaN into NaN
    return (out + ' ± ' + sd.map('{:.3f}'.format) if n > 1 else out) + f' (n={n})'


def per_call(f, n: int = 5) -> tuple:
    "median and spread (min, max) of `n` timed calls, after one warm-up"
    f(); ts = []
    for _ in range(n):
        t0 = time.perf_counter(); f(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts)), float(min(ts)), float(max(ts))


def costs(args) -> dict:
    "Encoding 8 prompts (and the 16 texts guidance encodes) vs one 20-step generate() of 8 images"
    pipe = load_pipeline(BUNDLED_MODEL, 'cpu')
    lm = args.costs_text_model or pipe.text_encoder.config.lm_source      # default: the bundled model's own
    tok, enc = make_lm_encoder(lm, 128, 48, args.adapter_layers, seed=0)
    prompts = [q for q, *_ in HELD_OUT_PARAPHRASES[:8]]
    r = np.random.default_rng(0)
    captions = [captions_for(sample_attributes(r), n=1, seed=i, rendered=SYNTHETIC_RENDERED)[0] for i in range(128)]
    gen = lambda: pipe(prompts, num_inference_steps=20, generator=seeded_generators(range(8)), output_type='pt',
                       progress=False)
    res = dict(encode8=per_call(lambda: encode_prompts(prompts, tok, enc)),
               encode16=per_call(lambda: encode_prompts(prompts + [''] * 8, tok, enc)),
               encode16_one_by_one=per_call(lambda: encode_prompts(prompts + [''] * 8, tok, enc, batch_size=1)),
               encode8_bundled_clip=per_call(lambda: encode_prompts(prompts, pipe.tokenizer, pipe.text_encoder)),
               # training: a CLIP batch (synthetic64-cpu: 128) and a UNet / CVAE batch (32) of template captions
               train_batch128=per_call(lambda: encode_prompts(captions[:128], tok, enc), 3),
               train_batch32=per_call(lambda: encode_prompts(captions[:32], tok, enc), 3),
               generate8_20_steps=per_call(gen, 3), threads=torch.get_num_threads(), text_model=lm)
    res['ratio_encode8_to_generate'] = res['encode8'][0] / res['generate8_20_steps'][0]      # the goal: <= 5%
    res['ratio_encode16_to_generate'] = res['encode16'][0] / res['generate8_20_steps'][0]
    res['ratio_one_by_one_to_generate'] = res['encode16_one_by_one'][0] / res['generate8_20_steps'][0]
    return res


def prompt_bootstrap(right: pd.DataFrame, n: int = 2000, seed: int = 0) -> tuple:
    """95% interval of the share of asked attributes right, the prompts drawn again with replacement (all of a prompt's
    images together): the spread that comes from which paraphrases the set holds, not only from the seeds"""
    g = right.groupby('prompt', sort=False).right.agg(['sum', 'size'])
    idx = np.random.default_rng(seed).integers(0, len(g), (n, len(g)))
    shares = g['sum'].to_numpy()[idx].sum(1) / g['size'].to_numpy()[idx].sum(1)
    return tuple(float(q) for q in np.quantile(shares, [0.025, 0.975]))


def image_side(args) -> pd.DataFrame:
    "Each pipeline's images for the held-out prompts (n_seeds each), scored by the bundled judge"
    judge, pset = load_judge(BUNDLED_JUDGE), held_out_prompt_set(args.n_seeds, seed=args.first_seed)
    # negations said in words ("beardless", "hatless"): the attributes each prompt states by negation
    said, rows = [(i, a) for i, n in enumerate(pset.negated) for a in n.split()], []
    for path in args.pipelines:
        pipe = load_pipeline(path, 'cpu')                  # once per pipeline, for every guidance scale
        for scale in args.guidance_scales:
            make = lambda ps, ss: pipe(list(ps), num_inference_steps=20, guidance_scale=scale,
                                       generator=seeded_generators(ss), output_type='pt', progress=False).images * 2 - 1
            images = generate_images(make, pset.prompt.tolist(), pset.seed.tolist(), bs=8)
            probs = judge_predict(judge, images)
            summary, _ = prompt_faithfulness(judge, images, pset, probs=probs)
            neg_ok = [float((probs[i, judge.attr_names.index(a)] > 0.5).item() == bool(pset.loc[i, a]))
                      for i, a in said]
            right = asked_right(judge, pset, probs)
            by_prompt = right.groupby(['prompt', 'attribute'], sort=False).right.mean()
            rows.append(dict(pipeline=str(path), guidance_scale=scale, **summary.to_dict(),
                             asked_correct_95=prompt_bootstrap(right),
                             negation_in_words=float(np.mean(neg_ok)), n_negations=len(neg_ok),
                             missed=[f'{q} / {a}: {v:.2f}' for (q, a), v in by_prompt.items() if v < 0.5]))
            print(json.dumps(rows[-1]), flush=True)
    return pd.DataFrame(rows)


if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--out', help='folder for the trained CLIPs and results.json (default: a temp dir)')
    ap.add_argument('--data_path', help='CelebA-format folder (default: a fresh synthetic set of n_images)')
    ap.add_argument('--encoders', nargs='+', default=['scratch', 'minilm'])
    ap.add_argument('--seeds', nargs='+', type=int, default=[0, 1])
    ap.add_argument('--vocabularies', nargs='+', default=['templates'], choices=['templates', 'wordnet'],
                    help="the training captions' words (train_clip's caption_vocabulary)")
    ap.add_argument('--preset', default='small'); ap.add_argument('--n_images', type=int, default=2000)
    ap.add_argument('--size', type=int, default=32); ap.add_argument('--epochs', type=int, default=6)
    ap.add_argument('--bs', type=int, default=64); ap.add_argument('--lr', type=float, default=2e-3)
    ap.add_argument('--adapter_layers', type=int, default=1)
    ap.add_argument('--token_dropout', type=float, default=0., help="a language model's adapter: train_clip's option")
    ap.add_argument('--caption_pool', type=int, default=0,
                    help="train_clip's caption_pool: captions per face drawn once (-lm preset: 4); 0: fresh ones")
    ap.add_argument('--no-text', dest='text', action='store_false', help='skip the text-side training comparison')
    ap.add_argument('--costs', action='store_true', help='time encoding against generation')
    ap.add_argument('--costs_text_model', default=None,
                    help="--costs: the language model timed: minilm, mpnet (default: the bundled model's)")
    ap.add_argument('--pipelines', nargs='+', default=[], help='saved pipelines to score on the held-out prompts')
    ap.add_argument('--n_seeds', type=int, default=4, help='images per held-out prompt for --pipelines')
    ap.add_argument('--guidance_scales', nargs='+', type=float, default=[DEFAULT_GUIDANCE],
                    help="--pipelines: classifier-free guidance weights tried (generate's default: %(default)s)")
    ap.add_argument('--first_seed', type=int, default=0,
                    help='first image seed for --pipelines (another value: an independent draw of seeds)')
    args = ap.parse_args()
    if not torch.cuda.is_available(): torch.set_num_threads(1)
    results = {}
    if args.text:
        df = text_side(args)
        print(summarise(df).T.to_string())
        results['text_side'] = df.to_dict('records')
    if args.costs:
        results['costs'] = costs(args); print(json.dumps(results['costs'], indent=1))
    if args.pipelines:
        results['image_side'] = image_side(args).to_dict('records')
    if args.out:
        Path(args.out).mkdir(parents=True, exist_ok=True)
        (Path(args.out)/'results.json').write_text(json.dumps(results, indent=1, default=float))
