"""Text-guided edits of held-out synthetic faces with the bundled model, scored by the bundled judge (not a test).

For each face and each edited attribute (eyeglasses, smile, hat, blond hair, mustache) the prompt describes the face's
own attributes (the ones the judge reads) with that one attribute changed: added if the face lacks it, removed (an
explicit negation, e.g. "without glasses") if it has it; mustache edits only on men. The faces are a synthetic draw
with a seed other than the bundled model's training draw (seed 0), from its test partition. Printed per strength:

- flipped: the share of edits after which the judge reads the edited attribute as asked (over edits whose original
  the judge reads as its label says);
- kept: the share of the other judged attributes (the judge's rendered ones, No_Beard aside for mustache edits) whose
  judged value is the same as on the original;

each with a 95% bootstrap interval over faces. Writes edit_flip.csv, edits.csv (each edit: prompt,
whether it was scored and flipped), edit_flip.png (the sweep) and edit_grid.png (original | one edit per attribute, at
the best strength) to --out.

usage: python benchmarks/edit_flip.py [--n_faces 48] [--strengths 0.3,0.5,0.7,0.9] [--steps 20] [--seed 7]
       [--guidance 7.0] [--attrs Eyeglasses,Smiling,Wearing_Hat,Blond_Hair,Mustache] [--negative empty|source]
       [--out runs/edit_flip]

--negative source steers each edit away from the face as it is: the negative prompt is the same description with the
edited attribute left as the original has it, so classifier-free guidance pushes along the one attribute the two
prompts differ in (the default, empty, guides against the unconditional prediction)."""
import argparse, json, tempfile, time
from pathlib import Path
import numpy as np, pandas as pd, torch
from text2img_diffusion.core import image_grid
from text2img_diffusion.data import make_synthetic_celeba, load_celeba
from text2img_diffusion.judge import load_judge, judge_predict, load_faces, prompt_for
from text2img_diffusion.sampling import DEFAULT_EDIT_GUIDANCE, load_pipeline, generate

EDITS = ('Eyeglasses', 'Smiling', 'Wearing_Hat', 'Blond_Hair', 'Mustache')
HAIR = ('Black_Hair', 'Blond_Hair', 'Brown_Hair', 'Gray_Hair')
# attributes worth saying in an edit prompt (what the judge reads, in the caption grammar), in order of importance
SAID = ('Male', 'Bald', *HAIR, 'Smiling', 'Eyeglasses', 'Wearing_Hat', 'Mustache', 'Goatee', 'Bangs', 'Pale_Skin',
        'Wearing_Lipstick', 'Wearing_Necktie', 'Wearing_Earrings', 'Wearing_Necklace', 'Sideburns', 'Rosy_Cheeks',
        'Bushy_Eyebrows', 'Big_Nose', 'Mouth_Slightly_Open')

def edit_prompt(row: pd.Series, attr: str, value: int, max_tokens: int, tokenizer) -> str:
    "The face's own attributes with `attr` set to `value` (said as a negation when 0), shortened to `max_tokens`"
    spec = {a: int(row[a]) for a in SAID if a == 'Male' or row[a] == 1}
    if attr == 'Blond_Hair' and value: spec = {k: v for k, v in spec.items() if k not in HAIR + ('Bald',)}
    spec[attr] = value
    keep = list(spec)
    while True:
        p = prompt_for({k: spec[k] for k in keep})
        if len(tokenizer(p)['input_ids']) <= max_tokens: return p
        keep.remove(next(k for k in reversed(keep) if k not in ('Male', attr)))

def bootstrap(per_face: np.ndarray, weights: np.ndarray, n: int = 1000, seed: int = 0) -> tuple:
    "95% interval of sum(per_face) / sum(weights) over faces resampled with replacement"
    r = np.random.default_rng(seed)
    idx = r.integers(0, len(per_face), (n, len(per_face)))
    v = per_face[idx].sum(1) / np.maximum(weights[idx].sum(1), 1)
    return tuple(np.percentile(v, [2.5, 97.5]))

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n_faces', type=int, default=48); ap.add_argument('--strengths', default='0.3,0.5,0.7,0.9')
    ap.add_argument('--steps', type=int, default=20); ap.add_argument('--seed', type=int, default=7)
    ap.add_argument('--guidance', type=float, default=DEFAULT_EDIT_GUIDANCE)
    ap.add_argument('--out', default='runs/edit_flip')
    ap.add_argument('--batch_size', type=int, default=64)
    ap.add_argument('--attrs', default=','.join(EDITS), help='the attributes to edit, comma-separated')
    ap.add_argument('--negative', default='empty', choices=['empty', 'source'],
                    help="negative prompt: the empty prompt, or the face's own description (see above)")
    a = ap.parse_args()
    edits = tuple(a.attrs.split(','))
    if set(edits) - set(EDITS): ap.error(f"--attrs: choose from {', '.join(EDITS)}")
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    pipe, judge = load_pipeline(device='cpu'), load_judge()
    df = load_celeba(make_synthetic_celeba(Path(tempfile.mkdtemp())/'s', a.n_faces * 10, seed=a.seed, workers=1))
    test = df[df.partition == 'test'].iloc[:a.n_faces]
    faces, _ = load_faces(test, size=pipe.image_size)
    names = list(judge.attr_names)
    rendered = [x for x in judge.rendered if x in names]
    orig = judge_predict(judge, faces).numpy() > 0.5
    jobs, negatives = [], []                                      # (face index, attribute, wanted value, prompt)
    for i, (_, row) in enumerate(test.iterrows()):
        for attr in edits:
            if attr == 'Mustache' and not row['Male']: continue
            want = 1 - int(row[attr])
            jobs.append((i, attr, want, edit_prompt(row, attr, want, pipe.max_prompt_tokens, pipe.tokenizer)))
            negatives.append(edit_prompt(row, attr, 1 - want, pipe.max_prompt_tokens, pipe.tokenizer)
                             if a.negative == 'source' else '')
    print(f"{len(test)} held-out faces (synthetic draw seed {a.seed}, test partition), {len(jobs)} edits per strength, "
          f"{a.steps} steps, guidance {a.guidance}, negative prompt {a.negative}; e.g. {jobs[0][3]!r}"
          + (f" against {negatives[0]!r}" if a.negative == 'source' else ''))
    rows, grids, per_edit = [], {}, []
    for s in [float(x) for x in a.strengths.split(',')]:
        t0 = time.perf_counter()
        edited = torch.stack(generate([j[3] for j in jobs], image=faces[[j[0] for j in jobs]], strength=s,
                                      steps=a.steps, guidance_scale=a.guidance, negative_prompt=negatives,
                                      seed=list(range(len(jobs))), model=pipe, output_type='pt',
                                      batch_size=a.batch_size, batch_invariant=False)) * 2 - 1
        secs = time.perf_counter() - t0
        judged = judge_predict(judge, edited).numpy() > 0.5
        grids[s] = edited
        flip_n, flip_d = np.zeros(len(test)), np.zeros(len(test))
        keep_n, keep_d = np.zeros(len(test)), np.zeros(len(test))
        per_attr = {}
        for k, (i, attr, want, prompt) in enumerate(jobs):
            j = names.index(attr)
            scored = orig[i, j] == (1 - want)                     # the judge reads the original as its label
            if scored:
                ok = judged[k, j] == want
                flip_n[i] += ok; flip_d[i] += 1
                per_attr.setdefault(attr, []).append(ok)
            per_edit.append(dict(strength=s, face=i, attr=attr, want=want, prompt=prompt, scored=bool(scored),
                                 flipped=bool(scored and judged[k, j] == want)))
            others = [names.index(x) for x in rendered if x != attr and not (attr == 'Mustache' and x == 'No_Beard')]
            keep_n[i] += (judged[k, others] == orig[i, others]).sum(); keep_d[i] += len(others)
        fl, kp = flip_n.sum() / flip_d.sum(), keep_n.sum() / keep_d.sum()
        rows.append(dict(strength=s, flipped=fl, flipped_lo=bootstrap(flip_n, flip_d)[0],
                         flipped_hi=bootstrap(flip_n, flip_d)[1], kept=kp, kept_lo=bootstrap(keep_n, keep_d)[0],
                         kept_hi=bootstrap(keep_n, keep_d)[1], n_edits=len(jobs), n_scored=int(flip_d.sum()),
                         seconds_per_edit=secs / len(jobs), **{f'flip_{k}': float(np.mean(v)) for k, v in per_attr.items()}))
        r = rows[-1]
        print(f"strength {s:.2f}: flipped {fl:.3f} [{r['flipped_lo']:.3f}, {r['flipped_hi']:.3f}]  kept {kp:.3f} "
              f"[{r['kept_lo']:.3f}, {r['kept_hi']:.3f}]  per attribute: "
              + ' '.join(f"{k} {np.mean(v):.2f}" for k, v in per_attr.items()) + f"  ({secs / len(jobs):.3f} s/edit)",
              flush=True)
    res = pd.DataFrame(rows)
    recon = judge_predict(judge, pipe.decode_latents(pipe.image_latents(faces, len(faces)))).numpy() > 0.5
    others = [names.index(x) for x in rendered]
    print(f"floor: the VAE's own reconstruction keeps {(recon[:, others] == orig[:, others]).mean():.3f} of judged "
          "attributes")
    res.to_csv(out/'edit_flip.csv', index=False); pd.DataFrame(per_edit).to_csv(out/'edits.csv', index=False)
    import matplotlib; matplotlib.use('Agg'); import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for m, c in (('flipped', 'C0'), ('kept', 'C1')):
        ax.plot(res.strength, res[m], 'o-', color=c, label=m)
        ax.fill_between(res.strength, res[f'{m}_lo'], res[f'{m}_hi'], color=c, alpha=0.2)
    ax.axhline(0.8, color='C0', ls=':', lw=1); ax.axhline(0.9, color='C1', ls=':', lw=1)
    ax.set(xlabel='strength', ylabel='share', title=f'edits of {len(test)} held-out faces, {a.steps} steps', ylim=(0, 1.02))
    ax.legend(); fig.tight_layout(); fig.savefig(out/'edit_flip.png', dpi=100); plt.close(fig)
    # the gentlest strength that meets both goals (flips >= 0.8, kept >= 0.9), else the most flips keeping 90%
    meets, kept_enough = res[(res.flipped >= 0.8) & (res.kept >= 0.9)], res[res.kept >= 0.9]
    best = float(meets.strength.min() if len(meets) else kept_enough.loc[kept_enough.flipped.idxmax()].strength
                 if len(kept_enough) else res.loc[(res.flipped + res.kept).idxmax()].strength)
    n_show = min(8, len(test))
    cells = []
    for i in range(n_show):
        cells.append(faces[i])
        for attr in edits:
            k = next((k for k, j in enumerate(jobs) if j[0] == i and j[1] == attr), None)
            cells.append(grids[best][k] if k is not None else torch.full_like(faces[i], -1.))
    image_grid(torch.stack(cells).clamp(-1, 1), ncols=1 + len(edits), pad=2).save(out/'edit_grid.png')
    (out/'edit_prompts.json').write_text(json.dumps([dict(face=i, attr=x, want=w, prompt=p) for i, x, w, p in jobs], indent=1))
    print(f"best strength {best}; wrote {out/'edit_flip.csv'}, {out/'edit_flip.png'}, {out/'edit_grid.png'} "
          "(rows: faces; columns: original, then " + ', '.join(edits) + ')')
