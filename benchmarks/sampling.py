"""Sampling speed and quality, measured in one run (not a test: no timing asserts).

1. images/s of `generate()` for 1 and 8 images at 20 steps, batch-invariant (the CPU default: image k of a batch is
   bit for bit seed k alone) and batched (`batch_invariant=False`);
2. wall time of `generate()` ÷ a bare loop calling the same text encoder, UNet, scheduler and VAE the same way (the
   pipeline's overhead; goal ≤ 1.05) as the median of --rounds interleaved rounds, for both;
3. CVAE-initialised sampling at 4/8/12 steps vs noise-initialised at 25/50 steps: judge accuracy on a prompt set,
   feature distance to real test images, and time. The judge defaults to the one shipped with the package; without
   --data a synthetic set is drawn (its test partition gives the real images);
4. with --compare_spacing: DPM++ with evenly spaced timesteps ('leading', diffusers' default) vs the Karras σ ramp
   `make_scheduler` uses, noise init, at --spacing_steps.

usage: python benchmarks/sampling.py [--model DIR] [--judge DIR] [--data CELEBA_DIR] [--device cpu] [--n_prompts 256]
       [--strengths 1.0,0.85] [--cvae_steps 4,8,12] [--noise_steps 25,50] [--speed_only] [--quality_only]
       [--compare_spacing] [--spacing_steps 8,25] [--rounds 5]"""
import argparse, time, warnings
import numpy as np, torch
from contextlib import nullcontext
from text2img_diffusion.core import BUNDLED_MODEL
from text2img_diffusion.sampling import load_pipeline, generate, make_scheduler, seeded_generators, per_image_layers
from text2img_diffusion.unet_diffusion import unet_pooled

def timed(*fs, repeat=3, rounds=2):
    """Best wall time of each of `fs`: `rounds` rounds, each running every f once to warm up (allocator state differs
    between functions) and then `repeat` times, so that load on a shared machine hits all alike"""
    ts = [[] for _ in fs]
    for _ in range(rounds):
        for f, t in zip(fs, ts):
            f()
            for _ in range(repeat):
                t0 = time.perf_counter(); f(); t.append(time.perf_counter() - t0)
    return [min(t) for t in ts]

@torch.no_grad()
def bare_loop(pipe, prompts, seeds, steps, guidance=3.0, per_image=False):
    "The same work as generate(init='noise', batch_invariant=per_image), written out by hand"
    sched = make_scheduler('dpm++', pipe.scheduler.config)
    sched.set_timesteps(steps)
    tok, pooled = pipe.encode(prompts, [''] * len(prompts), True, per_image)[:2]   # (negative, prompt) rows in turn
    pooled = unet_pooled(pipe.unet, pooled)                                  # None: a UNet that reads only the tokens
    c, s = pipe.unet.config.in_channels, pipe.unet.config.sample_size
    z = torch.stack([torch.randn(c, s, s, generator=g) for g in seeded_generators(seeds)]) * sched.init_noise_sigma
    with per_image_layers(pipe.unet, 2) if per_image else nullcontext():
        for t in sched.timesteps:
            eps = pipe.unet(sched.scale_model_input(z.repeat_interleave(2, 0), t), t, encoder_hidden_states=tok,
                            class_labels=pooled).sample
            z = sched.step(eps[0::2] + guidance * (eps[1::2] - eps[0::2]), t, z).prev_sample
    with per_image_layers(pipe.vae, 1) if per_image else nullcontext():
        return pipe.vae.decode(z / pipe.vae.config.scaling_factor).sample

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--model', default=None); ap.add_argument('--judge', default=None); ap.add_argument('--data', default=None)
    ap.add_argument('--device', default='cpu'); ap.add_argument('--n_prompts', type=int, default=256)
    ap.add_argument('--speed_only', action='store_true'); ap.add_argument('--quality_only', action='store_true')
    ap.add_argument('--strengths', default='1.0,0.85', help='CVAE-init start strengths to compare, comma-separated')
    ap.add_argument('--cvae_steps', default='4,8,12'); ap.add_argument('--noise_steps', default='25,50')
    ap.add_argument('--schedulers', default='dpm++', help='samplers for the CVAE-init runs, comma-separated (noise init uses dpm++)')
    ap.add_argument('--compare_spacing', action='store_true', help="also score DPM++ with 'leading' timesteps against the Karras σ ramp")
    ap.add_argument('--spacing_steps', default='8,25')
    ap.add_argument('--rounds', type=int, default=5, help='interleaved rounds of the generate() / bare loop timing')
    a = ap.parse_args()
    warnings.simplefilter('ignore')
    pipe = load_pipeline(a.model, a.device)
    print(f"model: {a.model or BUNDLED_MODEL}  device: {a.device}  threads: {torch.get_num_threads()}")
    if not a.quality_only:
        p1, p8 = ['a smiling woman with blond hair'], ['a smiling woman with blond hair', 'a bald man with a mustache'] * 4
        print(f"\n20 steps, dpm++, noise init")
        t8s = {}
        for inv in (True, False):
            kw = dict(steps=20, model=pipe, init='noise', scheduler='dpm++', progress=False, batch_invariant=inv)
            t1, = timed(lambda: generate(p1, seed=0, **kw))
            # generate() and the bare loop alternate, one warm-up each then 2 timed runs per round, best of the round;
            # the ratio's median over rounds keeps a shared machine's load changes from favouring either
            ratios, t8r = [], []
            for _ in range(a.rounds):
                t8, tb = timed(lambda: generate(p8, seed=0, batch_size=8, **kw),
                               lambda: bare_loop(pipe, p8, list(range(8)), 20, per_image=inv), repeat=2, rounds=1)
                ratios.append(t8 / tb); t8r.append(t8)
            t8 = float(np.median(t8r)); t8s[inv] = t8
            print(f"  batch_invariant={inv!s:5}  1 image: {1/t1:6.2f} images/s ({t1:.2f} s)   8 images: {8/t8:6.2f} images/s ({t8:.2f} s)"
                  f"   generate() / bare loop at 8: median {np.median(ratios):.3f} over {a.rounds} rounds "
                  f"({', '.join(f'{r:.3f}' for r in ratios)}; goal <= 1.05)", flush=True)
        print(f"  batch invariance costs {t8s[True]/t8s[False]:.2f}x the batched time at 8 images")
    if not a.speed_only:
        import tempfile
        from text2img_diffusion.judge import load_judge
        from text2img_diffusion.eval import report_prompt_set, pipeline_scores
        from text2img_diffusion.data import load_celeba, make_synthetic_celeba
        import matplotlib.pyplot as plt
        judge = load_judge(a.judge)
        data = a.data or make_synthetic_celeba(tempfile.mkdtemp() + '/synth', 30 * a.n_prompts, seed=1)
        df = load_celeba(data)
        pset, real = report_prompt_set(df[df.partition == 'test'], a.n_prompts, size=pipe.unet.config.sample_size * 4, seed=1)
        print(f"\nquality on {len(pset)} prompts (judge: {a.judge or 'bundled'}); FD floor = real-vs-real")
        print(f"{'init':6} {'sampler':>8} {'steps':>5} {'strength':>8} {'acc':>6} {'FD':>8} {'floor':>8} {'s/img':>7}")
        ints = lambda t: [int(x) for x in t.split(',') if x]
        runs = ([('cvae', st, float(s), sc) for sc in a.schedulers.split(',') for s in a.strengths.split(',') for st in ints(a.cvae_steps)]
                + [('noise', st, 1.0, 'dpm++') for st in ints(a.noise_steps)])
        for init, steps, strength, sched in runs:
            v, fig = pipeline_scores(pipe, judge, pset, real, steps, init=init, strength=strength, scheduler=sched)
            plt.close(fig)
            print(f"{init:6} {sched:>8} {steps:5d} {strength if init == 'cvae' else float('nan'):8.2f} {v['asked_correct']:6.3f} {v.get('fd', np.nan):8.2f} {v.get('fd_floor', np.nan):8.2f} {v['seconds_per_image']:7.3f}")
        if a.compare_spacing:
            print(f"\nDPM++, noise init: timestep spacing\n{'spacing':8} {'steps':>5} {'acc':>6} {'FD':>8}")
            saved = pipe.scheduler
            for steps in ints(a.spacing_steps):
                for karras in (False, True):
                    pipe.scheduler = make_scheduler('dpm++', saved.config, karras=karras)    # scheduler=None samples with a copy of it
                    v, fig = pipeline_scores(pipe, judge, pset, real, steps, init='noise', scheduler=None)
                    plt.close(fig); pipe.scheduler = saved
                    print(f"{'karras' if karras else 'leading':8} {steps:5d} {v['asked_correct']:6.3f} {v.get('fd', np.nan):8.2f}")
    else: print("\n(quality comparison skipped: --speed_only)")
