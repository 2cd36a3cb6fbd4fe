"""CelebA as users have it: the Kaggle folder, the Kaggle zip, the whole downloaded archive, and the original text
layout, each written here by hand in the real files' formats, and each damaged the way real downloads are."""
import io, shutil, warnings, zipfile
from pathlib import Path
import numpy as np, pandas as pd, pytest
from PIL import Image
from text2img_diffusion.data import (CELEBA_ATTRS, load_celeba, celeba_dls, read_image, CelebAFilesNotFound)

def jpeg_bytes(seed, size=(178, 218)):
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(buf, 'JPEG')
    return buf.getvalue()

def rgba_png_bytes():
    buf = io.BytesIO(); Image.new('RGBA', (178, 218), (10, 200, 30, 90)).save(buf, 'PNG'); return buf.getvalue()

N = 12
IDS = [f'{i:06d}.jpg' for i in range(1, N + 1)]
ATTRS = pd.DataFrame(np.where(np.random.default_rng(0).random((N, 40)) < 0.3, 1, -1), index=IDS, columns=CELEBA_ATTRS)
PART = [0]*8 + [1]*2 + [2]*2
# 000003: corrupt (random bytes), 000004: RGBA PNG under a .jpg name, 000005: truncated, 000006: listed, no file
def image_files():
    files = {i: jpeg_bytes(k) for k, i in enumerate(IDS)}
    files['000003.jpg'] = b'\xff\xd8\xff\xe0 this is not really a jpeg' * 20
    files['000004.jpg'] = rgba_png_bytes()
    files['000005.jpg'] = files['000005.jpg'][:400]
    del files['000006.jpg']
    return files

def kaggle_csvs(d: Path, where=None):
    "The Kaggle CSVs exactly as the data set ships them (image_id first, attributes as 1/-1)"
    put = where or (lambda name, text: (d/name).write_text(text))
    put('list_attr_celeba.csv', ATTRS.rename_axis('image_id').to_csv(lineterminator='\n'))
    put('list_eval_partition.csv', 'image_id,partition\n' + ''.join(f'{i},{p}\n' for i, p in zip(IDS, PART)))
    put('list_bbox_celeba.csv', 'image_id,x_1,y_1,width,height\n' + ''.join(f'{i},95,71,226,313\n' for i in IDS))
    put('list_landmarks_align_celeba.csv', 'image_id,lefteye_x,lefteye_y,righteye_x,righteye_y,nose_x,nose_y,leftmouth_x,leftmouth_y,rightmouth_x,rightmouth_y\n'
        + ''.join(f'{i},69,109,106,113,77,142,73,152,108,154\n' for i in IDS))

def load_quietly(path, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        df = load_celeba(path, **kw)
    return df, [str(x.message) for x in w]

def check(df, msgs, verified=True):
    assert list(df.columns[:40]) == list(CELEBA_ATTRS)
    assert '000006.jpg' not in df.index                       # row without an image: skipped
    skipped = df.attrs['celeba']['skipped']
    assert skipped['missing'] == ['000006.jpg']
    assert any('000006.jpg' in m for m in msgs)                # ... and reported
    if verified:
        assert sorted(skipped['undecodable']) == ['000003.jpg', '000005.jpg']
        assert len(df) == N - 3
    assert '000004.jpg' in df.index and read_image(df.loc['000004.jpg', 'image_path']).mode == 'RGB'
    for i in df.index:                                         # attributes and partitions as written
        assert df.loc[i, CELEBA_ATTRS].tolist() == (ATTRS.loc[i] > 0).astype(int).tolist()
        assert df.loc[i, 'partition'] == ['train', 'valid', 'test'][PART[IDS.index(i)]]

def test_kaggle_folder(tmp_path):
    img = tmp_path/'img_align_celeba'/'img_align_celeba'; img.mkdir(parents=True)
    for i, b in image_files().items(): (img/i).write_bytes(b)
    kaggle_csvs(tmp_path)
    df, msgs = load_quietly(tmp_path, verify=True)
    check(df, msgs)
    assert df.attrs['celeba']['layout'] == 'kaggle-folder'
    assert {'x_1', 'lefteye_x'} <= set(df.columns)

def test_kaggle_zip_read_in_place(tmp_path):
    with zipfile.ZipFile(tmp_path/'img_align_celeba.zip', 'w') as z:
        for i, b in image_files().items(): z.writestr(f'img_align_celeba/{i}', b)
    kaggle_csvs(tmp_path)
    df, msgs = load_quietly(tmp_path, verify=True)
    check(df, msgs)
    assert df.attrs['celeba']['layout'] == 'kaggle-zip'
    assert not (tmp_path/'img_align_celeba').exists()        # nothing extracted

def test_whole_kaggle_archive(tmp_path):
    with zipfile.ZipFile(tmp_path/'archive.zip', 'w') as z:
        for i, b in image_files().items(): z.writestr(f'img_align_celeba/img_align_celeba/{i}', b)
        kaggle_csvs(tmp_path, where=lambda name, text: z.writestr(name, text))
    df, msgs = load_quietly(tmp_path/'archive.zip', verify=True)
    check(df, msgs)

def test_original_text_layout(tmp_path):
    "Google Drive layout: Img/, Anno/ and Eval/ with space-separated text files"
    img = tmp_path/'Img'/'img_align_celeba'; img.mkdir(parents=True)
    for i, b in image_files().items(): (img/i).write_bytes(b)
    (tmp_path/'Anno').mkdir(); (tmp_path/'Eval').mkdir()
    rows = ''.join(f"{i} " + ' '.join(f'{v:2d}' for v in r) + '\n' for i, r in zip(IDS, ATTRS.values))
    (tmp_path/'Anno'/'list_attr_celeba.txt').write_text(f"{N}\n" + ' '.join(CELEBA_ATTRS) + ' \n' + rows)
    (tmp_path/'Eval'/'list_eval_partition.txt').write_text(''.join(f'{i} {p}\n' for i, p in zip(IDS, PART)))
    (tmp_path/'Anno'/'list_bbox_celeba.txt').write_text(f"{N}\nimage_id x_1 y_1 width height\n" + ''.join(f'{i}    95   71  226  313\n' for i in IDS))
    df, msgs = load_quietly(tmp_path, verify=True)
    check(df, msgs)
    assert df.attrs['celeba']['layout'] == 'original-folder'
    assert df['width'].iloc[0] == 226

def test_unverified_load_then_loader_skips_bad_images(tmp_path):
    "Without verify, undecodable images are found while loading batches: skipped and counted, never fatal"
    img = tmp_path/'img_align_celeba'; img.mkdir()
    for i, b in image_files().items(): (img/i).write_bytes(b)
    kaggle_csvs(tmp_path)
    df, msgs = load_quietly(tmp_path)
    check(df, msgs, verified=False)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dls = celeba_dls(tmp_path, size=32, bs=4, df=df)
        batches = list(dls.train)
    assert len(batches) == 1 and batches[0][0].shape == (4, 3, 32, 32)
    assert dls.train_ds.n_bad >= 1

def test_missing_partition_file_uses_official_split(tmp_path, synth):
    src, _ = synth
    shutil.copytree(src, tmp_path/'c'); (tmp_path/'c'/'list_eval_partition.csv').unlink()
    df, msgs = load_quietly(tmp_path/'c')
    assert set(df.partition) == {'train'} and any('official split' in m for m in msgs)

def test_nothing_usable_is_a_clear_error(tmp_path):
    img = tmp_path/'img_align_celeba'; img.mkdir()
    (img/'000001.jpg').write_bytes(b'')
    kaggle_csvs(tmp_path)
    with pytest.raises(ValueError, match='No usable images'), warnings.catch_warnings():
        warnings.simplefilter('ignore'); load_celeba(tmp_path)

def test_not_celeba_names_what_it_looked_for(tmp_path):
    (tmp_path/'photos').mkdir()
    with pytest.raises(CelebAFilesNotFound) as e: load_celeba(tmp_path)
    msg = str(e.value)
    for name in ('list_attr_celeba.csv', 'img_align_celeba/img_align_celeba', 'img_align_celeba.zip', str(tmp_path)):
        assert name in msg

def test_bad_attribute_values(tmp_path):
    (tmp_path/'img_align_celeba').mkdir(); (tmp_path/'img_align_celeba'/'000001.jpg').write_bytes(jpeg_bytes(0))
    a = ATTRS.iloc[:1].copy(); a.iloc[0, 3] = 7
    (tmp_path/'list_attr_celeba.csv').write_text(a.rename_axis('image_id').to_csv())
    with pytest.raises(ValueError, match='1/-1'): load_celeba(tmp_path)


# ---- your own data: captioned folders and Multi-Modal-CelebA-HQ, through the one entry point (data.load_data) ----
import json, os, subprocess, sys
from text2img_diffusion.data import (DataNotRecognised, CelebAItems, data_summary, has_attributes, load_data)

def faces(synth, k):
    "`k` synthetic faces (178×218 RGB) as PIL images"
    _, df = synth
    return [Image.open(df.image_path.iloc[i]).convert('RGB') for i in range(k)]

def write_varied(face, i, path: Path):
    "Face `i` saved the way photos come: wide, tall, gray, transparent, sideways (EXIF), CMYK"
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = i % 6
    if kind == 0: face.resize((240, 150)).save(path.with_suffix('.jpg'))                     # wide
    elif kind == 1: face.resize((90, 200)).save(path.with_suffix('.png'))                     # tall
    elif kind == 2: face.convert('L').save(path.with_suffix('.png'))                          # grayscale
    elif kind == 3:                                                                           # transparent corners
        rgba = face.convert('RGBA'); rgba.putalpha(Image.new('L', face.size, 255).crop((0, 0) + face.size))
        a = np.array(rgba); a[:20, :20, 3] = 0; Image.fromarray(a).save(path.with_suffix('.png'))
    elif kind == 4:                                                                           # stored sideways
        ex = Image.Exif(); ex[0x0112] = 6
        face.transpose(Image.ROTATE_90).save(path.with_suffix('.jpg'), exif=ex)
    else: face.convert('CMYK').save(path.with_suffix('.jpg'))
    return next(p for p in (path.with_suffix('.jpg'), path.with_suffix('.png')) if p.exists())

def broken_files(root: Path):
    "A truncated JPEG, a text file named .jpg and an empty file"
    (root/'broken').mkdir(parents=True, exist_ok=True)
    (root/'broken'/'cut.jpg').write_bytes(jpeg_bytes(1)[:300])
    (root/'broken'/'notajpeg.jpg').write_bytes(b'hello, not an image' * 10)
    (root/'broken'/'empty.jpg').write_bytes(b'')
    return ['broken/cut.jpg', 'broken/notajpeg.jpg', 'broken/empty.jpg']

def quiet_load(path, **kw):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always'); df = load_data(path, **kw)
    return df, [str(m.message) for m in w]

def all_items_read(df, size=32):
    ds = CelebAItems(df, size)
    for i in range(len(ds)):
        img, cap, att = ds[i]
        assert img.shape == (3, size, size) and str(img.dtype) == 'torch.uint8' and isinstance(cap, str) and cap
    assert ds.n_bad == 0
    return ds

def mixed_folder(root: Path, synth, n=30):
    "metadata.jsonl at the top (several captions: repeated rows and a JSON list) and metadata.csv in a nested folder"
    rows = []
    for i, f in enumerate(faces(synth, n)):
        sub = 'people/nested' if i >= n // 2 else 'top'
        p = write_varied(f, i, root/sub/f'face{i:03d}')
        rel = p.relative_to(root).as_posix()
        if sub == 'top':
            rows.append(dict(file_name=rel, text=f'a photo of person {i}'))
            if i % 2: rows.append(dict(file_name=rel, text=[f'person number {i}', f'face {i}']))
    bad = broken_files(root)
    rows += [dict(file_name=b, text='a broken file') for b in bad] + [dict(file_name='top/gone.jpg', text='missing')]
    (root/'metadata.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    nested = sorted((root/'people'/'nested').iterdir())
    pd.DataFrame(dict(file_name=[p.name for p in nested], text=[f'nested face {p.stem}' for p in nested])).to_csv(
        root/'people'/'nested'/'metadata.csv', index=False)
    return root

def test_captioned_folder_metadata_files(tmp_path, synth):
    "metadata.jsonl (several captions per image) and a metadata.csv in a nested folder; every image mode; broken files"
    root = mixed_folder(tmp_path/'mixed', synth)
    df, msgs = quiet_load(root)
    info = data_summary(df)
    assert (info['kind'], info['layout'], info['attributes'], info['captions']) == ('captioned-folder', 'metadata', False, 'own')
    assert info['n_images'] == 30 and sum(info['partitions'].values()) == 30
    assert info['skipped'] == dict(missing=1, empty=1, uncaptioned=0, undecodable=2)
    assert any('top/gone.jpg' in m for m in msgs)
    assert df.loc['top/face001.png', 'captions'] == ['a photo of person 1', 'person number 1', 'face 1']
    assert df.loc['people/nested/face020.png', 'captions'] == ['nested face face020']
    assert info['split'] == dict(source='seeded', seed=0, valid_pct=0.1, test_pct=0.1)
    assert not has_attributes(df)
    ds = all_items_read(df)
    assert set(ds.attrs.unique().tolist()) == {-1}                             # no attributes: all unknown
    faces(synth, 5)[4].save(tmp_path/'upright.jpg')
    side, upright = (CelebAItems(pd.DataFrame(dict(image_path=[str(p)])), 16, captions=False)[0][0].float()
                     for p in (root/'top'/'face004.jpg', tmp_path/'upright.jpg'))
    assert (side - upright).abs().mean() < 12 < (side - upright.flip(-1).transpose(-1, -2)).abs().mean()   # upright again

def test_captioned_folder_sidecars_and_split_folders(tmp_path, synth):
    "A .txt beside each image (several lines: several captions), nested train/valid/test folders giving the split"
    root = tmp_path/'side'
    for i, f in enumerate(faces(synth, 12)):
        part = ['train'] * 8 + ['validation'] * 2 + ['test'] * 2
        p = write_varied(f, i, root/part[i]/'deep'/f'im{i}')
        if i != 5: p.with_suffix('.txt').write_text(f'first caption {i}\nsecond caption {i}\n')
    df, msgs = quiet_load(root)
    info = data_summary(df)
    assert (info['kind'], info['layout'], info['split'], info['skipped']['uncaptioned']) == (
        'captioned-folder', 'sidecars', dict(source='folders'), 1)
    assert df.partition.value_counts().to_dict() == dict(train=7, valid=2, test=2)
    assert df.captions['train/deep/im0.jpg'] == ['first caption 0', 'second caption 0']
    all_items_read(df)

def test_mm_celeba_hq_with_and_without_attributes(tmp_path, synth):
    root = tmp_path/'mm'; (root/'CelebA-HQ-img').mkdir(parents=True); (root/'text').mkdir()
    for i, f in enumerate(faces(synth, 10)):
        f.resize((256, 256)).save(root/'CelebA-HQ-img'/f'{i}.jpg')
        (root/'text'/f'{i}.txt').write_text(''.join(f'caption {k} of face {i}\n' for k in range(10)))
    (root/'CelebA-HQ-img'/'10.jpg').write_bytes(jpeg_bytes(3)[:200])          # broken
    (root/'text'/'10.txt').write_text('a broken face\n')
    df, msgs = quiet_load(root)
    assert data_summary(df)['kind'] == 'mm-celeba-hq' and not has_attributes(df)
    assert len(df) == 10 and len(df.captions['3.jpg']) == 10 and df.attrs['data']['skipped']['undecodable'] == ['10.jpg']
    assert data_summary(df)['split']['source'] == 'seeded' and set(df.partition) == {'train', 'valid', 'test'}
    vals = np.where(np.random.default_rng(1).random((11, 40)) < 0.4, 1, -1)
    (root/'CelebAMask-HQ-attribute-anno.txt').write_text(
        '11\n' + ' '.join(CELEBA_ATTRS) + '\n' + ''.join(f'{i}.jpg ' + ' '.join(map(str, v)) + '\n' for i, v in enumerate(vals)))
    da, _ = quiet_load(root)
    assert has_attributes(da) and data_summary(da)['captions'] == 'own + written from attributes'
    assert da.loc['7.jpg', list(CELEBA_ATTRS)].tolist() == (vals[7] > 0).astype(int).tolist()
    assert (da.partition == df.partition).all()                              # the same seeded split
    all_items_read(da)

def test_celeba_with_a_captions_file_beside_it(tmp_path, synth):
    src, sdf = synth
    shutil.copytree(src, tmp_path/'c')
    (tmp_path/'c'/'captions.jsonl').write_text(''.join(json.dumps(dict(image_id=i, text=f'my words about {i}')) + '\n'
                                                       for i in sdf.index[:20]))
    df, _ = quiet_load(tmp_path/'c')
    assert data_summary(df)['kind'] == 'celeba+captions' and df.captions.iloc[0] == [f'my words about {sdf.index[0]}']
    assert has_attributes(df) and df.captions.isna().sum() == len(df) - 20

def test_folder_without_captions_is_a_clear_error(tmp_path, synth):
    photos = tmp_path/'photos'; photos.mkdir()
    for i, f in enumerate(faces(synth, 3)): f.save(photos/f'{i}.jpg')
    with pytest.raises(DataNotRecognised) as e: load_data(photos)
    msg = str(e.value)
    for s in ('3 images but no captions', 'metadata.jsonl or metadata.csv', 'Multi-Modal-CelebA-HQ', 'list_attr_celeba'):
        assert s in msg, msg
    r = subprocess.run([sys.executable, '-c', RUNNER, 'train', '--preset', 'tiny', '--data_path', str(photos),
                        '--out', str(tmp_path/'run')], capture_output=True, text=True, timeout=300)
    assert r.returncode != 0 and '3 images but no captions' in r.stderr and 'Traceback' not in r.stderr, r.stderr[-2000:]

RUNNER = "import sys; from text2img_diffusion.cli import main; sys.exit(main(sys.argv[1:]))"

def test_mixed_folder_trains_end_to_end_and_generates(tmp_path, synth):
    """`t2i train --preset tiny --smoke --data_path FOLDER`: every stage's function (the one its notebook comes down
    to, in this process: the papermill path is test_train_pipeline's) on a captioned folder without attributes, then
    generate"""
    root = mixed_folder(tmp_path/'mixed', synth, n=40)
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'Agg'}
    r = subprocess.run([sys.executable, '-c', RUNNER, 'train', '--preset', 'tiny', '--smoke', '--data_path', str(root),
                        '--out', str(tmp_path/'run')], capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    run = json.loads((tmp_path/'run'/'run.json').read_text())
    assert (run['data']['kind'], run['data']['n_images'], run['data']['attributes']) == ('captioned-folder', 40, False)
    assert run['data']['skipped'] == dict(missing=1, empty=1, uncaptioned=0, undecodable=2)
    assert run['data']['split']['source'] == 'seeded' and any(l.startswith('judge:') for l in run['left_out'])
    assert 'judge' not in run['stage_seconds'] and 'attributes' in r.stdout
    rep = run['report']
    assert rep['attributes'] is False and rep['model']['fd'] > 0 and -1 <= rep['model']['text_image_score'] <= 1
    cache = json.loads((tmp_path/'run'/'latents'/'captions.json').read_text())
    assert cache[0] and all(isinstance(c, str) for c in cache[0])              # the folder's captions, cached
    from text2img_diffusion.sampling import generate
    img = generate('a photo of a person', model=tmp_path/'run'/'pipeline', steps=2, seed=0, device='cpu', progress=False)[0]
    assert img.size == (32, 32)
