"""A tiny training job for the subprocess tests (resume, signals, DDP, torchrun restarts).

Run it plainly or under torchrun, through the same entry point a family uses:
    python tests/toy_train.py --set out=/tmp/run steps=30
    torchrun --standalone --nproc_per_node=2 -m audiolab.train.distributed toy_train:train --set out=/tmp/run
(with `tests/` on PYTHONPATH). Rank 0 appends one JSON line per step to `<out>/losses.jsonl` and, when the run
completes, writes the final weights to `<out>/final/model.safetensors` (one consolidated file, also under FSDP).
`model` picks the net: `mlp` (one optimizer), `gan` (two phases, the generator output shared through `ctx`) or
`lm` (a 2-block causal transformer, the shape FSDP shards per block).
"""

from __future__ import annotations
import dataclasses
import faulthandler
import json
import os
import signal
import sys
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from audiolab.core import Config, seed_everything
from audiolab.train import distributed as D
from audiolab.train.callbacks import CheckpointCB, SignalCB
from audiolab.train.checkpoint import CheckpointStore, save_pretrained
from audiolab.train.learner import Callback, Learner, TrainConfig


@dataclasses.dataclass
class ToyConfig(Config):
    out: str = "toy_run"
    steps: int = 30
    global_batch: int = 8  # split evenly over ranks
    grad_accum: int = 1
    dropout: float = 0.1  # exercises the RNG state on resume (0 for DDP == 1 process)
    save_every: int = 5
    sleep: float = 0.0  # seconds per step, so a test can signal mid-run
    die_at: int = 0  # SIGKILL this process at that step, once (marker file in `out`)
    die_rank: int = 0
    nan_at: int = 0  # make the loss NaN at this step (once per process)
    lr: float = 0.05
    model: str = "mlp"  # mlp | gan | lm
    strategy: str = "ddp"  # under torchrun: ddp | fsdp
    ema: bool = True  # keep an EMA copy (FSDP keeps none)
    phases: str = "modules"  # gan: each phase given as a module or as a list of parameters
    unused: bool = False  # mlp: add a layer the loss never uses
    find_unused: bool = False  # TrainConfig.find_unused_parameters


class ToyNet(nn.Module):
    def __init__(self, dropout: float):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 32), nn.GELU(), nn.Dropout(dropout), nn.Linear(32, 1))
        self.nan_at, self.steps = 0, 0

    def training_step(self, batch):
        x, y = batch
        self.steps += 1
        loss = nn.functional.mse_loss(self.net(x), y)
        return loss * float("nan") if self.steps == self.nan_at else loss


class ToyGAN(nn.Module):
    "A conditional GAN on the same data: the generator maps x to y; the discriminator scores (x, y) pairs."

    def __init__(self):
        super().__init__()
        self.gen = nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1))
        self.disc = nn.Sequential(nn.Linear(7, 16), nn.Tanh(), nn.Linear(16, 1))

    def training_step(self, batch, phase: str, ctx: dict):
        x, y = batch
        if phase == "disc":  # first: the fake batch is computed once and shared with the 'gen' phase
            ctx["fake"] = fake = self.gen(x)
            real, fake = self.disc(torch.cat([x, y], 1)), self.disc(torch.cat([x, fake.detach()], 1))
            return nn.functional.softplus(-real).mean() + nn.functional.softplus(fake).mean()
        fake = ctx["fake"] if "fake" in ctx else self.gen(x)  # validation runs the last phase alone
        adv = nn.functional.softplus(-self.disc(torch.cat([x, fake], 1))).mean()
        rec = nn.functional.mse_loss(fake, y)
        return dict(loss=rec + 0.1 * adv, adv=adv, rec=rec)


class ToyLM(nn.Module):
    """A 2-block causal transformer over 16 tokens: next-token cross-entropy. No biases: an attention key bias has
    an exactly-zero gradient, so Adam turns its rounding noise into full-size steps that differ between any two
    summation orders (1 process vs 2 ranks)."""

    def __init__(self, dim: int = 32):
        super().__init__()
        self.emb = nn.Embedding(16, dim)
        self.blocks = nn.ModuleList(
            [nn.TransformerEncoderLayer(dim, 4, 2 * dim, dropout=0.0, batch_first=True, bias=False) for _ in range(2)]
        )
        self.head = nn.Linear(dim, 16)

    def training_step(self, batch):
        (tok,) = batch  # (B, T)
        h = self.emb(tok[:, :-1])  # (B, T-1, D)
        mask = nn.Transformer.generate_square_subsequent_mask(h.shape[1])
        for b in self.blocks:
            h = b(h, src_mask=mask, is_causal=True)
        return nn.functional.cross_entropy(self.head(h).flatten(0, 1), tok[:, 1:].flatten())


def lm_data(n: int = 96, length: int = 12) -> TensorDataset:
    "Arithmetic token sequences (start + i * stride mod 16), learnable from their first two tokens."
    g = torch.Generator().manual_seed(1234)
    start, stride = torch.randint(0, 16, (n, 1), generator=g), torch.randint(1, 4, (n, 1), generator=g)
    return TensorDataset((start + stride * torch.arange(length)) % 16)


def make_model(cfg: ToyConfig) -> nn.Module:
    if cfg.model == "gan":
        return ToyGAN()
    if cfg.model == "lm":
        return ToyLM()
    model = ToyNet(cfg.dropout)
    model.nan_at = cfg.nan_at
    if cfg.unused:
        model.spare = nn.Linear(6, 1)
    return model


class Toy(Callback):
    "Log each step's loss (rank 0), sleep, and die on cue."

    def __init__(self, cfg: ToyConfig):
        self.cfg, self.log = cfg, Path(cfg.out) / "losses.jsonl"

    def before_batch(self, learn):
        c = self.cfg
        marker = Path(c.out) / "died"
        if c.die_at and learn.step + 1 == c.die_at and D.rank() == c.die_rank and not marker.exists():
            marker.write_text(str(os.getpid()))
            os.kill(os.getpid(), signal.SIGKILL)

    def after_batch(self, learn):
        if learn.is_main:
            with open(self.log, "a") as f:
                loss = learn.logs["gen/loss" if learn.multi else "loss"]
                f.write(json.dumps({"step": learn.step, "loss": loss}) + "\n")
        if self.cfg.sleep:
            time.sleep(self.cfg.sleep)


def data(n: int = 96) -> TensorDataset:
    g = torch.Generator().manual_seed(1234)
    x = torch.randn(n, 6, generator=g)
    return TensorDataset(x, torch.sin(x.sum(1, keepdim=True)) + 0.1 * torch.randn(n, 1, generator=g))


def train(cfg: ToyConfig):
    "Train the toy net; single-threaded so in-process and subprocess runs are bit-identical."
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _train(cfg)
    finally:
        torch.set_num_threads(threads)


def _train(cfg: ToyConfig):
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # `kill -USR1 <pid>` prints where a stuck job is
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(0)
    model, ds, phases = make_model(cfg), lm_data() if cfg.model == "lm" else data(), None
    if cfg.model == "gan":
        phases = {"disc": model.disc, "gen": model.gen}
        if cfg.phases == "lists":
            phases = {k: list(m.parameters()) for k, m in phases.items()}
    bs = cfg.global_batch // D.world_size()
    tcfg = TrainConfig(
        max_steps=cfg.steps,
        lr=cfg.lr,
        grad_accum=cfg.grad_accum,
        schedule="cosine",
        warmup_steps=3,
        clip_grad=1.0,
        ema_decay=0.9 if cfg.ema else None,
        strategy=cfg.strategy,
        find_unused_parameters=cfg.find_unused,
    )
    learn = Learner(
        model,
        DataLoader(ds, batch_size=bs, shuffle=True),
        DataLoader(ds, batch_size=bs) if cfg.model == "lm" else None,
        cfg=tcfg,
        phases=phases,
        cbs=[CheckpointCB(out / "ckpt", every=cfg.save_every), SignalCB(), Toy(cfg)],
    )
    learn.fit()
    if learn.step == cfg.steps:  # the trained weights (not the EMA copy), consolidated
        if learn.sharded:
            learn.save_pretrained(out / "final")  # collective
        elif learn.is_main:
            save_pretrained(learn.model, out / "final")
    if learn.is_main:
        print(f"done: step {learn.step} stop_reason={learn.stop_reason}", flush=True)
    return learn


# ---- helpers for the tests -------------------------------------------------------------------------------
TESTS = Path(__file__).resolve().parent


def env() -> dict:
    "Subprocess environment: tests/ importable, one thread per process."
    return {
        **os.environ,
        "PYTHONPATH": f"{TESTS}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }


def sets(**kw) -> list[str]:
    return ["--set", *[f"{k}={v}" for k, v in kw.items()]]


def spawn(**kw):
    "Start `toy_train.py` as a plain subprocess with config overrides `kw`."
    import subprocess

    return subprocess.Popen(
        [sys.executable, str(TESTS / "toy_train.py"), *sets(**kw)],
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def torchrun_cmd(nproc: int, max_restarts: int = 0, **kw) -> list[str]:
    "The toy job under torchrun, through the audiolab.train.distributed CLI."
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        f"--max-restarts={max_restarts}",
        "-m",
        "audiolab.train.distributed",
        "toy_train:train",
        *sets(**kw),
    ]


def torchrun(nproc: int, max_restarts: int = 0, timeout: float = 300, **kw):
    "Run the toy job under torchrun; returns the CompletedProcess."
    import subprocess

    return subprocess.run(
        torchrun_cmd(nproc, max_restarts, **kw), env=env(), capture_output=True, text=True, timeout=timeout
    )


def losses(out) -> dict[int, float]:
    "Step -> loss from `<out>/losses.jsonl`; a step logged twice (re-run after a kill) keeps its last value."
    p = Path(out) / "losses.jsonl"
    return {r["step"]: r["loss"] for r in map(json.loads, p.read_text().splitlines())} if p.exists() else {}


def n_logged(out) -> int:
    p = Path(out) / "losses.jsonl"
    return len(p.read_text().splitlines()) if p.exists() else 0


def wait_logged(proc, out, n: int, timeout: float = 240) -> int:
    "Wait until the running job has logged `n` steps (fails if it exits first)."
    t0 = time.time()
    while (k := n_logged(out)) < n:
        if proc.poll() is not None:
            raise AssertionError(f"job exited early ({proc.returncode}):\n{proc.stdout.read()}")
        if time.time() - t0 > timeout:
            proc.kill()
            raise AssertionError(f"job logged only {k} steps in {timeout}s")
        time.sleep(0.02)
    return k


def init_params(model: str = "mlp") -> dict[str, torch.Tensor]:
    "The weights every run of `model` starts from."
    seed_everything(0)
    return {k: v.clone() for k, v in make_model(ToyConfig(model=model, dropout=0.0)).state_dict().items()}


def final_params(out) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(Path(out) / "final" / "model.safetensors"))


def ckpt_step(out) -> int | None:
    p = CheckpointStore(Path(out) / "ckpt").latest()
    return None if p is None else int(p.name.split("-")[1])


if __name__ == "__main__":
    D.main(["toy_train:train", *sys.argv[1:]])
