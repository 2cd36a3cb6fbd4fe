"""How near the frozen language model's own sentence embedding puts held-out paraphrases to template captions.

For prompts of clip_cond.HELD_OUT_PARAPHRASES that the bundled model draws wrong, the cosine similarity of the
language model's mean-pooled embedding (what a linear head on it would read, no adapter) to template captions that say
the right attribute and a wrong one. A margin near zero or below means the language model itself does not tell them
apart; a clear margin that the trained model still misses points at the adapter or the UNet.

    python benchmarks/lm_neighbours.py --text_model mpnet
"""
import argparse

import torch, torch.nn.functional as F

from text2img_diffusion.clip_cond import load_language_model, resolve_language_model

# (held-out prompt, [a template caption saying the right attribute, then ones saying wrong ones])
PAIRS = [("a lady with raven hair", ["a woman with black hair", "a woman with blond hair", "a woman with brown hair"]),
         ("a girl with auburn tresses", ["a woman with brown hair", "a woman with black hair", "a woman with blond hair"]),
         ("a cheerful gal with flaxen locks", ["a woman with blond hair", "a woman with brown hair"]),
         ("a fellow in a fedora", ["a man wearing a hat", "a man without a hat"]),
         ("a lass whose cheeks are flushed", ["a woman with rosy cheeks", "a woman"]),
         ("a man with mutton chops", ["a man with sideburns", "a man with a mustache", "a clean-shaven man"]),
         ("a bloke with a tuft of whiskers on his chin", ["a man with a goatee", "a man with a mustache",
                                                          "a clean-shaven man"]),
         ("a gloomy man who has taken off his glasses", ["a man without glasses", "a man with glasses"]),
         ("a man without a single hair on his head", ["a bald man", "a man with black hair"])]


@torch.no_grad()
def sentence_embeddings(texts, tok, lm) -> torch.Tensor:
    "Unit-length masked means of the language model's last token states"
    e = tok(texts, padding=True, return_tensors='pt')
    h, m = lm(**e).last_hidden_state, e['attention_mask'][..., None]
    return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    ap.add_argument('--text_model', default='mpnet', help="'minilm', 'mpnet', a folder or a hub id")
    args = ap.parse_args()
    tok, lm = load_language_model(resolve_language_model(args.text_model)[0])
    print(f"{'held-out prompt':45} {'right':>6} {'best wrong':>10} {'margin':>7}  nearest wrong caption")
    for q, (right, *wrong) in PAIRS:
        e = sentence_embeddings([q, right, *wrong], tok, lm)
        cos = (e[1:] @ e[0]).tolist()
        w = max(range(len(wrong)), key=lambda i: cos[1 + i])
        print(f"{q:45} {cos[0]:6.2f} {cos[1 + w]:10.2f} {cos[0] - cos[1 + w]:+7.2f}  {wrong[w]}")


if __name__ == '__main__': main()
