"""generate() speed of two saved pipelines, interleaved in one process (not a test): images/s of each and the ratio.

Timings on a shared VM drift by ±10-30% over minutes, so two models timed in separate runs cannot be compared; here
each round times one call of each, alternating, and the medians over rounds are compared. 8 prompts, 20 DPM++ steps,
noise init, both batch_invariant settings.

usage: python benchmarks/bundle_speed.py OTHER_MODEL [--model DIR] [--rounds 6] [--threads 1]
  e.g. git archive HEAD~5 text2img_diffusion/bundled/celeba64 | tar -x -C /tmp/old
       python benchmarks/bundle_speed.py /tmp/old/text2img_diffusion/bundled/celeba64"""
import argparse, time
import numpy as np, torch
from text2img_diffusion.sampling import load_pipeline, generate

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('other', help='the saved pipeline to compare with')
    ap.add_argument('--model', default=None, help='the pipeline measured (default: the bundled model)')
    ap.add_argument('--rounds', type=int, default=6); ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    pipes = dict(model=load_pipeline(a.model, 'cpu'), other=load_pipeline(a.other, 'cpu'))
    p8 = ['a smiling woman with blond hair', 'a bald man with a mustache'] * 4
    print(f"model: {a.model or 'the bundled model'}  other: {a.other}  threads: {a.threads}  rounds: {a.rounds}")
    for inv in (True, False):
        kw = dict(steps=20, init='noise', scheduler='dpm++', progress=False, batch_invariant=inv, seed=0, batch_size=8)
        ts = {k: [] for k in pipes}
        for p in pipes.values(): generate(p8, model=p, **kw)                      # warm-up
        for _ in range(a.rounds):
            for k, p in pipes.items():
                t0 = time.perf_counter(); generate(p8, model=p, **kw); ts[k].append(time.perf_counter() - t0)
        m, o = np.median(ts['model']), np.median(ts['other'])
        print(f"  batch_invariant={inv!s:5}  model {8 / m:5.2f} images/s, other {8 / o:5.2f} images/s; model / other "
              f"time: median {m / o:.3f} (rounds {', '.join(f'{x / y:.3f}' for x, y in zip(ts['model'], ts['other']))})")
