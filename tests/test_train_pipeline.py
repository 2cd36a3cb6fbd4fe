"""10_train_pipeline: `t2i train --preset tiny` runs every stage (the notebook ones through papermill) end to end;
the runner SIGKILLed in the middle of a stage leaves no job behind, and running the same command again finishes
without redoing the stages that were done."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

RUNNER = "import sys; from text2img_diffusion.cli import main; sys.exit(main(sys.argv[1:]))"

def _start(out, *extra):
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1', 'MPLBACKEND': 'Agg'}
    return subprocess.Popen([sys.executable, '-c', RUNNER, 'train', '--preset', 'tiny', '--out', str(out), *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)

def _records(out):
    return {p.stem: json.loads(p.read_text()) for p in (Path(out)/'record').glob('*.json') if p.stem != 'plan' and not p.name.startswith('.')}

def _jobs_of(out):
    "Processes whose command line names this run's folder (the runner's papermill and call jobs)"
    r = subprocess.run(['pgrep', '-f', str(out)], capture_output=True, text=True)
    return [int(p) for p in r.stdout.split() if int(p) != os.getpid()]

def test_tiny_pipeline_killed_mid_stage_then_resumed(tmp_path):
    out = tmp_path/'run'
    # 1. start, and SIGKILL the runner once a stage is done and a later one (the UNet or CVAE) is running
    proc = _start(out)
    deadline = time.time() + 600
    while time.time() < deadline:
        recs = _records(out)
        running = [s for s in ('cvae', 'unet') if (out/'record'/f'{s}.log').exists() and s not in recs]
        if {'data', 'vae', 'clip', 'latents'} <= set(recs) and running: break
        if proc.poll() is not None: pytest.fail(f"the runner ended before it could be killed:\n{proc.stdout.read()[-3000:]}")
        time.sleep(0.2)
    else: pytest.fail("no stage started in time")
    proc.send_signal(signal.SIGKILL); proc.wait(30)
    before = _records(out)
    assert 'report' not in before and 'pipeline' not in before
    # the jobs die with the runner (PR_SET_PDEATHSIG), and their kernels with them (ipykernel's parent poller)
    t = time.time()
    while _jobs_of(out) and time.time() - t < 20: time.sleep(0.5)
    assert not _jobs_of(out), f"jobs outlived the killed runner: {_jobs_of(out)}"

    # 2. the same command again: finishes, and does not redo what was done
    proc = _start(out)
    log, _ = proc.communicate(timeout=900)
    assert proc.returncode == 0, log[-4000:]
    after = _records(out)
    for stage, rec in before.items():
        assert after[stage]['finished'] == rec['finished'], f"{stage} was run again"
        assert f"skipping {stage}: done earlier" in log
    assert set(after) == {'data', 'vae', 'clip', 'latents', 'cvae', 'unet', 'pipeline', 'report'}
    assert list((out/'.attempts').iterdir()), "the interrupted stage's folder should have been kept aside"

    # 3. the run's record: executed notebooks, run.json with every stage's time, a report, a loadable pipeline
    for s in ('vae', 'clip', 'cvae', 'unet', 'report'): assert (out/'record'/f'{s}.ipynb').exists(), s
    run = json.loads((out/'run.json').read_text())
    assert set(run['stage_seconds']) == set(after) and abs(sum(run['stage_share'].values()) - 1) < 0.01
    assert 0 <= run['report']['model']['asked_correct'] <= 1
    from text2img_diffusion.sampling import generate
    img = generate('a smiling woman with blond hair', model=out/'pipeline', steps=2, seed=0, device='cpu', progress=False)[0]
    assert img.size == (32, 32)

    # 4. a third run has nothing to do; a changed parameter is refused with a message naming it
    proc = _start(out); log, _ = proc.communicate(timeout=300)
    assert proc.returncode == 0 and '(0 stages run, 8 skipped)' in log, log[-2000:]
    proc = _start(out, '--set', 'unet.epochs=3'); log, _ = proc.communicate(timeout=300)
    assert proc.returncode != 0 and "stage 'unet'" in log and 'epochs' in log and '--redo unet' in log, log[-2000:]

def test_bad_requests_fail_with_one_clear_line(tmp_path):
    "Each refused in `t2i train`'s own process (the exit message is the one line the shell shows), nothing written"
    from text2img_diffusion.cli import main
    for args, msg in [(['--preset', 'huge'], "unknown preset 'huge'"),
                      (['--preset', 'celeba64'], 'pass data_path'),
                      (['--set', 'nostage.epochs=1'], "no stage 'nostage'"),
                      (['--set', 'epochs=1'], 'STAGE.PARAM=VALUE')]:
        with pytest.raises(SystemExit) as e: main(['train', '--out', str(tmp_path/'x'), *args])
        said = str(e.value.code)
        assert said.startswith('t2i train: ') and msg in said and '\n' not in said, (args, said)
        assert not (tmp_path/'x').exists(), args

JOB = '''import json, sys
from pathlib import Path
def train(out_dir, resume=None):
    "Fails once after its first checkpoint; the next attempt records what it was resumed from"
    out = Path(out_dir)
    if resume is None:
        ck = out/'checkpoints'/'epoch-0001'; ck.mkdir(parents=True); (ck/'state.pt').write_bytes(b'')
        (out/'checkpoints'/'latest.json').write_text(json.dumps(dict(latest='epoch-0001')))
        sys.exit(3)
    (out/'resumed.txt').write_text(resume)
'''

def test_an_interrupted_stage_continues_from_its_checkpoint(tmp_path, monkeypatch, capsys):
    "The runner's second attempt at a stage that checkpointed passes the set-aside attempt as `resume`"
    from text2img_diffusion.train_pipeline import PipelineError, PipelineRun, Stage
    (tmp_path/'resumable_job.py').write_text(JOB)
    monkeypatch.syspath_prepend(str(tmp_path)); monkeypatch.setenv('PYTHONPATH', str(tmp_path))
    stage = Stage('fit', call='resumable_job:train', params=dict(out_dir='{fit}'))
    with pytest.raises(PipelineError, match='exit status 3'): PipelineRun(tmp_path/'run', {'fit': stage}).run()
    PipelineRun(tmp_path/'run', {'fit': stage}).run(show_progress=False)
    aside, = (tmp_path/'run'/'.attempts').iterdir()
    assert (tmp_path/'run'/'fit'/'resumed.txt').read_text() == str(aside) and (aside/'checkpoints').is_dir()
    assert f"fit started (call resumable_job:train), resuming {aside}" in capsys.readouterr().out
    rec = json.loads((tmp_path/'run'/'record'/'fit.json').read_text())
    assert rec['params'] == {'out_dir': str(tmp_path/'run'/'fit')}            # resume is not one of its settings
