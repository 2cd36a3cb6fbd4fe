#!/usr/bin/env bash
# The prepared GPU check for the training-runs issue: a short celeba64-sized UNet training on synthetic data in bf16,
# with and without channels_last and torch.compile; prints samples/s, host syncs per step (plain loop / Learner), an MFU
# estimate and peak memory for each, in one run on one card (the card's name is in every line), and Chrome traces of
# one plain and one Learner step in eager bf16 (trace_bf16/: where the device waits for the host). Not a test: no timing
# asserts.
#   bash benchmarks/gpu_matrix.sh [OUT_DIR] [PRESET]        (defaults: /tmp/gpu_matrix, celeba64-gpu)
set -euo pipefail
out=${1:-/tmp/gpu_matrix}; preset=${2:-celeba64-gpu}
mkdir -p "$out"
here=$(cd "$(dirname "$0")" && pwd)
data="$out/data"   # one synthetic set for every configuration (each run takes the same sample of it)
[ -f "$data/list_attr_celeba.csv" ] || python -c "from text2img_diffusion.data import make_synthetic_celeba as m; m('$data', 6000, seed=0, workers=8)" > /dev/null
for cfg in "--bf16" "--bf16 --channels_last" "--bf16 --compile" "--bf16 --channels_last --compile"; do
  name=$(echo "$cfg" | tr -d '-' | tr ' ' '_')
  trace=(); [ "$cfg" = "--bf16" ] && trace=(--trace "$out/trace_bf16")   # eager bf16: where the Learner trailed (0.94)
  python "$here/train_step.py" --device cuda --preset "$preset" $cfg --skip cache --repeats 2 --steps 30 --data_path "$data" --out "$out/$name.json" "${trace[@]}" \
    > "$out/$name.log" 2>&1 || { echo "$cfg failed: see $out/$name.log"; continue; }
done
python - "$out" <<'PY'
import json, sys
from pathlib import Path
rows = [json.loads(p.read_text()) for p in sorted(Path(sys.argv[1]).glob('*.json'))]
print(f"{'config':34} {'samples/s':>10} {'Learner/plain':>13} {'syncs/step P/L':>14} {'GFLOP/sample':>12} {'MFU':>6} {'peak GiB':>8}  device")
for r in rows:
    cfg = '+'.join(k for k in ('bf16', 'channels_last', 'compile') if r.get(k)) or 'fp32'
    syncs = f"{r.get('host_syncs_per_step_plain')}/{r.get('host_syncs_per_step_learner')}"
    print(f"{cfg:34} {r['learner_sps']:10.1f} {r['learner_over_plain']:13.3f} {syncs:>14} {r['train_gflops_per_sample']:12.2f} "
          f"{(r['mfu'] or float('nan')):6.3f} {(r['peak_memory_gib'] or float('nan')):8.2f}  {r['device']}")
PY
