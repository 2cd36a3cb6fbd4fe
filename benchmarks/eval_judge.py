"""Train the attribute judge at the size that backs the >= 0.95 accuracy claim of nbs/01b_judge (CPU, ~tens of minutes).
usage: python benchmarks/eval_judge.py /work/artifacts/judge [--n_images 8000 --epochs 5 --data_path CELEBA]
(the same as `t2i train-judge`; its defaults are the real-size judge's)"""
from text2img_diffusion.judge import judge_train

if __name__ == '__main__': judge_train()
