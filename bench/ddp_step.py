"""One SaxGPT `small` training step on 2 gloo ranks x 1 thread: PyTorch DDP (gradient buckets all-reduced while
backward runs, as the Learner trains under torchrun) vs the engine before it (one blocking all-reduce of a flat copy
of every gradient after backward, re-implemented here for the comparison only); and memory per rank, DDP vs FSDP2.

    python bench/ddp_step.py [--quick] [--size small] [--batch 2] [--frames 150] [--reps 3] [--out ...]

Per step (a step lasts as long as its slowest rank; the minimum over `reps` after one warm-up step):
- compute: forward + backward without communication (DDP's `no_sync`);
- flat: compute + the flat all-reduce (the old engine); allreduce: that all-reduce alone;
- ddp: forward + backward through DDP.
communication = flat - compute; hidden = 1 - (ddp - compute) / communication (1: entirely behind backward).
Memory, each engine in its own process group (peaks do not mix): peak RSS per rank over a few AdamW steps, and the
bytes of parameters + gradients + optimizer state one rank holds. Falls back to an equal-size `nn.transformer`
encoder-decoder stack if `audiolab.models.saxgpt` does not import.
"""

from __future__ import annotations

import argparse
import os
import resource
import time

import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.tensor import DTensor

from audiolab.core import save_json
from audiolab.eval.bench import machine, yardsticks
from audiolab.nn.transformer import TransformerDecoder, TransformerEncoder
from audiolab.train import distributed as D
from audiolab.train.learner import TrainStep

try:
    from audiolab.models.saxgpt import SIZES, SaxGPT, SaxGPTConfig
except Exception as e:  # another change in flight: time an equal-size stack instead
    SaxGPT, SIZES, IMPORT_ERROR = None, None, f"{type(e).__name__}: {e}"
else:
    IMPORT_ERROR = None


class Stack(nn.Module):
    "Fallback: SaxGPT `small`'s shape (d 256, 4 heads, 6 + 6 layers, ff 1024, 4 x 2049 codes) from `nn.transformer`."

    def __init__(self, d: int = 256, heads: int = 4, layers: int = 6, ff: int = 1024, vocab: int = 2049, k: int = 4):
        super().__init__()
        self.emb = nn.ModuleList([nn.Embedding(vocab, d) for _ in range(k)])
        self.enc = TransformerEncoder(layers, d, heads, ff_dim=ff)
        self.dec = TransformerDecoder(layers, d, heads, ff_dim=ff)
        self.head = nn.Linear(d, k * vocab)

    def training_step(self, batch) -> torch.Tensor:
        backing, lead = batch  # (B, K, T) each
        src = sum(e(backing[:, i]) for i, e in enumerate(self.emb))  # (B, T, D)
        tgt = sum(e(lead[:, i]) for i, e in enumerate(self.emb))
        h = self.dec(tgt[:, :-1], self.enc(src))  # (B, T-1, D)
        logits = self.head(h).unflatten(-1, (lead.shape[1], -1))  # (B, T-1, K, V)
        return nn.functional.cross_entropy(logits.flatten(0, 2), lead[:, :, 1:].transpose(1, 2).flatten())


def build(a) -> tuple[nn.Module, tuple, str]:
    torch.manual_seed(0)
    model = SaxGPT(SaxGPTConfig(size=a.size)) if SaxGPT is not None else Stack()
    g = torch.Generator().manual_seed(1 + D.rank())  # each rank its own batch
    batch = tuple(torch.randint(0, 2048, (a.batch, 4, a.frames), generator=g) for _ in range(2))
    return model, batch, type(model).__name__


def flat_all_reduce(params: list[torch.Tensor]) -> None:
    "The engine before DDP: average every gradient with one blocking all-reduce of a flat copy, after backward."
    live = [p for p in params if p.grad is not None]
    flat = torch.cat([p.grad.reshape(-1) for p in live])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for p, v in zip(live, flat.split([p.numel() for p in live])):
        p.grad.copy_(v.view_as(p.grad))


def timed(fns: dict, reps: int) -> dict:
    """Per name, the minimum over `reps` of the slowest rank's wall time of `fn()`; the functions take turns (a shared
    machine's slow spells hit them all), each after one warm-up call."""
    for fn in fns.values():
        fn()
    ts = {k: [] for k in fns}
    for _ in range(reps):
        for k, fn in fns.items():
            dist.barrier()
            t = time.perf_counter()
            fn()
            t = torch.tensor([time.perf_counter() - t], dtype=torch.float64)
            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            ts[k].append(t.item())
    return {k: min(v) for k, v in ts.items()}


def speed(a) -> dict:
    model, batch, name = build(a)
    params = [p for p in model.parameters() if p.requires_grad]
    plain, ddp = TrainStep(model), D.wrap_ddp(TrainStep(model), params)

    def compute():
        model.zero_grad(set_to_none=True)
        with ddp.no_sync():
            ddp(batch)["loss"].backward()

    def flat():
        model.zero_grad(set_to_none=True)
        plain(batch)["loss"].backward()
        flat_all_reduce(params)

    def through_ddp():
        model.zero_grad(set_to_none=True)
        ddp(batch)["loss"].backward()

    t = timed(dict(compute=compute, flat=flat, ddp=through_ddp), a.reps)
    compute()
    t.update(timed(dict(allreduce=lambda: flat_all_reduce(params)), a.reps))
    comm = t["flat"] - t["compute"]
    return dict(
        model=name,
        params=sum(p.numel() for p in params),
        seconds=t,
        communication_s=comm,
        hidden_fraction=1 - (t["ddp"] - t["compute"]) / comm if comm > 0 else None,
        ddp_speedup_vs_flat=t["flat"] / t["ddp"],
    )


def local_bytes(ts) -> int:
    ts = [t.to_local() if isinstance(t, DTensor) else t for t in ts if isinstance(t, torch.Tensor)]
    return sum(t.numel() * t.element_size() for t in ts)


def memory(a, engine: str) -> dict:
    model, batch, _ = build(a)
    rss0 = int(open("/proc/self/statm").read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    if engine == "ddp":
        step = D.wrap_ddp(TrainStep(model), model.parameters())
    else:
        step = TrainStep(model)
        D.shard_model(step, D.block_modules(model))
    opt = torch.optim.AdamW(step.parameters(), lr=1e-4)
    for _ in range(a.mem_steps):
        opt.zero_grad(set_to_none=False)  # keep the gradients: they count
        step(batch)["loss"].backward()
        opt.step()
    params = list(step.parameters())
    state = [v for s in opt.state.values() for v in s.values()]
    return dict(
        peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        rss_before_training_mb=rss0 / 2**20,
        state_mb=local_bytes(params + [p.grad for p in params] + state) / 2**20,
    )


def job(name: str, a) -> dict:
    "One rank's part: the step timing (`speed`) or an engine's memory (`ddp` / `fsdp`)."
    return speed(a) if name == "speed" else memory(a, name)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="frames 50, 2 reps")
    ap.add_argument("--size", default="small")
    ap.add_argument("--batch", type=int, default=2, help="windows per rank")
    ap.add_argument("--frames", type=int, default=150)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--mem-steps", type=int, default=2)
    ap.add_argument("--out", default="results/bench/ddp_step.json")
    a = ap.parse_args()
    if a.quick:
        a.frames, a.reps = 50, 2
    t0 = time.perf_counter()
    res = dict(
        machine=machine() | yardsticks(),
        setup=dict(ranks=2, backend="gloo", threads_per_rank=1, size=a.size, batch_per_rank=a.batch, frames=a.frames),
        model_import_error=IMPORT_ERROR,
        step=D.run_local_ranks(job, "speed", a)[0],
        memory={engine: D.run_local_ranks(job, engine, a) for engine in ("ddp", "fsdp")},
    )
    res["wall_s"] = time.perf_counter() - t0
    save_json(a.out, res)
    print(res)


if __name__ == "__main__":
    main()
