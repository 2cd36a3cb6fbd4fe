"""05/06: a UNet trained with `pooled_conditioning` saves and loads as one that reads the pooled text embedding, and a
pipeline around it draws images that depend on that embedding (tiny preset, CPU)."""
import warnings
import torch
from text2img_diffusion.sampling import Text2FacePipeline, tiny_pipeline, seeded_generators
from text2img_diffusion.unet_diffusion import load_unet, train_unet, unet_reads_pooled

def test_pooled_unet_trains_saves_and_samples(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        learn = train_unet(tmp_path/'run', preset='tiny', n_images=40, epochs=1, bs=8, seed=3, sample_every=1,
                           pooled_conditioning=True, progress=False)
    unet = load_unet(tmp_path/'run')
    assert unet_reads_pooled(unet) and unet.config.projection_class_embeddings_input_dim == learn.conditioner.dim
    assert list((tmp_path/'run'/'samples').glob('*.png'))               # the sample grids ran through the pooled path
    pipe = tiny_pipeline(pooled=True)
    pipe.save_pretrained(tmp_path/'pipe')
    back = Text2FacePipeline.from_pretrained(tmp_path/'pipe')
    assert unet_reads_pooled(back.unet)
    kw = dict(num_inference_steps=2, output_type='np', init='noise')
    a = back('a smiling woman', generator=seeded_generators([0]), **kw).images
    b = pipe('a smiling woman', generator=seeded_generators([0]), **kw).images
    assert (a == b).all()
    tok, neg, pooled, mask = pipe.encode_prompt('a smiling woman')
    c = pipe(prompt_embeds=tok, pooled_prompt_embeds=torch.zeros_like(pooled), generator=seeded_generators([0]), **kw)
    assert not (c.images == b).all()
