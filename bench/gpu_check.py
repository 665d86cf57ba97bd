"""The GPU check: every family's `full`-size training step under bf16 autocast (SaxGPT also under fp16 + GradScaler),
the flash-attn backend against SDPA, a 1-process NCCL DDP step and an FSDP2 step, with step time and peak GPU memory.

    bash scripts/gpu_check.sh                 # a CUDA machine: installs, then runs this (<= 8 minutes on one GPU)
    python bench/gpu_check.py [--batch 2] [--steps 3] [--only saxgpt,codec] [--out results/bench/gpu_check.json]
    python bench/gpu_check.py --dry-run       # CPU: the same code paths at the `tiny` sizes (gloo, CPU autocast)

Each family: `full_profile.build_job` (params.yaml's `full` block through the recipe config, the recipe's losses,
optimizers and GAN phases) trained by the Learner for `--steps` steps at `--batch` items of the recipe's own training
segment. The dry run builds every `full` network on the meta device (the size check) and trains the `tiny` ones at
batch 1 on short crops, so the command cannot rot before a GPU is at hand. Whatever cannot run here is listed under
`skipped` with its reason; a check that fails is recorded with its error and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import time
import traceback
from pathlib import Path

import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from full_profile import CPU_CROPS, FAMILIES, build_job, n_params, train_steps  # noqa: E402

from audiolab.core import save_json, seed_everything  # noqa: E402
from audiolab.eval.bench import machine, matmul_yardstick, yardsticks  # noqa: E402
from audiolab.nn import attention  # noqa: E402
from audiolab.train import distributed as D  # noqa: E402
from audiolab.train.learner import Passthrough, TrainStep, make_optimizer, to_device  # noqa: E402

DRY_CROPS = dict(melvae=32, saxgpt=40, audiolm=60)  # tiny crops of the dry run (seconds for the waveform families)
DIST_FAMILY = "saxgpt"  # the DDP / FSDP / fp16 checks train this family


def crop_for(family: str, dry: bool):
    return (DRY_CROPS.get(family, 0.1) if CPU_CROPS[family] is not None else None) if dry else None


def family_step(family: str, a, precision: str) -> dict:
    "`family`'s training steps on `a.device` under `precision`; step times, peak memory, parameter count."
    seed_everything(0)
    cuda = a.device.type == "cuda"
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    job = build_job(family, a.params, a.profile, crop_for(family, a.dry_run))
    out = train_steps(job, a.steps, a.batch, a.device, precision=precision)
    out.update(precision=precision, crop=job.crop, batch=a.batch)
    if cuda:
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if not out["finite"]:
        raise FloatingPointError(f"{family} under {precision}: non-finite logs")
    return out


def would_build(family: str, a) -> dict:
    "The `full` network on the meta device (the vocoders on CPU: torchaudio's filterbank reads a value): its size."
    dev = "cpu" if family.startswith("vocoder") else "meta"
    with torch.device(dev):
        job = build_job(family, a.params, "full", CPU_CROPS[family], n_items=1)
    return dict(params=n_params(job.net), built_on=dev)


def attention_check(dry: bool) -> dict:
    """flash-attn vs SDPA on bf16 CUDA tensors (causal, and with key padding through the varlen kernel): the largest
    difference against bf16's tolerance. Dry run: the same comparison of SDPA against the naive path on CPU."""
    dev = "cpu" if dry else "cuda"
    dtype = torch.float32 if dry else torch.bfloat16
    backend = "naive" if dry else "flash"
    g = torch.Generator(dev).manual_seed(0)
    q, k, v = (torch.randn(2, 8, 256, 64, device=dev, dtype=dtype, generator=g) for _ in range(3))  # (B, H, T, Dh)
    lengths = torch.tensor([256, 200], device=dev)
    pad = attention.padding_mask(lengths, 256)  # (B, T) True on padding
    res = {}
    for name, kw in (("causal", dict(causal=True)), ("key_padding", dict(key_padding_mask=pad))):
        ref = attention.attend(q, k, v, backend="sdpa", **kw)
        got = attention.attend(q, k, v, backend=backend, **kw)
        keep = ~pad[:, None, :, None] if name == "key_padding" else torch.ones_like(ref, dtype=torch.bool)
        diff = ((got - ref).abs() * keep).amax().item()
        res[name] = dict(max_abs_diff=diff, tol=2e-2 if dtype == torch.bfloat16 else 1e-5)
    ok = all(r["max_abs_diff"] <= r["tol"] for r in res.values())
    return dict(compared=f"{backend} vs sdpa ({str(dtype).split('.')[-1]}, {dev})", ok=ok, **res)


def _init_group(device: torch.device) -> None:
    "A 1-process group: NCCL on CUDA, gloo on CPU."
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=0, world_size=1, device_id=device if device.type == "cuda" else None)


def _one_step(job, step_module, a, precision: str) -> tuple[float, dict]:
    "One optimizer step of `job.model` through `step_module`; (loss, {name: updated parameter, full})."
    cfg = job.train.replace(precision=precision)
    opt = make_optimizer(job.model, cfg)
    batch = to_device(next(iter(job.loader(a.batch))), a.device)
    torch.manual_seed(1)  # dropout: the same draws in every variant
    with torch.autocast(a.device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = (step_module or TrainStep(job.model))(batch, None, Passthrough({}))
    out["loss"].backward()
    opt.step()
    full = {
        n: (p.full_tensor() if isinstance(p, DTensor) else p).detach().float().cpu()
        for n, p in job.model.named_parameters()
    }
    return out["loss"].item(), full


def distributed_check(a) -> dict:
    """DDP (`train.distributed.wrap_ddp`) and FSDP2 (`shard_model` over the family's blocks) steps in a 1-process group:
    loss and updated weights against the plain step from the same weights and batch; step time and peak memory."""
    _init_group(a.device)
    res = {"backend": dist.get_backend()}
    try:
        seed_everything(0)
        crop = crop_for(DIST_FAMILY, a.dry_run)
        ref_loss, ref = _one_step(
            build_job(DIST_FAMILY, a.params, a.profile, crop).to_device(a.device), None, a, "fp32"
        )
        for name in ("ddp", "fsdp"):
            seed_everything(0)
            job = build_job(DIST_FAMILY, a.params, a.profile, crop).to_device(a.device)
            if a.device.type == "cuda":
                torch.cuda.reset_peak_memory_stats()
            root = TrainStep(job.model)
            if name == "ddp":
                step = D.wrap_ddp(root, list(job.model.parameters()), job.train.find_unused_parameters)
            else:
                step = D.shard_model(root, D.block_modules(job.model))
            t0 = time.perf_counter()
            loss, got = _one_step(job, step, a, "fp32")
            if a.device.type == "cuda":
                torch.cuda.synchronize()
            diff = max((got[n] - ref[n]).abs().max().item() for n in ref)
            res[name] = dict(
                loss=loss,
                ref_loss=ref_loss,
                max_weight_diff=diff,
                ok=abs(loss - ref_loss) < 1e-4 and diff < 1e-5,
                step_s=round(time.perf_counter() - t0, 3),
            )
            if a.device.type == "cuda":
                res[name]["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    finally:
        dist.destroy_process_group()
    return res


def run_check(report: dict, key: str, fn, *args) -> None:
    "Run one check into `report[key]`; a failure is recorded with its error (and makes the command fail)."
    t0 = time.perf_counter()
    try:
        report[key] = fn(*args)
    except Exception as e:
        report[key] = dict(error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc()[-2500:])
        report["failed"].append(key)
    report[key]["wall_s"] = round(time.perf_counter() - t0, 2)
    print(f"[gpu_check] {key}: {'FAILED ' + report[key]['error'] if 'error' in report[key] else 'ok'}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--dry-run", action="store_true", help="CPU: tiny sizes, gloo, CPU autocast; full sizes on meta")
    ap.add_argument("--batch", type=int, default=None, help="items per step (default: 2 on CUDA, 1 in the dry run)")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated families (default: all)")
    ap.add_argument("--out", default="results/bench/gpu_check.json")
    a = ap.parse_args(argv)
    cuda = torch.cuda.is_available() and not a.dry_run
    if not cuda and not a.dry_run:
        print("[gpu_check] no CUDA device: run with --dry-run for the CPU check", file=sys.stderr)
        return 2
    a.device = torch.device("cuda" if cuda else "cpu")
    a.profile = "tiny" if a.dry_run else "full"
    a.batch = a.batch or (1 if a.dry_run else 2)
    families = [f for f in a.only.split(",") if f] or list(FAMILIES)
    sticks = dict(matmul_fp32_gflops=matmul_yardstick(n=512)) if a.dry_run else yardsticks(a.device.type)
    report = dict(
        mode="dry-run (CPU)" if a.dry_run else "cuda",
        profile=a.profile,
        batch=a.batch,
        steps=a.steps,
        machine=machine(),
        yardsticks=sticks,
        failed=[],
        skipped={},
    )
    if a.dry_run:
        for f in families:
            run_check(report, f"build_full/{f}", would_build, f, a)
    for f in families:
        run_check(report, f"bf16/{f}", family_step, f, a, "bf16")
    if DIST_FAMILY in families:
        run_check(report, f"fp16_gradscaler/{DIST_FAMILY}", family_step, DIST_FAMILY, a, "fp16")
        run_check(report, f"distributed/{DIST_FAMILY}", distributed_check, a)
    if cuda and attention.flash_attn_func is None:
        report["skipped"]["flash_vs_sdpa"] = "flash-attn is not installed (or failed to import): SDPA only"
    else:
        run_check(report, "flash_vs_sdpa", attention_check, a.dry_run)
        if a.dry_run:
            report["skipped"]["flash_vs_sdpa"] = "no CUDA: compared the naive path against SDPA instead"
    if a.dry_run:
        report["skipped"]["nccl"] = "no CUDA: the 1-process DDP / FSDP steps ran on gloo"
        report["skipped"]["peak_gpu_memory"] = "no CUDA"
    for k, v in list(report.items()):
        if isinstance(v, dict) and v.get("ok") is False:
            report["failed"].append(k)
    for k, v in report.items():
        if k.startswith("distributed/") and isinstance(v, dict):
            report["failed"] += [f"{k}/{n}" for n in ("ddp", "fsdp") if isinstance(v.get(n), dict) and not v[n]["ok"]]
    save_json(a.out, report)
    print(f"[gpu_check] wrote {a.out}; failed: {report['failed'] or 'none'}; skipped: {report['skipped'] or 'none'}")
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
