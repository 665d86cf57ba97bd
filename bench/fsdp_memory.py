"""Peak memory per rank, DDP vs FSDP2, of the AudioLM `full` size (d 1024 x 12 layers, AR + NAR: 368 M parameters)
trained by the Learner on 2 gloo ranks x 1 thread: a few AdamW steps on short token sequences.

    python bench/fsdp_memory.py [--steps 3] [--frames 30] [--utts 2] [--out results/bench/fsdp_memory.json]

Each strategy runs in its own pair of processes (peaks do not mix). Per rank: the peak resident memory (`ru_maxrss`),
the resident memory after building the model (before the Learner wraps it) and the bytes of parameters + gradients +
optimizer state the rank holds after the last step (FSDP: its shards), and the mean step time.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch
from torch.distributed.tensor import DTensor
from torch.utils.data import DataLoader

from audiolab.core import load_section, save_json
from audiolab.eval.bench import machine, yardsticks
from audiolab.data.tokens import PromptTargetCollate, TokenUtterances
from audiolab.models.audiolm import AudioLM, AudioLMConfig
from audiolab.train import distributed as D
from audiolab.train.learner import Learner, TrainConfig


def local_mb(ts) -> float:
    ts = [t.to_local() if isinstance(t, DTensor) else t for t in ts if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in ts) / 2**20


def rss_mb() -> float:
    return int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def measure(a, strategy: str) -> dict:
    "Train the full-size AudioLM `a.steps` steps with `strategy`; this rank's memory and step time."
    torch.manual_seed(0)
    cfg = AudioLMConfig.from_dict(load_section("audiolm", "full", a.params)["model"])
    model = AudioLM(cfg)
    rss_model, n_params = rss_mb(), sum(p.numel() for p in model.parameters())
    codes = torch.randint(0, cfg.bins, (8 * a.utts, cfg.n_q, a.frames), generator=torch.Generator().manual_seed(0))
    dl = DataLoader(TokenUtterances(list(codes)), batch_size=a.utts, shuffle=True, collate_fn=PromptTargetCollate(0.4))
    train = load_section("audiolm", "full", a.params)["train"]  # NAR: one random stage per step, the others unused
    tc = TrainConfig(
        max_steps=a.steps,
        lr=1e-4,
        strategy=strategy,
        precision="fp32",
        find_unused_parameters=train.get("find_unused_parameters", False),
    )
    learn = Learner(model, dl, cfg=tc)
    t0 = time.perf_counter()
    learn.fit()
    step_s = (time.perf_counter() - t0) / a.steps
    params = list(learn.model.parameters())
    state = [v for o in learn.phases.values() for s in o.state.values() for v in s.values()]
    return dict(
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        rss_after_model_mb=rss_model,
        params_grads_optimizer_mb=local_mb(params + [p.grad for p in params] + state),
        step_s=step_s,
        loss=learn.history[-1]["loss"],
        params_M=n_params / 1e6,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--frames", type=int, default=30, help="frames per utterance (50 Hz)")
    ap.add_argument("--utts", type=int, default=2, help="utterances per rank and step")
    ap.add_argument("--out", default="results/bench/fsdp_memory.json")
    a = ap.parse_args()
    res = {s: D.run_local_ranks(measure, a, s) for s in ("ddp", "fsdp")}
    ddp, fsdp = (max(r["peak_rss_mb"] for r in res[s]) for s in ("ddp", "fsdp"))
    out = dict(
        model="AudioLM full (dim 1024, 12 layers, AR + NAR)",
        params_M=res["ddp"][0]["params_M"],
        ranks=2,
        threads_per_rank=1,
        steps=a.steps,
        frames=a.frames,
        utts_per_rank=a.utts,
        machine=machine() | yardsticks(),
        per_rank=res,
        peak_rss_mb=dict(ddp=ddp, fsdp=fsdp),
        fsdp_saves=1 - fsdp / ddp,
    )
    save_json(a.out, out)
    print(out["peak_rss_mb"], f"FSDP saves {out['fsdp_saves']:.0%} of the peak per rank")


if __name__ == "__main__":
    main()
