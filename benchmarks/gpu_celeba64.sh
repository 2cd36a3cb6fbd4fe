#!/usr/bin/env bash
# The prepared GPU check of issue 19, one script, run once on one card:
#   1. `t2i train --preset celeba64` end to end on 20,000 synthetic faces (every stage as a papermill job), with each
#      stage's time (run.json);
#   2. the celeba64 UNet's training step in bf16: MFU and the fastai Learner ÷ plain PyTorch loop ratio
#      (benchmarks/train_step.py, on the run's own VAE and data);
#   3. benchmarks/gpu_matrix.sh (bf16 × channels_last × torch.compile).
# Not a test: no timing asserts; everything goes to OUT_DIR (summary.txt is what the README's figures come from).
#   bash benchmarks/gpu_celeba64.sh [OUT_DIR]                 (default /tmp/gpu_celeba64)
#   T2I_BENCH_TINY=1 bash benchmarks/gpu_celeba64.sh OUT     the script itself checked on a CPU at toy sizes (200 faces,
#                                                             the tiny preset, a 3-step train_step, no matrix)
#   T2I_TRAIN_SET="unet.epochs=20"                            overrides passed to t2i train --set (e.g. a shorter run)
set -euo pipefail
out=${1:-/tmp/gpu_celeba64}; mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
if [ -n "${T2I_BENCH_TINY:-}" ]; then
    n=200; preset=tiny; unet=tiny; step=(--device cpu --steps 3 --warmup 1 --repeats 1 --image_size 32); matrix=0
else
    n=20000; preset=celeba64; unet=celeba64-gpu; step=(--device cuda --bf16 --steps 30 --repeats 3); matrix=1
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: set T2I_BENCH_TINY=1 to check the script on a CPU')"
fi
set_=(); [ -n "${T2I_TRAIN_SET:-}" ] && set_=(--set "$T2I_TRAIN_SET")
data="$out/data"
t0=$SECONDS
[ -f "$data/list_attr_celeba.csv" ] || t2i synth-data "$data" --n "$n" > "$out/synth.log"
echo "synthetic data: $n faces in $((SECONDS - t0)) s" | tee "$out/summary.txt"

t0=$SECONDS
t2i train --preset "$preset" --data_path "$data" --out "$out/run" "${set_[@]}" > "$out/train.log" 2>&1 \
    || { tail -n 40 "$out/train.log"; exit 1; }
echo "t2i train --preset $preset: $((SECONDS - t0)) s end to end" | tee -a "$out/summary.txt"
python - "$out/run/run.json" <<'PY' | tee -a "$out/summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
for k, v in r['stage_seconds'].items(): print(f"  {k:9} {v / 60:7.1f} min  {r['stage_share'][k]:6.1%}")
m = r.get('report', {}).get('model', {})
print('  report: ' + ', '.join(f"{k} {m[k]:.3f}" for k in ('asked_correct', 'fd', 'fd_floor', 'text_image_score') if k in m))
PY

python "$here/train_step.py" --preset "$unet" "${step[@]}" --vae_path "$out/run/vae/vae" --data_path "$data" \
    --out "$out/train_step.json" > "$out/train_step.log" 2>&1 || { tail -n 40 "$out/train_step.log"; exit 1; }
python - "$out/train_step.json" <<'PY' | tee -a "$out/summary.txt"
import json, sys
r = json.load(open(sys.argv[1]))
mfu = 'n/a' if r.get('mfu') is None else f"{r['mfu']:.3f}"
print(f"UNet {r.get('preset')} training step on {r['device']}: Learner {r['learner_sps']:.1f} samples/s, "
      f"plain loop {r['plain_sps']:.1f}, Learner / plain {r['learner_over_plain']:.3f}, MFU {mfu}")
PY
[ "$matrix" = 1 ] && bash "$here/gpu_matrix.sh" "$out/matrix" | tee -a "$out/summary.txt"
echo "summary: $out/summary.txt"
