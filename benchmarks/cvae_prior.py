"""What the CVAE prior alone draws: judge attribute accuracy on a prompt set written from attribute combinations,
per-prompt diversity (mean pairwise RMS distance of decoded samples; near 0 = a collapsed prior), and feature
distance to real test images with its real-vs-real floor. Not a test: it prints numbers measured in one run.

usage: python benchmarks/cvae_prior.py --cvae DIR --vae DIR --text_encoder DIR --data CELEBA_DIR [--judge DIR] [--per_spec 8]"""
import argparse, json, warnings
import numpy as np, torch
from text2img_diffusion.cvae import LatentCVAE, prior_generator, prior_diversity, mean_pairwise_distance
from text2img_diffusion.vae import load_pretrained_vae
from text2img_diffusion.clip_cond import TextConditioner
from text2img_diffusion.judge import load_judge, prompt_set, evaluate_generator, load_faces
from text2img_diffusion.data import load_celeba

SPECS = [dict(Male=1, Smiling=1, Black_Hair=1), dict(Male=0, Blond_Hair=1, Eyeglasses=1), dict(Male=1, Bald=1, Mustache=1),
         dict(Male=0, Brown_Hair=1, Wearing_Hat=1), dict(Male=0, Gray_Hair=1, Smiling=0), dict(Male=1, Eyeglasses=0, Goatee=1),
         dict(Male=0, Bangs=1, Wearing_Lipstick=1), dict(Male=1, Blond_Hair=1, Wearing_Hat=0, Smiling=1)]

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    for k in ('cvae', 'vae', 'text_encoder', 'data'): ap.add_argument(f'--{k}', required=True)
    ap.add_argument('--judge', default=None, help="attribute judge folder (default: the one shipped with the package)")
    ap.add_argument('--per_spec', type=int, default=8); ap.add_argument('--temperature', type=float, default=1.0)
    ap.add_argument('--json', default=None, help='also write the numbers to this file')
    a = ap.parse_args()
    warnings.simplefilter('ignore'); torch.manual_seed(0)
    cvae, vae = LatentCVAE.from_pretrained(a.cvae).eval(), load_pretrained_vae(a.vae).eval()
    cond, judge = TextConditioner.from_pretrained(a.text_encoder), load_judge(a.judge)
    pset = prompt_set([s for s in SPECS for _ in range(a.per_spec)], seed=0)
    df = load_celeba(a.data); test = df[df.partition == 'test']
    real = load_faces(test.iloc[:2 * len(pset)], size=vae.config.sample_size)[0]
    table, fig = evaluate_generator(prior_generator(cvae, cond, vae, a.temperature), pset, judge, real=real, title='CVAE prior alone')
    v = table.set_index(['metric', 'attribute']).value
    div = prior_diversity(cvae, cond, vae, list(dict.fromkeys(pset.prompt)), n_seeds=8, temperature=a.temperature)
    res = dict(asked_correct=v[('asked_correct', 'all')], requested_found=v[('requested_found', 'all')],
               negation_respected=v[('negation_respected', 'all')], fd=v.get(('fd', 'all')), fd_floor=v.get(('fd_floor', 'all')),
               diversity_mean=float(div.mean()), diversity_min=float(div.min()), real_diversity=mean_pairwise_distance(real[:16]),
               n_images=len(pset))
    print(f"CVAE prior alone, {len(pset)} images ({len(SPECS)} attribute sets × {a.per_spec} seeds), temperature {a.temperature}")
    for k, x in res.items(): print(f"  {k:20} {x:.4f}" if isinstance(x, float) else f"  {k:20} {x}")
    print("per prompt diversity:\n" + div.round(4).to_string())
    if a.json: open(a.json, 'w').write(json.dumps(res, indent=1, default=float))
