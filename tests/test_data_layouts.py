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
