"""Data parallelism under torchrun (gloo, CPU).

1. 2 ranks x batch 4 == 1 process x batch 8: same losses and final weights within 1e-6.
2. `torchrun --max-restarts=1` with a rank that SIGKILLs itself mid-run: torchrun restarts the job, it resumes
   from its checkpoint and ends with the weights of the uninterrupted 2-rank run (exactly) and of 1 process (1e-6).
3. SIGTERM to torchrun: every rank finishes the step in flight, they agree, save that step, and exit.
4. The engines, 3 steps each, 2 ranks == 1 process to 1e-6: DDP (one optimizer, and a two-phase GAN whose phases
   are each wrapped), with and without gradient accumulation (`no_sync` micro-steps), and FSDP2 on a 2-block
   transformer and on the GAN (consolidated final weights); an FSDP run killed with SIGKILL resumes from its
   sharded (DCP) checkpoint and ends bit-identical to an uninterrupted FSDP run.
All launch through `python -m audiolab.train.distributed toy_train:train`, the same CLI a family uses.
"""

import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
import toy_train as T

CFG = dict(steps=16, global_batch=8, dropout=0.0, save_every=4)  # dropout off: ranks draw different masks


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("single")
    T.train(T.ToyConfig(out=str(out), **CFG))
    return T.losses(out), T.final_params(out)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp")
    r = T.torchrun(2, out=out, **CFG)
    assert r.returncode == 0, r.stdout + r.stderr
    return T.losses(out), T.final_params(out)


def max_diff(a: dict, b: dict) -> float:
    return max((a[k] - b[k]).abs().max().item() for k in a)


def test_two_ranks_equal_one_process(single, two_ranks):
    (l1, p1), (l2, p2) = single, two_ranks
    assert list(l2) == list(range(1, CFG["steps"] + 1))
    assert max(abs(l1[s] - l2[s]) for s in l1) <= 1e-6  # logged loss is the global mean
    assert max_diff(p1, p2) <= 1e-6
    assert max_diff(p1, T.init_params()) > 1e-2  # and training did move the weights


def test_torchrun_restart_resumes_from_checkpoint(tmp_path, single, two_ranks):
    r = T.torchrun(2, max_restarts=1, out=tmp_path, die_at=11, die_rank=1, **CFG)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log
    assert (tmp_path / "died").exists()  # rank 1 really died once...
    assert "resumed from" in log and "step-00000008" in log, log  # ...and the restarted job resumed at step 8
    p = T.final_params(tmp_path)
    assert all(torch.equal(p[k], two_ranks[1][k]) for k in p)  # same as never interrupted
    assert max_diff(p, single[1]) <= 1e-6
    got = T.losses(tmp_path)  # steps 9..10 were re-run identically
    assert list(got) == list(range(1, CFG["steps"] + 1)) and got == two_ranks[0]


def test_sigterm_to_torchrun_saves_the_step_in_flight(tmp_path):
    proc = subprocess.Popen(
        T.torchrun_cmd(2, out=tmp_path, sleep=0.1, **{**CFG, "steps": 40}),
        env=T.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    T.wait_logged(proc, tmp_path, random.Random(0).randint(3, 20))
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert log.count("stop_reason=SIGTERM") == 1, log  # rank 0 reports a clean stop
    stopped = T.n_logged(tmp_path)
    assert stopped < 40 and T.ckpt_step(tmp_path) == stopped, (stopped, T.ckpt_step(tmp_path), log)


ENGINES = {
    "ddp": dict(model="mlp"),
    "ddp_accum2": dict(model="mlp", grad_accum=2),
    "ddp_gan": dict(model="gan"),
    "ddp_gan_accum2": dict(model="gan", grad_accum=2),
    "fsdp_lm": dict(model="lm", strategy="fsdp", ema=False, lr=1e-3),
    "fsdp_lm_accum2": dict(model="lm", strategy="fsdp", ema=False, grad_accum=2, lr=1e-3),
    "ddp_unused": dict(model="mlp", unused=True, find_unused=True),  # a layer no loss uses: grads stay None
    "fsdp_gan": dict(model="gan", strategy="fsdp", ema=False, phases="lists"),  # lists re-pointed at the shards
}


# lr 1e-3 for the transformer: Adam's first steps are close to sign steps, so gradients that are nearly zero turn
# summation-order rounding (1 process vs 2 ranks) into differences proportional to the LR
@pytest.mark.parametrize("case", ENGINES)
def test_engine_two_ranks_equal_one_process(tmp_path, case):
    kw = dict(dict(steps=3, global_batch=8, dropout=0.0, save_every=2, lr=0.01), **ENGINES[case])
    T.train(T.ToyConfig(out=str(tmp_path / "one"), **kw))
    r = T.torchrun(2, out=tmp_path / "two", **kw)
    assert r.returncode == 0, r.stdout + r.stderr
    (l1, p1), (l2, p2) = [(T.losses(tmp_path / d), T.final_params(tmp_path / d)) for d in ("one", "two")]
    assert list(l2) == [1, 2, 3] and max(abs(l1[s] - l2[s]) for s in l1) <= 1e-6
    assert sorted(p1) == sorted(p2) and max_diff(p1, p2) <= 1e-6
    assert max_diff(T.init_params(kw["model"]), p1) > 1e-4  # training moved the weights


@pytest.fixture(scope="module")
def fsdp_straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    r = T.torchrun(2, out=out, **FSDP)
    assert r.returncode == 0, r.stdout + r.stderr
    return T.losses(out), T.final_params(out)


FSDP = dict(model="lm", strategy="fsdp", ema=False, steps=8, global_batch=8, save_every=3, lr=0.01)


def test_fsdp_sigkill_resumes_from_sharded_checkpoint(tmp_path, fsdp_straight):
    r = T.torchrun(2, max_restarts=1, out=tmp_path, die_at=6, die_rank=1, **FSDP)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log
    assert (tmp_path / "died").exists() and "resumed from" in log and "step-00000003" in log, log
    ckpt = T.CheckpointStore(tmp_path / "ckpt").latest()
    assert (ckpt / "sharded" / ".metadata").is_file() and not list(ckpt.glob("*.safetensors"))  # DCP shards
    p = T.final_params(tmp_path)
    assert all(torch.equal(p[k], fsdp_straight[1][k]) for k in p)  # bit-identical to the uninterrupted run
    assert T.losses(tmp_path) == fsdp_straight[0]


def test_ddp_unused_parameters_say_which_key_to_set(tmp_path):
    r = T.torchrun(2, out=tmp_path, steps=3, global_batch=8, dropout=0.0, save_every=0, unused=True)
    assert r.returncode != 0 and "set train.find_unused_parameters: true" in r.stdout + r.stderr
