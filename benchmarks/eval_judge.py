"""Train the attribute judge at the size that backs the >= 0.95 accuracy claim of nbs/01b_judge (CPU, ~tens of minutes).
usage: python benchmarks/eval_judge.py --out_dir /work/artifacts/judge [--n 8000 --epochs 4 --data_path CELEBA]"""
from text2img_diffusion.judge import judge_train

if __name__ == '__main__': judge_train()
