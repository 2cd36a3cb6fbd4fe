"""Load test of the 07_api server (loopback only, bounded, stops by itself).

Starts `uvicorn text2img_diffusion.api:app` on 127.0.0.1 twice — dynamic batching on (T2I_MAX_BATCH=8) and off
(T2I_MAX_BATCH=1) — and drives each with 1 and 8 concurrent closed-loop clients (each sends /generate, waits for the
PNG, sends the next) for --duration seconds. Prints images/s and p50/p95 latency (goal: >= 3x images/s at 8 clients
with batching than without). Then it overloads the batching server with 4x its capacity (max_batch + queue_size
images in flight) and shows that the excess gets 503 with Retry-After, nothing gets a 5xx other than 503, and the
server still answers /health and /generate afterwards.

    python benchmarks/api_load.py                          # a tiny untrained pipeline, 4 steps, CPU
    python benchmarks/api_load.py --model runs/x/pipeline --steps 20 --device cuda --duration 20

Prints one line per measurement and a JSON summary at the end (also written to --out if given).

    python benchmarks/api_load.py --probes                 # issue 21's abuse probes, bundled model, `t2i serve`

--probes instead serves the bundled model (or --model) with `t2i serve` (so with its read deadlines) and replays the
four probes of issue 21, printing each figure beside the one measured before (in brackets) and the goal:
  1. 50 POST /generate {"prompt": "a smiling woman", "n": 1, "steps": 50} whose clients close the socket at once,
     then a normal request 0.3 s later: its wait (before: 32.3 s; goal: <= one batch's time);
  2. 12 concurrent /decode of the largest allowed latent, and a /generate once they queue: the codes, its wait
     against its unloaded latency (before: 12 x 200, the generate waited 27.8 s; goal: 503 for the excess, the
     generate <= 2 x unloaded);
  3. 100 connections trickling headers, 100 trickling a body, a chunked body with no last chunk, a Content-Length
     of 1000 with 24 bytes sent: how long each is held (before: >= 30 s, no answer in 10 s; goal: <= the timeout);
  4. a [1,4,16,16] float32 .npy of 3e38 to /decode (before: 200, an all-black PNG; goal: 422).
"""
import argparse, io, json, os, socket, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx, numpy as np

def parse():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--model', default=None, help='saved pipeline folder (default: a tiny untrained pipeline)')
    p.add_argument('--device', default='cpu')
    p.add_argument('--steps', type=int, default=4)
    p.add_argument('--scheduler', default='dpm++')
    p.add_argument('--init', default='noise')
    p.add_argument('--clients', default='1,8', help='comma list of concurrent clients')
    p.add_argument('--duration', type=float, default=6.0, help='seconds measured per scenario (after a warm-up)')
    p.add_argument('--warmup', type=float, default=1.5)
    p.add_argument('--max_batch', type=int, default=8)
    p.add_argument('--queue_size', type=int, default=16)
    p.add_argument('--threads', type=int, default=1, help='torch threads of the server (T2I_THREADS)')
    p.add_argument('--overload_seconds', type=float, default=5.0)
    p.add_argument('--startup_timeout', type=float, default=240)
    p.add_argument('--batch_invariant', default='off', choices=['auto', 'on', 'off'],
                   help='T2I_BATCH_INVARIANT: on makes a batched image bit for bit its seed alone (the server default: off; auto: on for the CPU)')
    p.add_argument('--out', default=None, help='write the JSON summary here')
    p.add_argument('--probes', action='store_true', help="issue 21's abuse probes instead of the load test")
    p.add_argument('--header_timeout', type=float, default=10.0, help='with --probes: T2I_HEADER_TIMEOUT')
    p.add_argument('--body_timeout', type=float, default=30.0, help='with --probes: T2I_BODY_TIMEOUT')
    p.add_argument('--trickle', type=int, default=100, help='with --probes: connections trickling headers (and a body)')
    return p.parse_args()

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class Server:
    "uvicorn text2img_diffusion.api:app in a subprocess on 127.0.0.1, configured by T2I_* variables"
    def __init__(self, env: dict, startup_timeout: float, t2i_serve: bool = False):
        self.port = free_port(); self.url = f'http://127.0.0.1:{self.port}'
        full = {**os.environ, 'OMP_NUM_THREADS': env.get('T2I_THREADS', '1'), 'HF_HUB_OFFLINE': '1', **env}
        cmd = ([sys.executable, '-c', 'import sys; from text2img_diffusion.cli import main; sys.exit(main())', 'serve',
                '--log_level', 'warning']
               if t2i_serve else
               [sys.executable, '-m', 'uvicorn', 'text2img_diffusion.api:app', '--log-level', 'warning'])
        self.proc = subprocess.Popen(cmd + ['--host', '127.0.0.1', '--port', str(self.port)], env=full,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        t0 = time.time()
        while True:
            if self.proc.poll() is not None: raise RuntimeError('server exited: ' + self.proc.stderr.read().decode()[-2000:])
            try:
                if httpx.get(self.url + '/health', timeout=2).status_code == 200: break
            except httpx.TransportError: pass
            if time.time() - t0 > startup_timeout: self.close(); raise RuntimeError(f'server not healthy after {startup_timeout} s')
            time.sleep(0.3)

    def close(self):
        self.proc.terminate()
        try: self.proc.wait(20)
        except subprocess.TimeoutExpired: self.proc.kill(); self.proc.wait()

def closed_loop(url: str, body: dict, clients: int, duration: float, warmup: float, timeout: float = 120) -> dict:
    "`clients` threads each sending /generate back to back; latencies of the requests that started after the warm-up"
    start, stop = time.perf_counter() + warmup, time.perf_counter() + warmup + duration
    lat, codes, lock = [], {}, threading.Lock()
    def client(i):
        with httpx.Client(base_url=url, timeout=timeout) as c:
            k = 0
            while (t0 := time.perf_counter()) < stop:
                r = c.post('/generate', json={**body, 'seed': i * 100_000 + k}); k += 1
                t1 = time.perf_counter()
                if t0 >= start:
                    with lock:
                        codes[r.status_code] = codes.get(r.status_code, 0) + 1
                        if r.status_code == 200: lat.append(t1 - t0)
    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    elapsed = time.perf_counter() - start          # the last requests finish after `stop`: count their time too
    lat = np.array(lat)
    return dict(clients=clients, images=len(lat), seconds=round(elapsed, 2), images_per_s=round(len(lat) / elapsed, 2),
                p50_ms=round(float(np.percentile(lat, 50)) * 1000, 1) if len(lat) else None,
                p95_ms=round(float(np.percentile(lat, 95)) * 1000, 1) if len(lat) else None, codes=codes)

def overload(url: str, body: dict, clients: int, seconds: float) -> dict:
    "`clients` closed-loop clients at once; counts status codes, Retry-After values and transport errors"
    stop = time.perf_counter() + seconds
    codes, retry, errors, lock = {}, set(), [], threading.Lock()
    def client(i):
        with httpx.Client(base_url=url, timeout=120) as c:
            while time.perf_counter() < stop:
                try: r = c.post('/generate', json={**body, 'seed': i})
                except httpx.TransportError as e:
                    with lock: errors.append(type(e).__name__)
                    continue
                with lock:
                    codes[r.status_code] = codes.get(r.status_code, 0) + 1
                    if r.status_code == 503: retry.add(r.headers.get('retry-after'))
                if r.status_code == 503: time.sleep(0.05)
    ts = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for t in ts: t.start()
    for t in ts: t.join()
    return dict(clients=clients, codes=codes, retry_after=sorted(retry, key=str), transport_errors=len(errors))

def raw(url: str, data: bytes, close: bool = False, wait: float = 60.0) -> tuple:
    "Send `data` on a new socket: closed at once if `close`, else (seconds until the server closed it, what it sent)"
    host, port = url.rsplit('/', 1)[-1].split(':')
    sk = socket.create_connection((host, int(port)))
    t0 = time.perf_counter(); sk.sendall(data)
    if close: sk.close(); return 0.0, b''
    sk.settimeout(wait); got = b''
    try:
        while chunk := sk.recv(4096): got += chunk
    except (socket.timeout, ConnectionResetError): pass
    sk.close()
    return time.perf_counter() - t0, got

def trickle(url: str, head: bytes, wait: float = 60.0) -> float:
    "Send `head`, then one byte every 0.5 s: seconds until the server closes the connection (`wait` at most)"
    host, port = url.rsplit('/', 1)[-1].split(':')
    sk = socket.create_connection((host, int(port))); sk.settimeout(0.5)
    t0 = time.perf_counter(); sk.sendall(head)
    try:
        while time.perf_counter() - t0 < wait:
            sk.sendall(b'x')
            try:
                sk.recv(4096); break                           # anything back (a 408, or the close) ends the hold
            except socket.timeout: pass
    except OSError: pass
    sk.close()
    return time.perf_counter() - t0

def timed(f, *a, **kw):
    t0 = time.perf_counter(); r = f(*a, **kw); return r, time.perf_counter() - t0

def probes(a):
    "Issue 21's four probes against `t2i serve`; prints each figure beside the issue's number and the goal"
    env = dict(T2I_DEVICE=a.device, T2I_THREADS=str(a.threads), T2I_HEADER_TIMEOUT=str(a.header_timeout),
               T2I_BODY_TIMEOUT=str(a.body_timeout), T2I_MAX_BATCH=str(a.max_batch), T2I_MAX_STEPS='50')
    if a.model: env['T2I_MODEL'] = a.model
    srv = Server(env, a.startup_timeout, t2i_serve=True)
    res, c = {}, httpx.Client(base_url=srv.url, timeout=300)
    def show(name, now, before, goal): print(f"{name:58s} {now:>22s}   [before: {before}]   goal: {goal}", flush=True)
    try:
        info = c.get('/info').json()
        print(f"model {info['model_path']} | image {info['model']['image_size']} px | device {a.device} | "
              f"server torch threads {a.threads} | {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
        body = {'prompt': 'a smiling woman', 'n': 1, 'steps': 50}
        _, alone = timed(c.post, '/generate', json=body)
        batch_s = alone * a.max_batch            # on CPU a batch costs about its images one by one: an upper bound
        raw_req = json.dumps(body).encode()
        req = (b'POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s'
               % (len(raw_req), raw_req))
        before = c.get('/info').json()['batching']
        for _ in range(50): raw(srv.url, req, close=True)
        time.sleep(0.3)
        r, waited = timed(c.post, '/generate', json=body)
        after = c.get('/info').json()['batching']
        ran = after['images'] - before['images'] - 1
        res['abandoned'] = dict(wait_s=round(waited, 2), status=r.status_code, unloaded_s=round(alone, 2),
                                batch_estimate_s=round(batch_s, 2), ran=ran,
                                cancelled=after['cancelled'] - before['cancelled'], aborted=after['aborted'])
        show('1. normal request after 50 abandoned (s)', f"{waited:.1f} s ({r.status_code})", '32.3 s',
             f"<= one batch (<= {a.max_batch} x unloaded = {batch_s:.1f} s here)")
        print(f"   {ran} abandoned images ran, {res['abandoned']['cancelled']} cancelled unrun; unloaded {alone:.2f} s")

        f = info['model']['vae_downsample']; side = info['limits']['max_image_side'] // f
        buf = io.BytesIO()
        np.save(buf, np.random.default_rng(0).standard_normal((1, 4, side, side)).astype(np.float32))
        z = buf.getvalue()
        gen = {'prompt': 'a smiling woman', 'n': 1, 'steps': 20}
        _, gen_alone = timed(c.post, '/generate', json=gen)
        est = c.get('/info').json()['batching']                  # the server's cost model, before it saw a big decode
        _, dec_alone = timed(c.post, '/decode', files={'file': ('z.npy', z)})
        cost = lambda kind, units: est['seconds_fixed'].get(kind, 0) + units * est['seconds_per'][kind]
        res['estimates'] = dict(generate_20_s=round(cost('image_step', 20), 3), generate_20_measured_s=round(gen_alone, 3),
                                decode_s=round(cost('decode', side * side), 3), decode_measured_s=round(dec_alone, 3))
        print(f"   cost estimates: 20-step image {res['estimates']['generate_20_s']} s (measured {gen_alone:.2f} s), "
              f"/decode [1,4,{side},{side}] {res['estimates']['decode_s']} s (measured {dec_alone:.2f} s)")
        depth = []
        retry = set()
        def flood(i):
            r, t = timed(httpx.post, srv.url + '/decode', files={'file': ('z.npy', z)}, timeout=300)
            if r.status_code == 503: retry.add(r.headers.get('retry-after'))
            return r.status_code, t
        with ThreadPoolExecutor(13) as ex:
            futs = [ex.submit(flood, i) for i in range(12)]
            t0 = time.perf_counter()                       # send the /generate once the decodes are in the queue
            while (h := c.get('/health').json())['queued'] < 3 and time.perf_counter() - t0 < 20: time.sleep(0.05)
            depth.append(h)
            g, g_wait = timed(c.post, '/generate', json=gen)
            codes = [fu.result() for fu in futs]
        ok = [t for s, t in codes if s == 200]
        res['decode_flood'] = dict(codes={s: [x for x, _ in codes].count(s) for s in {x for x, _ in codes}},
                                   generate_wait_s=round(g_wait, 2), generate_status=g.status_code,
                                   generate_unloaded_s=round(gen_alone, 2), decode_unloaded_s=round(dec_alone, 2),
                                   last_200_s=round(max(ok), 2) if ok else None, health_during=depth[0],
                                   latent=[1, 4, side, side], retry_after=sorted(retry, key=int),
                                   preempted=c.get('/info').json()['batching'].get('preempted'))
        show(f'2. 12 x /decode [1,4,{side},{side}]: codes', str(res['decode_flood']['codes']), '12 x 200, no 503',
             '503 for the excess')
        show('   a /generate sent once they queued waited (s)', f"{g_wait:.1f} s", '27.8 s', f"<= 2 x {gen_alone:.2f} s unloaded")
        print(f"   one /decode alone {dec_alone:.2f} s; the last 200 after {res['decode_flood']['last_200_s']} s "
              f"[before: 28.7 s]; /health during: queued {depth[0]['queued']} [before: 0]; Retry-After of the 503s "
              f"{res['decode_flood']['retry_after']}; images run inside a decode (preempted) "
              f"{res['decode_flood']['preempted']}")

        heads = b'GET /health HTTP/1.1\r\nHost: x\r\n'
        bodyh = (b'POST /decode HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n'
                 b'Content-Length: 100000\r\n\r\n--b\r\nContent-Disposition: form-data; name="file"\r\n\r\n')
        wait = max(a.header_timeout, a.body_timeout) + 20
        with ThreadPoolExecutor(2 * a.trickle) as ex:
            hs = list(ex.map(lambda i: trickle(srv.url, heads if i < a.trickle else bodyh, wait), range(2 * a.trickle)))
        chunked, got_c = raw(srv.url, b'POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                                      b'Transfer-Encoding: chunked\r\n\r\n5\r\n{"pro\r\n', wait=wait)
        short, got_s = raw(srv.url, b'POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n'
                                    b'Content-Length: 1000\r\n\r\n' + b'{"prompt": "a man", "n":1', wait=wait)
        res['slow_clients'] = dict(headers_held_max_s=round(max(hs[:a.trickle]), 2),
                                   body_held_max_s=round(max(hs[a.trickle:]), 2),
                                   chunked_answer=(got_c[:12].decode(errors='replace'), round(chunked, 2)),
                                   short_body_answer=(got_s[:12].decode(errors='replace'), round(short, 2)))
        show(f'3. {a.trickle} trickling headers: held at most', f"{max(hs[:a.trickle]):.1f} s", '>= 30 s',
             f"<= {a.header_timeout:g} s (T2I_HEADER_TIMEOUT)")
        show(f'   {a.trickle} trickling a body: held at most', f"{max(hs[a.trickle:]):.1f} s", '>= 30 s',
             f"<= {a.body_timeout:g} s + {a.header_timeout:g} s")
        show('   chunked body, no last chunk: answer', f"{got_c[9:12].decode() or 'none'} in {chunked:.1f} s",
             'none in 10 s', f"408 <= {a.body_timeout:g} s")
        show('   Content-Length 1000, 24 bytes sent: answer', f"{got_s[9:12].decode() or 'none'} in {short:.1f} s",
             'none in 10 s', f"408 <= {a.body_timeout:g} s")

        buf = io.BytesIO(); np.save(buf, np.full((1, 4, 16, 16), 3e38, np.float32))
        r = c.post('/decode', files={'file': ('z.npy', buf.getvalue())})
        res['huge_latent'] = dict(status=r.status_code, detail=r.json().get('detail') if r.status_code != 200 else None)
        show('4. /decode of a [1,4,16,16] .npy of 3e38', str(r.status_code), '200, an all-black PNG', '422')
        print(f"   {res['huge_latent']['detail']}")
        res['server_alive'] = srv.proc.poll() is None and c.get('/health').status_code == 200
        print(f"server alive and healthy afterwards: {res['server_alive']}")
    finally:
        c.close(); srv.close()
    print(json.dumps(res))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))

def main():
    a = parse()
    if a.probes: return probes(a)
    tmp = tempfile.TemporaryDirectory()
    model = a.model
    if model is None:
        from text2img_diffusion.sampling import tiny_pipeline
        model = f'{tmp.name}/tiny'; tiny_pipeline().save_pretrained(model)
    body = dict(prompt='a smiling woman with blond hair', steps=a.steps, scheduler=a.scheduler, init=a.init)
    clients = [int(c) for c in a.clients.split(',')]
    base = dict(T2I_MODEL=str(model), T2I_DEVICE=a.device, T2I_THREADS=str(a.threads), T2I_QUEUE_SIZE=str(a.queue_size),
                T2I_MAX_STEPS=str(max(50, a.steps)), T2I_TIMEOUT='120', T2I_BATCH_INVARIANT=a.batch_invariant)
    print(f"model {model} | device {a.device} | steps {a.steps} | {a.scheduler} | init {a.init} | server torch threads {a.threads} | batch invariant {a.batch_invariant} "
          f"| {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}", flush=True)
    res = dict(config=vars(a), runs=[])
    for batching in (True, False):
        srv = Server({**base, 'T2I_MAX_BATCH': str(a.max_batch if batching else 1)}, a.startup_timeout)
        try:
            for n in clients:
                r = dict(batching=batching, **closed_loop(srv.url, body, n, a.duration, a.warmup))
                res['runs'].append(r)
                print(f"batching {'on ' if batching else 'off'} | {n:2d} clients | {r['images_per_s']:7.2f} images/s | "
                      f"p50 {r['p50_ms']} ms | p95 {r['p95_ms']} ms | {r['images']} images | codes {r['codes']}", flush=True)
            if batching:
                info = httpx.get(srv.url + '/info').json()['batching']
                res['batches'] = info
                print(f"  server counters: {info['images']} images in {info['batches']} batches "
                      f"({info['images'] / max(info['batches'], 1):.2f} images per pipeline call)", flush=True)
                cap = a.max_batch + a.queue_size
                o = overload(srv.url, body, 4 * cap, a.overload_seconds)
                h = httpx.get(srv.url + '/health', timeout=30)
                after = httpx.post(srv.url + '/generate', json={**body, 'seed': 1}, timeout=120)
                o.update(health_after=h.status_code, generate_after=after.status_code, server_alive=srv.proc.poll() is None)
                res['overload'] = o
                print(f"overload: {4 * cap} clients = 4x capacity ({a.max_batch} running + {a.queue_size} queued) for "
                      f"{a.overload_seconds:g} s | codes {o['codes']} | Retry-After {o['retry_after']} | transport errors "
                      f"{o['transport_errors']} | afterwards /health {h.status_code}, /generate {after.status_code}", flush=True)
        finally: srv.close()
    rate = {(r['batching'], r['clients']): r['images_per_s'] for r in res['runs']}
    top = max(clients)
    if (True, top) in rate and (False, top) in rate and rate[(False, top)] > 0:
        res['speedup'] = round(rate[(True, top)] / rate[(False, top)], 2)
        print(f"batching speed-up at {top} clients: {res['speedup']}x (goal >= 3x)")
    o = res.get('overload', {})
    bad = {c: k for c, k in o.get('codes', {}).items() if c >= 500 and c != 503}
    res['overload_ok'] = bool(o) and 503 in o['codes'] and not bad and o['health_after'] == 200 and o['generate_after'] == 200 and o['server_alive']
    print(f"overload handled cleanly: {res['overload_ok']}")
    print(json.dumps(res))
    if a.out: Path(a.out).write_text(json.dumps(res, indent=1))
    tmp.cleanup()

if __name__ == '__main__': main()
