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
"""
import argparse, json, os, socket, subprocess, sys, tempfile, threading, time
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
    return p.parse_args()

def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

class Server:
    "uvicorn text2img_diffusion.api:app in a subprocess on 127.0.0.1, configured by T2I_* variables"
    def __init__(self, env: dict, startup_timeout: float):
        self.port = free_port(); self.url = f'http://127.0.0.1:{self.port}'
        full = {**os.environ, 'OMP_NUM_THREADS': env.get('T2I_THREADS', '1'), 'HF_HUB_OFFLINE': '1', **env}
        self.proc = subprocess.Popen([sys.executable, '-m', 'uvicorn', 'text2img_diffusion.api:app', '--host', '127.0.0.1',
                                      '--port', str(self.port), '--log-level', 'warning'], env=full,
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

def main():
    a = parse()
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
