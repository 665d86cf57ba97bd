"""SaxGPT speed (the reference's figures): KV-cached vs uncached generation and the training step, per size.

    python bench/saxgpt_speed.py [--threads 2] [--size medium] [--steps 1500] [--uncached-steps 300]
                                 [--precisions fp32 bf16] [--train-sizes xsmall small medium] [--train-frames 1500]
                                 [--train-precisions fp32 bf16] [--dropout-mode probs] [--rows-only] [--compiled]
                                 [--out results/bench/saxgpt.json]

The rows compared with the reference implementation at its size (about 5 min on an idle 2-core machine): generation
of 1500 frames at batch 1, temperature 1, fp32 and bf16, eager and with compiled steps (`--compiled`; the compile
time apart, as `*_first_run_s`); one medium train step (batch 4, 1500 frames, dropout 0.1 on the attention
probabilities, AdamW; after one warm-up step), in fp32 and in bf16 mixed precision (autocast, as
`TrainConfig.precision: bf16` trains):

    python bench/saxgpt_speed.py --size medium --steps 1500 --uncached-steps 0 --train-sizes medium --train-steps 1 \
        --compiled --train-precisions fp32 bf16

`--rows-only` (the bench stage's reference pass) skips the generation runs that no compared row reads.

The reference implementation on the AMD kind of machine (2 cores, fp32 matmul 2048^3 ~ 108 GFLOP/s): 58.4 steps/s and
69.1 s per train step; on the Intel kind (~294 GFLOP/s) 117 steps/s and 37.9 s. `reference_size` holds the fp32
figures at the reference's setting, `yardsticks` the fp32 and bf16 matmul GFLOP/s measured in this process; `*_at_108`
scale a figure to the AMD machine's yardstick.

The bench stage's small run (<= 30 s on 2 cores): --size xsmall --steps 300 --uncached-steps 150
--train-sizes tiny xsmall --train-frames 250 --train-steps 1

Batch-1 decoding reads every decoder weight and the cross- and self-attention caches once per step, so its speed is
bounded by memory bandwidth, not by the matmul yardstick: `generate.memory_floor` records the bytes a cached step
reads (weights at each precision, the backing's cross-attention K/V, the mean self-attention cache), this process's
read bandwidth (a sum over 256 MiB) and the steps/s that bandwidth allows.

Random weights, CPU, batch 1 for generation (greedy, so cached and uncached must give the same tokens). The machine's
load is recorded: on a shared box the numbers are lower bounds of what an idle machine does, and process CPU time
(`*_cpu_*`) is recorded beside wall time.
"""

from __future__ import annotations
import argparse
import json
import os
import time
from pathlib import Path

import torch

from audiolab.core import amp_dtype, autocast, fast_bf16, save_json
from audiolab.eval.bench import machine, yardsticks
from audiolab.models.saxgpt import SIZES, SaxGPT, SaxGPTConfig, count_params


def _timed(fn):
    t, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - t, time.process_time() - c


def read_bandwidth_gbs(mib: int = 256, reps: int = 8) -> float:
    "GB/s of one pass over a `mib` MiB fp32 tensor (a sum: reads only), best of `reps`."
    x = torch.randn(mib * 2**18)
    best = min(_timed(x.sum)[1] for _ in range(reps))
    return mib * 2**20 / best / 1e9


def memory_floor(m: SaxGPT, frames: int) -> dict:
    """Bytes one KV-cached decoding step over `frames` backing frames reads, per precision (decoder + heads weights but
    the cross-attention K/V projections, which ran once; the backing's cross-attention K/V; the mean self-attention
    cache), and the steps/s this process's read bandwidth allows at most."""
    c, K = m.cfg, m.cfg.num_codebooks
    per_step = [p for n, p in m.decoder.named_parameters() if ".cross_attn.kv_proj." not in n]  # K/V: in the cache
    n_weights = sum(p.numel() for p in [*per_step, *m.heads.parameters()])
    n_cache = 2 * c.num_decoder_layers * c.d_model * (frames + (frames + K) / 2)  # cross K/V + mean self K/V
    gbs = read_bandwidth_gbs()
    out = dict(read_bandwidth_gbs=gbs, weights=n_weights, cache_values_mean=n_cache)
    for prec, size in (("fp32", 4), ("bf16", 2)):
        step_bytes = (n_weights + n_cache) * size
        out[f"{prec}_mb_per_step"] = step_bytes / 1e6
        out[f"{prec}_floor_steps_per_s"] = gbs * 1e9 / step_bytes
    return out


def bench_generate(
    size: str,
    steps: int,
    uncached_steps: int,
    probe=(250, 750, 1250, 1500),
    seed: int = 0,
    precisions=("fp32", "bf16"),
    yard: float | None = None,
    compiled_steps: bool = False,
    rows_only: bool = False,
) -> dict:
    """Greedy generation of `steps` frames over a random backing with the KV cache; the uncached loop in full for
    `uncached_steps` frames (tokens compared), and its per-step cost at prefix lengths `probe`, integrated over
    `steps` (an estimate of the full uncached run, which takes O(T^2)). `rows_only`: only the temperature-1 runs per
    precision (the compiled ones with `compiled_steps`), the rows compared with the reference."""
    torch.manual_seed(seed)
    m = SaxGPT(SaxGPTConfig(size=size)).eval()
    K = m.cfg.num_codebooks
    back = torch.randint(0, m.cfg.n_codes, (1, K, steps))
    n_dec = steps + K  # decoder steps (delayed columns)
    out = dict(size=size, params=m.num_params(), frames=steps, decoder_steps=n_dec, memory_floor=memory_floor(m, steps))
    if not rows_only:
        m.generate(back[..., :32], temperature=0)  # warm-up
        _, dt, dc = _timed(lambda: m.generate(back, temperature=0))
        out.update(cached_s=dt, cached_cpu_s=dc, cached_steps_per_s=n_dec / dt, cached_steps_per_cpu_s=n_dec / dc)
        _, dt, dc = _timed(lambda: m.generate(back, temperature=1.0, top_k=250, top_p=0.95))
        out.update(sampled_topk_topp_steps_per_s=n_dec / dt, sampled_topk_topp_steps_per_cpu_s=n_dec / dc)
    variants = [(p, c) for p in precisions for c in (False, compiled_steps) if not (rows_only and c != compiled_steps)]
    for prec, compiled in variants:  # temperature 1, no filter
        name = f"t1_{prec}" + ("_compiled" if compiled else "")
        warm = back if compiled else back[..., :32]  # a compiled step is made for the generation's shapes
        _, dt, _ = _timed(lambda: m.generate(warm, temperature=1.0, precision=prec, compiled=compiled))
        if compiled:
            out[f"{name}_first_run_s"] = dt  # compiling + one generation
        _, dt, dc = _timed(lambda: m.generate(back, temperature=1.0, precision=prec, compiled=compiled))
        out[f"{name}_steps_per_s"] = n_dec / dt
        out[f"{name}_steps_per_cpu_s"] = n_dec / dc
        if yard:
            out[f"{name}_steps_per_s_at_108"] = n_dec / dt * 108 / yard
    if rows_only:
        return out
    if uncached_steps:
        n = min(uncached_steps, steps)
        unc, dt_u, dc_u = _timed(lambda: m.generate(back[..., :n], temperature=0, use_cache=False))
        cac, dt_c, dc_c = _timed(lambda: m.generate(back[..., :n], temperature=0))
        out.update(
            uncached_frames=n,
            uncached_s=dt_u,
            uncached_cpu_s=dc_u,
            cached_same_len_s=dt_c,
            cached_same_len_cpu_s=dc_c,
            speedup_measured=dt_u / dt_c,
            speedup_measured_cpu=dc_u / dc_c,
            equal_tokens=bool(torch.equal(unc, cac)),
        )
    with torch.no_grad():  # one uncached step at prefix length t
        memory, mask = m.encode(back)
        cols = torch.randint(0, m.cfg.n_codes, (1, K, n_dec))
        pts = [
            (t, min(_timed(lambda: m.decode(cols[..., :t], memory, mask))[2] for _ in range(2)))
            for t in probe
            if t <= n_dec
        ]
    if pts:
        xs, ys = [0] + [t for t, _ in pts], [pts[0][1]] + [c for _, c in pts]
        est = sum((ys[i] + ys[i + 1]) / 2 * (xs[i + 1] - xs[i]) for i in range(len(xs) - 1))
        est += ys[-1] * max(0, n_dec - xs[-1])
        out.update(
            uncached_step_cpu_s_at=dict(pts),
            uncached_full_cpu_s_estimate=est,
            speedup_full_estimate_cpu=est / out["cached_cpu_s"],
        )
    return out


def bench_train_step(
    size: str,
    batch: int = 4,
    frames: int = 1500,
    dropout: float = 0.1,
    steps: int = 3,
    seed: int = 0,
    dropout_mode: str = "probs",
    yard: float | None = None,
    precision: str = "fp32",
) -> dict:
    """Seconds per AdamW step on `batch` windows of `frames` backing + lead frames (forward, backward, update), in
    `precision` as the Learner trains (`TrainConfig.precision`: fp32, or bf16 autocast = mixed precision)."""
    amp = amp_dtype("cpu", precision)
    torch.manual_seed(seed)
    m = SaxGPT(SaxGPTConfig(size=size, dropout=dropout, dropout_mode=dropout_mode)).train()
    K, V = m.cfg.num_codebooks, m.cfg.n_codes
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4)
    b = (torch.randint(0, V, (batch, K, frames)), torch.randint(0, V, (batch, K, frames)))
    times = []
    for i in range(steps + 1):  # first step is warm-up

        def step():
            with autocast("cpu", amp):
                loss = m.training_step(b)["loss"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        _, dt, dc = _timed(step)
        if i:
            times.append((dt, dc))
    return dict(
        size=size,
        params=m.num_params(),
        batch=batch,
        encoder_tokens=frames,
        decoder_tokens=frames + K,
        dropout=dropout,
        dropout_mode=m.cfg.dropout_mode,
        precision=precision,
        step_s=min(t for t, _ in times),
        step_cpu_s=min(c for _, c in times),
        step_s_at_108=min(t for t, _ in times) * yard / 108 if yard else None,
        step_s_all=times,
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="medium", choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--uncached-steps", type=int, default=300)
    ap.add_argument("--train-sizes", nargs="*", default=["xsmall", "small", "medium"])
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--train-frames", type=int, default=1500, help="backing and lead frames per training window")
    ap.add_argument("--train-batch", type=int, default=4)
    ap.add_argument(
        "--train-precisions", nargs="*", default=["fp32"], help="fp32 and/or bf16 (autocast, as in training)"
    )
    ap.add_argument("--precisions", nargs="*", default=["fp32", "bf16"], help="generation precisions (temperature 1)")
    ap.add_argument(
        "--compiled", action="store_true", help="also generate with compiled steps (generate(compiled=True))"
    )
    ap.add_argument("--dropout-mode", default="probs", help="train step attention dropout (probs: the reference's)")
    ap.add_argument("--out", default="results/bench/saxgpt.json")
    ap.add_argument("--rows-only", action="store_true", help="generation: only the rows compared with the reference")
    ap.add_argument("--keep-generate", action="store_true", help="reuse the `generate` results already in --out")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = dict(
        machine=machine(),
        params={s: count_params(s) for s in SIZES},
        yardsticks=yardsticks(),
        targets=dict(cached_steps_per_s=117, medium_train_step_s=34.5),
        reference=dict(cached_steps_per_s=58.4, medium_train_step_s=69.1, matmul_fp32_gflops=108),
    )
    yard = res["yardsticks"]["matmul_fp32_gflops"]
    print(json.dumps(res["yardsticks"]), flush=True)
    old = json.loads(Path(a.out).read_text()) if a.keep_generate and Path(a.out).exists() else {}
    if "generate" in old:
        res["generate"], res["generate_machine"] = old["generate"], old["machine"]
    else:
        res["generate"] = bench_generate(
            a.size,
            a.steps,
            a.uncached_steps,
            precisions=a.precisions,
            yard=yard,
            compiled_steps=a.compiled,
            rows_only=a.rows_only,
        )
    print(json.dumps(res["generate"], indent=1), flush=True)
    save_json(a.out, res)
    res["train_step"] = []
    for s, prec in [(s, p) for s in a.train_sizes for p in a.train_precisions]:
        res["train_step"].append(
            bench_train_step(
                s,
                batch=a.train_batch,
                frames=a.train_frames,
                steps=a.train_steps,
                dropout_mode=a.dropout_mode,
                yard=yard,
                precision=prec,
            )
        )
        print(json.dumps(res["train_step"][-1]), flush=True)
        save_json(a.out, res)
    res["machine"]["loadavg_end"] = os.getloadavg()
    medium = [t for t in res["train_step"] if t["size"] == "medium"]
    if a.size == "medium":  # the rows compared with the reference implementation (eval.bench.REFERENCE_ROWS): fp32
        gen, default = res["generate"], "bf16" if fast_bf16("cpu") else "fp32"
        name = "t1_{}_compiled_steps_per_s" if a.compiled else "t1_{}_steps_per_s"
        res["reference_size"] = dict(generation=dict(steps_per_s=gen[name.format("fp32")]))
        if name.format(default) in gen:
            res["reference_size"]["generation_default_precision"] = dict(steps_per_s=gen[name.format(default)])
        if a.dropout_mode == "probs" and a.train_batch == 4 and a.train_frames == 1500:
            for t in medium:
                res["reference_size"]["train" + ("" if t["precision"] == "fp32" else "_bf16")] = dict(
                    step_s=t["step_s"]
                )
    save_json(a.out, res)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
