"""Images/s of the CelebA data loaders at 64 px: images in a folder vs read in place from a zip, with 0 and 2
worker processes. Not a test: it prints numbers measured in one run (and their ratios to the first row).
usage: python benchmarks/data_loading.py [--n 4000] [--size 64] [--bs 64] [--data DIR]"""
import argparse, tempfile, time, warnings
from pathlib import Path
from text2img_diffusion.data import make_synthetic_celeba, celeba_dls, load_celeba

def images_per_s(path, workers, size, bs, epochs=2):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = celeba_dls(path, size=size, bs=bs, num_workers=workers)
    n = 0
    for _ in range(epochs):           # the first epoch also pays for worker start-up and the file cache
        t = time.perf_counter(); n = 0
        for xb, _, _ in dls.train: n += len(xb)
        dt = time.perf_counter() - t
    return n / dt

if __name__ == '__main__':
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--n', type=int, default=4000); ap.add_argument('--size', type=int, default=64)
    ap.add_argument('--bs', type=int, default=64); ap.add_argument('--data', default=None)
    a = ap.parse_args()
    root = Path(a.data or tempfile.mkdtemp())
    folder, zipped = root/'folder', root/'zip'
    if not folder.exists(): make_synthetic_celeba(folder, a.n, seed=0)
    if not zipped.exists(): make_synthetic_celeba(zipped, a.n, seed=0, as_zip=True)
    rows = [(kind, w, images_per_s(p, w, a.size, a.bs)) for kind, p in (('folder', folder), ('zip', zipped)) for w in (0, 2)]
    base = rows[0][2]
    print(f"\n{a.n} synthetic images, {a.size} px, batch {a.bs}, train partition, second of two epochs")
    print(f"{'source':8} {'workers':>7} {'images/s':>10} {'vs folder/0':>12}")
    for kind, w, r in rows: print(f"{kind:8} {w:7d} {r:10.0f} {r/base:12.2f}")
