"""07_api: a real uvicorn server on 127.0.0.1 serving a saved tiny pipeline, exercised endpoint by endpoint, under
concurrency, overload and timeouts, with hostile uploads and abusive clients (abandoned requests, slow headers and
bodies), in a headless Chromium (skipped without /usr/bin/chromium) and under schemathesis (skipped when it is not
installed). Only loopback traffic; the servers run with `uvicorn_config`, as `t2i serve` does."""
import base64, io, os, pickle, re, socket, subprocess, sys, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx, numpy as np, pytest, torch
from PIL import Image

from text2img_diffusion.api import (API_CSP, SECURITY_HEADERS, Settings, create_app, latent_bytes, png_bytes,
                                    read_latent, uvicorn_config)
from text2img_diffusion.sampling import tiny_pipeline, seeded_generators

CHROMIUM, CHROMEDRIVER = '/usr/bin/chromium', '/usr/bin/chromedriver'
CHROMIUM_FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync', '--window-size=900,900']

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class Server:
    "uvicorn.Server on 127.0.0.1 in a background thread"
    def __init__(self, app):
        import uvicorn
        self.port = free_port()
        self.url = f'http://127.0.0.1:{self.port}'
        self.server = uvicorn.Server(uvicorn_config(app, '127.0.0.1', self.port, log_level='warning'))
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self):
        self.thread.start()
        t0 = time.time()
        while not self.server.started:
            assert self.thread.is_alive(), 'the server stopped during startup'
            assert time.time() - t0 < 120, 'the server did not start in 120 s'
            time.sleep(0.05)
        return self

    def __exit__(self, *a):
        self.server.should_exit = True
        self.thread.join(30)

# threads=1: one torch thread is ~10x faster than two on a shared, loaded 2-core machine
LIMITS = dict(threads=1, max_n=4, max_steps=4, max_upload_bytes=200_000, max_image_side=256, timeout=60)

@pytest.fixture(scope='module')
def pipe():
    n = torch.get_num_threads()
    torch.set_num_threads(1)              # for the reference images made in this process
    yield tiny_pipeline()
    torch.set_num_threads(n)

@pytest.fixture(scope='module')
def model_dir(tmp_path_factory, pipe):
    d = tmp_path_factory.mktemp('api')/'tiny'
    pipe.save_pretrained(d)
    return d

@pytest.fixture(scope='module')
def server(model_dir):
    # batch-invariant, so a batched image must be bit for bit its seed alone (test_concurrent_requests_...)
    with Server(create_app(Settings(model=str(model_dir), queue_size=32, batch_wait=0.05, batch_invariant='on', **LIMITS))) as s: yield s

@pytest.fixture(scope='module')
def client(server):
    with httpx.Client(base_url=server.url, timeout=60) as c: yield c

def png(im) -> np.ndarray: return np.asarray(Image.open(io.BytesIO(im)))

def test_health_and_info(client):
    r = client.get('/health')
    assert r.status_code == 200 and r.json()['status'] == 'ok'
    info = client.get('/info').json()
    assert info['ready'] and info['model']['image_size'] == 16 and info['model']['latent_shape'] == [4, 8, 8]
    assert info['schedulers'] == ['ddpm', 'ddim', 'dpm++', 'euler', 'euler_a', 'unipc']
    assert info['limits']['max_n'] == 4 and info['limits']['max_upload_bytes'] == 200_000
    spec = client.get('/openapi.json').json()
    assert {'/generate', '/edit', '/encode', '/decode', '/health', '/info'} <= set(spec['paths'])
    assert spec['components']['schemas']['GenerateRequest']['examples']
    assert client.get('/docs').status_code == 200

def test_generate_png_json_and_seeds(client, pipe):
    r = client.post('/generate', json={'prompt': 'a smiling woman', 'steps': 2, 'seed': 11, 'scheduler': 'euler_a'})
    assert r.status_code == 200 and r.headers['content-type'] == 'image/png' and r.headers['x-seed'] == '11'
    alone = pipe('a smiling woman', num_inference_steps=2, generator=seeded_generators([11]), scheduler='euler_a',
                 guidance_scale=3.0, output_type='pil').images[0]
    assert np.array_equal(png(r.content), np.asarray(alone))          # init auto = cvae: same as the library call
    r = client.post('/generate', json={'prompt': 'a smiling woman', 'steps': 2, 'seed': 10, 'n': 3, 'scheduler': 'euler_a'})
    j = r.json()
    assert r.status_code == 200 and j['seeds'] == [10, 11, 12] and j['media_type'] == 'image/png'
    assert np.array_equal(png(base64.b64decode(j['images'][1])), np.asarray(alone))
    r = client.post('/generate', json={'prompt': 'a man', 'steps': 2})          # random seed, reported
    assert 0 <= int(r.headers['x-seed']) < 2**32

@pytest.mark.parametrize('body,expect', [
    ({'prompt': ''}, 'prompt'), ({'prompt': 'x' * 301}, 'at most 300'), ({'prompt': 'a man', 'n': 5}, 'n: '),
    ({'prompt': 'a man', 'n': 0}, 'n: '), ({'prompt': 'a man', 'steps': 5}, 'steps: '),
    ({'prompt': 'a man', 'guidance_scale': 21}, 'guidance_scale'), ({'prompt': 'a man', 'guidance_scale': -1}, 'guidance_scale'),
    ({'prompt': 'a man', 'seed': 2**32}, 'seed: '), ({'prompt': 'a man', 'seed': -1}, 'seed: '),
    ({'prompt': 'a man', 'scheduler': 'plms'}, 'scheduler'), ({'prompt': 'a man', 'init': 'zeros'}, 'init'),
    ({'prompt': 'a man', 'strength': 0}, 'strength'), ({'prompt': 'a man', 'colour': 'red'}, 'colour'),
    ({'prompt': 'a man ' * 40}, 'at most 16'), ({'prompt': 'a man', 'negative_prompt': 'hat ' * 40}, 'negative_prompt'),
    ({'n': 1}, 'prompt: Field required'), (['a man'], 'valid dictionary')])
def test_generate_refuses_bad_input(client, body, expect):
    r = client.post('/generate', json=body)
    assert r.status_code == 422 and expect in r.json()['detail'], r.text

def test_generate_refuses_broken_json(client):
    r = client.post('/generate', content=b'{"prompt": "a ma', headers={'content-type': 'application/json'})
    assert r.status_code == 422, r.text
    r = client.post('/generate', content=b'\xff\xfe\x00', headers={'content-type': 'application/json'})
    assert r.status_code == 400 and 'parsing the body' in r.json()['detail'], r.text     # not UTF-8: FastAPI's 400

def test_encode_decode_round_trip(client, pipe):
    from text2img_diffusion.vae import encode_latents
    rgb = Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 30, 3), dtype=np.uint8))
    for fmt in ('npy', 'safetensors'):
        r = client.post('/encode', params={'format': fmt}, files={'file': ('face.png', png_bytes(rgb), 'image/png')})
        assert r.status_code == 200 and r.headers['x-latent-shape'] == '1,4,8,8', r.text
        z = read_latent(r.content)
        from text2img_diffusion.sampling import prepare_image
        with torch.no_grad(): ref = encode_latents(pipe.vae, prepare_image(rgb, 16)).numpy()
        np.testing.assert_allclose(z, ref, atol=1e-5)
        r = client.post('/decode', files={'file': (f'z.{fmt}', r.content, 'application/octet-stream')})
        assert r.status_code == 200 and r.headers['content-type'] == 'image/png' and png(r.content).shape == (16, 16, 3)
    r = client.post('/decode', files={'file': ('z.npy', latent_bytes(z[0]))})                       # [C, h, w] too
    assert r.status_code == 200
    r = client.post('/encode', params={'format': 'pt'}, files={'file': ('face.png', png_bytes(rgb))})
    assert r.status_code == 422 and 'format' in r.json()['detail']

def _torch_save(x) -> bytes:
    buf = io.BytesIO(); torch.save(x, buf); return buf.getvalue()

class Evil:
    def __reduce__(self): return (os.system, ('touch /tmp/t2i_api_pwned',))

@pytest.mark.parametrize('endpoint,payload,status', [
    ('/encode', b'this is not an image', 415),
    ('/encode', png_bytes(Image.new('RGB', (64, 64), 'red'))[:120], 422),                  # truncated PNG
    ('/encode', png_bytes(Image.new('RGB', (2000, 8), 'red')), 413),                        # small file, huge image
    ('/encode', os.urandom(250_000), 413),                                                  # over the body limit
    ('/encode', b'', 422),
    ('/decode', b'', 422),                                                                  # empty: the same answer
    ('/decode', latent_bytes(np.full((1, 4, 16, 16), 3e38, np.float32)), 422),              # finite but huge
    ('/decode', pickle.dumps(Evil()), 415),                                                 # a pickle: never loaded
    ('/decode', _torch_save(torch.zeros(1, 4, 8, 8)), 415),                                 # torch.save file
    ('/decode', latent_bytes(np.zeros((1, 3, 8, 8), np.float32)), 422),                     # wrong channels
    ('/decode', latent_bytes(np.zeros((2, 4, 8, 8), np.float32)), 422),                     # a batch
    ('/decode', latent_bytes(np.zeros((1, 4, 200, 8), np.float32)), 422),                   # taller than 256 pixels
    ('/decode', latent_bytes(np.zeros((1, 4, 8, 8), np.float32)).replace(b'(1, 4, 8, 8)', b'(1,4,999,99)'), 413),  # header bomb
    ('/decode', latent_bytes(np.full((4, 8, 8), np.inf, np.float32)), 422),
    ('/decode', latent_bytes(np.zeros((1, 4, 8, 8), np.float32))[:-7], 422),                # truncated .npy
    ('/decode', b'this is not a latent', 415)])
def test_hostile_uploads_are_refused(client, endpoint, payload, status):
    r = client.post(endpoint, files={'file': ('upload.bin', payload, 'application/octet-stream')})
    assert r.status_code == status and r.json()['detail'], (r.status_code, r.text)
    assert not Path('/tmp/t2i_api_pwned').exists()
    assert client.get('/health').status_code == 200

@pytest.mark.parametrize('files,status,says', [
    ({'file': ('f.png', b'')}, 422, 'the photo is empty'),
    ({'file': ('f.png', png_bytes(Image.new('RGB', (8, 8)))), 'mask': ('m.png', b'')}, 422, 'the mask is empty'),
    ({'file': ('f.png', b'this is not an image')}, 415, 'not a readable image'),
    ({'file': ('f.png', pickle.dumps(Evil()))}, 415, 'not a readable image'),
    ({'file': ('f.png', png_bytes(Image.new('RGB', (2000, 8))))}, 413, 'at most 256 pixels per side'),
    ({'file': ('f.png', os.urandom(250_000))}, 413, 'T2I_MAX_UPLOAD_BYTES'),
    ({'file': ('f.png', png_bytes(Image.new('RGB', (8, 8)))), 'mask': ('m.png', b'GIF89a')}, 415, 'the mask')])
def test_edit_refuses_what_encode_refuses(client, files, status, says):
    r = client.post('/edit', data={'prompt': 'a smiling man', 'steps': '2'}, files=files)
    assert r.status_code == status and says in r.json()['detail'], (r.status_code, r.text)

def test_edit_with_a_mask_keeps_the_rest(client):
    face = np.random.default_rng(2).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    form = {'prompt': 'a man with a hat', 'steps': '4', 'seed': '1', 'strength': '1'}
    top = np.zeros((16, 16), np.uint8); top[:8] = 255                           # redraw the top half only
    r = client.post('/edit', data=form, files={'file': ('f.png', png_bytes(Image.fromarray(face))),
                                               'mask': ('m.png', png_bytes(Image.fromarray(top)))})
    free = client.post('/edit', data=form, files={'file': ('f.png', png_bytes(Image.fromarray(face)))})
    assert r.status_code == free.status_code == 200 and r.headers['x-seed'] == '1', r.text
    masked, unmasked = png(r.content).astype(int), png(free.content).astype(int)
    assert np.abs(masked - unmasked)[12:].mean() > np.abs(masked - unmasked)[:4].mean()   # the kept half differs more
    assert client.post('/edit', data={**form, 'strength': '0'}, files={'file': ('f.png', png_bytes(Image.fromarray(face)))}).status_code == 422

def test_missing_file_and_chunked_body_over_limit(client):
    assert client.post('/decode').status_code == 422
    r = client.post('/encode', content=(b'x' * 50_000 for _ in range(6)),                   # chunked: no Content-Length
                    headers={'content-type': 'multipart/form-data; boundary=b'})
    assert r.status_code == 413, r.text

def test_concurrent_requests_are_batched_and_match_unbatched(client):
    before = client.get('/info').json()['batching']
    body = lambda s: {'prompt': ['a bald man', 'a smiling woman', 'a man with a hat'][s % 3], 'steps': 2, 'seed': s, 'init': 'noise'}
    with ThreadPoolExecutor(6) as ex: rs = list(ex.map(lambda s: client.post('/generate', json=body(s)), range(6)))
    assert all(r.status_code == 200 for r in rs)
    after = client.get('/info').json()['batching']
    assert after['images'] - before['images'] == 6 and after['batches'] - before['batches'] < 6, (before, after)
    for s in (0, 4):                                              # each image is what its seed gives alone
        alone = client.post('/generate', json=body(s))
        assert np.array_equal(png(alone.content), png(rs[s].content))

def test_overload_gives_503_with_retry_after_and_timeouts_504(model_dir):
    slow = tiny_pipeline()
    slow.unet.register_forward_pre_hook(lambda m, a: time.sleep(0.1))           # >= 0.2 s per 2-step image
    post = lambda c, i, steps=2: c.post('/generate', json={'prompt': 'a man', 'steps': steps, 'seed': i, 'init': 'noise', 'guidance_scale': 1})
    busy = Settings(model=str(model_dir), max_batch=1, queue_size=2, max_n=2, timeout=120, batch_wait=0, max_steps=8, threads=1)
    with Server(create_app(busy, model=slow)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        with ThreadPoolExecutor(12) as ex: rs = list(ex.map(lambda i: post(c, i), range(12)))   # 4x (1 running + 2 queued)
        codes = [r.status_code for r in rs]
        assert set(codes) == {200, 503} and codes.count(200) >= 3, codes
        refused = next(r for r in rs if r.status_code == 503)
        assert int(refused.headers['retry-after']) >= 1 and 'busy' in refused.json()['detail']
        assert c.get('/health').status_code == 200 and post(c, 0).status_code == 200
        assert c.get('/info').json()['batching']['rejected'] == codes.count(503)
    impatient = Settings(model=str(model_dir), max_batch=1, queue_size=8, max_n=2, timeout=0.5, batch_wait=0, max_steps=8, threads=1)
    with Server(create_app(impatient, model=slow)) as srv, httpx.Client(base_url=srv.url, timeout=120) as c:
        r = post(c, 0, steps=8)                                                  # 8 UNet calls: >= 0.8 s > 0.5 s
        assert r.status_code == 504 and 'T2I_TIMEOUT' in r.json()['detail'], r.text
        assert c.get('/health').status_code == 200
        t0 = time.time()
        while (h := c.get('/health').json())['queued'] + h['running'] and time.time() - t0 < 60: time.sleep(0.1)
        assert h['queued'] + h['running'] == 0 and c.get('/info').json()['batching']['timeouts'] == 1

def test_page_in_headless_chromium(server, client, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = _chromium(tmp_path)
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url + '/')
        assert driver.title == 'text2img_diffusion'
        prompt, steps = driver.find_element(By.ID, 'prompt'), driver.find_element(By.ID, 'steps')
        prompt.clear(); prompt.send_keys('a bald man with glasses')
        steps.clear(); steps.send_keys('2')
        driver.find_element(By.ID, 'seed').send_keys('3')
        driver.find_element(By.ID, 'go').click()
        loaded = "const i = document.querySelector('#images img.result'); return i && i.complete ? i.naturalWidth : 0"
        WebDriverWait(driver, 90).until(lambda d: d.execute_script(loaded) > 0)
        assert driver.execute_script(loaded) == 16
        assert 'seed 3' in driver.find_element(By.ID, 'images').text
        api = client.post('/generate', json={'prompt': 'a bald man with glasses', 'steps': 2, 'seed': 3})
        assert np.array_equal(_page_pixels(driver, '#images img.result'), png(api.content))   # the page's defaults = the API's
        assert not driver.find_element(By.ID, 'error').is_displayed()
        photo = tmp_path/'face.png'
        Image.fromarray(np.random.default_rng(1).integers(0, 255, (24, 20, 3), dtype=np.uint8)).save(photo)
        driver.find_element(By.ID, 'photo').send_keys(str(photo))                   # the edit panel
        edit_prompt, strength = driver.find_element(By.ID, 'edit_prompt'), driver.find_element(By.ID, 'strength')
        edit_prompt.clear(); edit_prompt.send_keys('a smiling man')
        strength.clear(); strength.send_keys('0.5')
        driver.find_element(By.ID, 'edit_steps').clear(); driver.find_element(By.ID, 'edit_steps').send_keys('2')
        driver.find_element(By.ID, 'edit_seed').send_keys('4')
        driver.find_element(By.ID, 'edit_go').click()
        edited = "const i = document.querySelector('#edit_result img.edited'); return i && i.complete ? i.naturalWidth : 0"
        WebDriverWait(driver, 90).until(lambda d: d.execute_script(edited) > 0)
        assert driver.execute_script("return document.querySelector('#edit_result img.original').naturalWidth") == 20
        assert 'original' in driver.find_element(By.ID, 'edit_result').text and 'seed 4' in driver.find_element(By.ID, 'edit_result').text
        api = client.post('/edit', data={'prompt': 'a smiling man', 'strength': '0.5', 'steps': '2', 'seed': '4'},
                          files={'file': ('face.png', photo.read_bytes(), 'image/png')})
        assert api.status_code == 200 and np.array_equal(_page_pixels(driver, '#edit_result img.edited'), png(api.content))
        assert not driver.find_element(By.ID, 'error').is_displayed()
        driver.execute_script("document.getElementById('prompt').value = 'a man '.repeat(40)")    # too many tokens
        driver.find_element(By.ID, 'go').click()
        WebDriverWait(driver, 60).until(lambda d: d.find_element(By.ID, 'error').is_displayed())
        assert 'at most 16' in driver.find_element(By.ID, 'error').text
        assert not _csp_errors(driver), _csp_errors(driver)                         # the page satisfies its CSP
    finally:
        driver.quit()

def _page_pixels(driver, selector: str) -> np.ndarray:
    "The RGB pixels of the image `selector` on the page, read back through a canvas"
    rgba = driver.execute_script("""const i = document.querySelector(arguments[0]), c = document.createElement('canvas');
        c.width = i.naturalWidth; c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);
        return [c.width, c.height, Array.from(g.getImageData(0, 0, c.width, c.height).data)];""", selector)
    w, h, data = rgba
    return np.array(data, np.uint8).reshape(h, w, 4)[..., :3]

def test_schemathesis_finds_no_server_errors_nor_undocumented_statuses(server):
    schemathesis = pytest.importorskip('schemathesis', reason='schemathesis is not installed (pip install schemathesis)')
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    schema = schemathesis.openapi.from_url(server.url + '/openapi.json')
    failures, undocumented = [], []
    for result in schema.get_all_operations():
        op = result.ok()
        documented = set(op.definition.raw['responses'])
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @settings(max_examples=int(os.environ.get('T2I_SCHEMATHESIS_EXAMPLES', 8)), deadline=None, database=None,
                      derandomize=True, suppress_health_check=list(HealthCheck))
            @given(case=op.as_strategy(generation_mode=mode))
            def check(case):
                r = case.call(base_url=server.url, timeout=60)
                if r.status_code >= 500 and r.status_code != 503: failures.append((op.method, op.path, r.status_code, r.text[:300]))
                if str(r.status_code) not in documented: undocumented.append((op.method, op.path, r.status_code, r.text[:200]))
            try: check()
            except Unsatisfiable: pass          # e.g. no invalid input exists for GET /health
    assert not failures, failures[:5]
    assert not undocumented, undocumented[:5]

def _abandon(url: str, body: bytes):
    "Send a whole POST /generate on a raw socket, then close it at once, as a client that gave up"
    host, port = url.rsplit('/', 1)[-1].split(':')
    with socket.create_connection((host, int(port))) as sk:
        sk.sendall(b'POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s'
                   % (len(body), body))

def test_abandoned_requests_are_cancelled_and_counted(model_dir):
    slow = tiny_pipeline()
    slow.unet.register_forward_pre_hook(lambda m, a: time.sleep(0.05))           # ~0.2 s per 4-step image
    s = Settings(model=str(model_dir), max_batch=1, queue_size=32, max_n=2, batch_wait=0, max_steps=8, threads=1)
    body = b'{"prompt": "a man", "steps": 4, "init": "noise", "guidance_scale": 1}'
    with Server(create_app(s, model=slow)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        t0 = time.time(); assert c.post('/generate', content=body, headers={'content-type': 'application/json'}).status_code == 200
        alone = time.time() - t0
        for _ in range(10): _abandon(srv.url, body)
        time.sleep(0.3)
        t0 = time.time(); r = c.post('/generate', content=body, headers={'content-type': 'application/json'})
        waited = time.time() - t0
        assert r.status_code == 200
        b = c.get('/info').json()['batching']
        h = c.get('/health').json()
    assert b['cancelled'] >= 8 and h['cancelled'] == b['cancelled'], b           # at most one or two ran
    assert b['images'] <= 2 + 2 + (10 - b['cancelled']), b
    assert waited < alone * 4 + 1, (waited, alone)                                # not ten images' time

def test_a_generation_whose_client_leaves_stops_between_steps(model_dir):
    slow, unet_calls = tiny_pipeline(), []
    slow.unet.register_forward_pre_hook(lambda m, a: unet_calls.append(1) or time.sleep(0.05))   # a call per step
    s = Settings(model=str(model_dir), max_batch=1, max_steps=50, batch_wait=0, threads=1)
    body = b'{"prompt": "a man", "steps": 50, "init": "noise", "guidance_scale": 1}'
    with Server(create_app(s, model=slow)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        before = c.get('/info').json()['batching']
        with socket.create_connection(('127.0.0.1', srv.port)) as sk:
            sk.sendall(b'POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                       b'Content-Length: %d\r\n\r\n%s' % (len(body), body))
            t0 = time.time()
            while c.get('/health').json()['running'] == 0: assert time.time() - t0 < 30; time.sleep(0.02)
            time.sleep(0.3)                                                      # a few steps run
            at_close = len(unet_calls)
        t0 = time.time()
        while c.get('/health').json()['running']: assert time.time() - t0 < 30, 'the batch did not stop'; time.sleep(0.02)
        ran_after = len(unet_calls) - at_close
        after = c.get('/info').json()['batching']
    assert after['aborted'] - before['aborted'] == 1 and after['images'] == before['images'], (before, after)
    assert 0 < at_close < 40 and ran_after <= 3, (at_close, ran_after)          # stopped within a step or two

def test_encode_decode_get_503_past_the_queue(model_dir):
    slow = tiny_pipeline()
    slow.vae.decoder.register_forward_pre_hook(lambda m, a: time.sleep(0.3))
    s = Settings(model=str(model_dir), queue_size=2, max_n=2, threads=1, max_image_side=256)
    z = latent_bytes(np.random.default_rng(0).standard_normal((1, 4, 32, 32)).astype(np.float32))
    with Server(create_app(s, model=slow)) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
        post = lambda i: c.post('/decode', files={'file': ('z.npy', z)})
        with ThreadPoolExecutor(8) as ex: rs = list(ex.map(post, range(8)))
        codes = [r.status_code for r in rs]
        assert set(codes) == {200, 503} and codes.count(200) >= 2, codes
        refused = next(r for r in rs if r.status_code == 503)
        assert int(refused.headers['retry-after']) >= 1 and 'busy' in refused.json()['detail']
        b = c.get('/info').json()['batching']
        assert b['rejected'] == codes.count(503) and b['calls'] == codes.count(200), b

def test_slow_clients_are_cut_off_and_connections_capped(model_dir):
    s = Settings(model=str(model_dir), header_timeout=0.5, body_timeout=0.5, threads=1, max_connections=3)
    with Server(create_app(s)) as srv:
        for data in (b'GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: 1', b'',             # headers never end; nothing sent
                     b'POST /decode HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n'
                     b'Content-Length: 1000\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"\r\n\r\nxxxx',
                     b'POST /generate HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n'):
            with socket.create_connection(('127.0.0.1', srv.port)) as sk:
                t0 = time.time(); sk.sendall(data); sk.settimeout(10); got = b''
                while chunk := sk.recv(4096): got += chunk
                held = time.time() - t0
            assert got.startswith(b'HTTP/1.1 408') and held < 3, (data, held, got)
        assert httpx.get(srv.url + '/health').status_code == 200
        idle = [socket.create_connection(('127.0.0.1', srv.port)) for _ in range(3)]        # the cap: 3 connections
        r = httpx.get(srv.url + '/health')
        for sk in idle: sk.close()
        assert r.status_code == 503 and 'T2I_MAX_CONNECTIONS' in r.json()['detail'] and r.headers['retry-after'] == '1'
        assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items()) and r.headers['content-security-policy'] == API_CSP
        time.sleep(0.2)
        assert httpx.get(srv.url + '/health').status_code == 200

def test_security_headers_on_every_answer(client):
    answers = [client.get('/'), client.get('/health'), client.get('/openapi.json'), client.get('/nowhere'),
               client.post('/generate', json={'prompt': 'a man', 'steps': 2}), client.post('/generate', json={}),
               client.post('/encode', content=b'x' * 300_000, headers={'content-type': 'application/octet-stream'})]
    assert [r.status_code for r in answers] == [200, 200, 200, 404, 200, 422, 413]
    for r in answers:
        assert all(r.headers.get(k) == v for k, v in SECURITY_HEADERS.items()), (r.url, r.headers)
        assert "frame-ancestors 'none'" in r.headers['content-security-policy'], r.headers
    assert answers[1].headers['content-security-policy'] == API_CSP
    assert "script-src 'self' 'sha256-" in answers[0].headers['content-security-policy']
    assert 'server' not in answers[1].headers                                    # no server banner

def _chromium(tmp_path, offline: bool = False):
    "A headless Chromium (skips without one); `offline`: every host name but 127.0.0.1 fails to resolve"
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        pytest.skip(f'{CHROMIUM} or {CHROMEDRIVER} missing: apt-get install -y chromium chromium-driver')
    webdriver = pytest.importorskip('selenium.webdriver', reason='selenium is not installed (pip install selenium)')
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    opts.set_capability('goog:loggingPrefs', {'browser': 'ALL'})
    flags = CHROMIUM_FLAGS + [f'--user-data-dir={tmp_path/"profile"}']
    if offline: flags += ['--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', '--proxy-server=127.0.0.1:9',
                          '--proxy-bypass-list=127.0.0.1']
    for a in flags: opts.add_argument(a)
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)

def _csp_errors(driver) -> list:
    "The browser's CSP violations, but for blocked loads from other hosts (ReDoc's logo: the CSP doing its job)"
    msgs = [e['message'] for e in driver.get_log('browser')]
    return [m for m in msgs if ('Content Security Policy' in m or 'Refused to' in m)
            and not re.search(r"Loading the \w+ 'https?://(?!127\.0\.0\.1)", m)]

def test_docs_render_offline_in_headless_chromium(server, tmp_path):
    from selenium.webdriver.support.ui import WebDriverWait
    driver = _chromium(tmp_path, offline=True)
    try:
        driver.set_page_load_timeout(60)
        driver.get(server.url + '/docs')
        ops = "return document.querySelectorAll('.swagger-ui .opblock').length"
        WebDriverWait(driver, 60).until(lambda d: d.execute_script(ops) >= 5)
        assert 'text2img_diffusion' in driver.execute_script("return document.querySelector('.swagger-ui .title').textContent")
        urls = driver.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        assert urls and all(u.startswith(server.url) for u in urls), urls
        assert not _csp_errors(driver), _csp_errors(driver)
        driver.get(server.url + '/redoc')
        WebDriverWait(driver, 60).until(lambda d: 'POST /generate'.split()[1] in d.page_source
                                        and d.execute_script("return document.querySelectorAll('h2').length") >= 3)
        assert not _csp_errors(driver), _csp_errors(driver)
    finally:
        driver.quit()

@pytest.mark.slow
def test_uvicorn_import_string_serves_from_env_and_serve_fails_clearly_without_model(model_dir, tmp_path):
    port = free_port()
    env = {**os.environ, 'T2I_MODEL': str(model_dir), 'T2I_MAX_STEPS': '3', 'OMP_NUM_THREADS': '1', 'HF_HUB_OFFLINE': '1'}
    p = subprocess.Popen([sys.executable, '-m', 'uvicorn', 'text2img_diffusion.api:app', '--host', '127.0.0.1', '--port', str(port)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        t0 = time.time()
        while True:
            assert p.poll() is None, p.stderr.read().decode()[-2000:]
            try:
                if httpx.get(f'http://127.0.0.1:{port}/health', timeout=2).status_code == 200: break
            except httpx.TransportError: pass
            assert time.time() - t0 < 180, 'no healthy server after 180 s'
            time.sleep(0.3)
        info = httpx.get(f'http://127.0.0.1:{port}/info').json()
        assert info['limits']['max_steps'] == 3 and info['model_path'] == str(model_dir)
        assert 'Generate' in httpx.get(f'http://127.0.0.1:{port}/').text
    finally:
        p.terminate(); p.wait(30)
    serve = f'from text2img_diffusion.api import serve; serve(port={port}, model={str(tmp_path/"nothing")!r})'   # `t2i serve`
    bad = subprocess.run([sys.executable, '-c', serve], env=env, capture_output=True, text=True, timeout=180)
    assert bad.returncode != 0 and 'Set T2I_MODEL' in bad.stderr and 'no model_index.json' in bad.stderr, bad.stderr[-2000:]
