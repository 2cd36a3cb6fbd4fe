"""The wider caption vocabulary (data.ATTR_SYNONYMS, vocabulary='wordnet') keeps 03's held-out paraphrases held out:
no word of clip_cond.HELD_OUT_PARAPHRASES that the templates do not already use may appear in it. And the checked-in
table is the one WordNet gives, where WordNet is installed (Debian: wordnet-base)."""
import inspect, re
from pathlib import Path

import numpy as np, pytest

from text2img_diffusion.clip_cond import HELD_OUT_PARAPHRASES, caption_corpus, train_clip
from text2img_diffusion.data import (ATTR_PHRASES, ATTR_SYNONYMS, CAPTION_FRAMES, CELEBA_ATTRS, FRAME_SYNONYMS,
                                     HELD_OUT_WORDS, NEAR_HELD_OUT, WordNet, _phrase_words, captions_for,
                                     celeba_dls, derive_attr_synonyms, load_data, make_synthetic_celeba,
                                     sample_attributes)

WORDNET = Path('/usr/share/wordnet')


def words(text: str) -> set:
    return {w for w in re.split(r"[^a-z]+", text.lower()) if w}


def sample_captions(vocabulary: str, n: int = 3000) -> list:
    "Captions of many attribute rows, every attribute said and denied where it can be"
    r, out = np.random.default_rng(0), []
    for i in range(n):
        a = sample_attributes(r) if i % 2 else dict(zip(CELEBA_ATTRS, (r.random(40) < 0.5).astype(int)))
        out += captions_for(a, n=2, seed=i, p_mention=1.0 if i % 3 else 0.5, p_negate=1.0 if i % 2 else 0.3,
                            rendered=None if i % 5 else ['Smiling', 'Eyeglasses'], vocabulary=vocabulary)
    return out


def template_words() -> set:
    phrases = [p for _, pos, neg in ATTR_PHRASES.values() for p in pos + (neg or [])]
    phrases += [p for v in CAPTION_FRAMES.values() for p in v]
    return words(' '.join(phrases + sample_captions('templates')))


def wide_phrases() -> list:
    return ([p for pos, neg in ATTR_SYNONYMS.values() for p in pos + neg]
            + [p for v in FRAME_SYNONYMS.values() for p in v])


def test_held_out_words_listed():
    "data.HELD_OUT_WORDS is exactly the held-out prompts' words the templates never use"
    held = words(' '.join(q for q, *_ in HELD_OUT_PARAPHRASES))
    assert sorted(held - template_words()) == HELD_OUT_WORDS


def test_no_held_out_word_in_the_wide_vocabulary():
    forbidden = {w for w in words(' '.join(q for q, *_ in HELD_OUT_PARAPHRASES))} - template_words()
    forbidden_stems = {_phrase_words(w)[0] for w in forbidden}          # plurals too: 'whisker' for 'whiskers'
    wide = wide_phrases()
    bad = [p for p in wide if words(p) & forbidden or set(_phrase_words(p)) & forbidden_stems]
    assert not bad, f"held-out words in ATTR_SYNONYMS / FRAME_SYNONYMS: {bad}"
    near = [p for p in wide if any(n in p.lower() for n in NEAR_HELD_OUT)]
    assert not near, f"other spellings of held-out words: {near}"
    said = words(' '.join(sample_captions('wordnet', 1500)))          # and in what the captions really say
    assert not said & forbidden, sorted(said & forbidden)


def test_wide_vocabulary_is_wider():
    new = words(' '.join(wide_phrases())) - template_words()
    assert len(new) > 150, len(new)
    assert words(' '.join(sample_captions('wordnet', 500))) - template_words()


@pytest.mark.skipif(not (WORDNET/'index.noun').exists(), reason='WordNet 3.0 not installed (apt-get install wordnet-base)')
def test_checked_in_table_is_wordnets():
    syn, frames, removed = derive_attr_synonyms(WordNet(WORDNET))
    assert syn == ATTR_SYNONYMS and frames == FRAME_SYNONYMS
    assert any('specs' in p for p in removed) and any('fedora' in p for p in removed)   # WordNet does offer them


def test_vocabulary_reaches_the_corpus_and_the_loaders(tmp_path):
    "caption_corpus(vocabulary=) and celeba_dls(caption_vocabulary=) write wider captions; the default is the templates"
    data = make_synthetic_celeba(tmp_path/'synth', 24, seed=0)
    df = load_data(data)
    t, w = caption_corpus(df, 4, 0), caption_corpus(df, 4, 0, vocabulary='wordnet')
    assert t == caption_corpus(df, 4, 0, vocabulary='templates') and words(' '.join(w)) - words(' '.join(t))
    ds = celeba_dls(data, size=16, bs=4, caption_vocabulary='wordnet', device='cpu').train_ds
    assert ds.caption_vocabulary == 'wordnet'
    with pytest.raises(ValueError, match='caption vocabulary must be one of'): celeba_dls(data, caption_vocabulary='x')
    assert inspect.signature(train_clip).parameters['caption_vocabulary'].default == 'templates'
