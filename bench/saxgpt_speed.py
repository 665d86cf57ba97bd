"""SaxGPT speed (seed 001's figures): KV-cached vs uncached generation and the training step, per size.

    python bench/saxgpt_speed.py [--threads 2] [--size medium] [--steps 1500] [--uncached-steps 1500]
                                 [--train-sizes xsmall small medium] [--out results/bench/saxgpt.json]

Random weights, fp32, CPU, batch 1 for generation (greedy, so cached and uncached must give the same tokens),
batch 4 of 1500-frame backing + lead windows for the train step (dropout 0.1, AdamW). The seed's own code
reached 117 cached steps/s and 38 s per medium train step on a 2-core machine; the targets are >= 235 steps/s,
>= 10x over uncached, <= 10 s per step. The machine's load is recorded: on a shared box the numbers are lower
bounds of what an idle machine does.
"""
from __future__ import annotations
import argparse, json, os, platform, time
from pathlib import Path

import torch

from audiolab.core import save_json
from audiolab.models.saxgpt import SIZES, SaxGPT, SaxGPTConfig, count_params


def machine_info() -> dict:
    cpu = next((l.split(":", 1)[1].strip() for l in Path("/proc/cpuinfo").read_text().splitlines()
                if l.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return dict(cpu=cpu, cores=os.cpu_count(), torch_threads=torch.get_num_threads(), torch=torch.__version__,
                python=platform.python_version(), platform=platform.platform(), loadavg=os.getloadavg())


def bench_generate(size: str, steps: int, uncached_steps: int, seed: int = 0) -> dict:
    "Greedy generation of `steps` frames over a random backing, with and without the KV cache."
    torch.manual_seed(seed)
    m = SaxGPT(SaxGPTConfig(size=size)).eval()
    K = m.cfg.num_codebooks
    back = torch.randint(0, m.cfg.n_codes, (1, K, steps))
    m.generate(back[..., :32], temperature=0)                                   # warm-up
    t = time.perf_counter(); cached = m.generate(back, temperature=0); dt_c = time.perf_counter() - t
    n_dec = steps + K                                                           # decoder steps (delayed columns)
    out = dict(size=size, params=m.num_params(), frames=steps, decoder_steps=n_dec, cached_s=dt_c,
               cached_steps_per_s=n_dec / dt_c, cached_frames_per_s=steps / dt_c)
    t = time.perf_counter(); s = m.generate(back, temperature=1.0, top_k=250, top_p=0.95); dt_s = time.perf_counter() - t
    out.update(sampled_topk_topp_steps_per_s=n_dec / dt_s)
    if uncached_steps:
        n = min(uncached_steps, steps)
        t = time.perf_counter(); unc = m.generate(back[..., :n], temperature=0, use_cache=False); dt_u = time.perf_counter() - t
        t = time.perf_counter(); cached_n = m.generate(back[..., :n], temperature=0); dt_cn = time.perf_counter() - t
        out.update(uncached_frames=n, uncached_s=dt_u, uncached_steps_per_s=(n + K) / dt_u, cached_same_len_s=dt_cn,
                   speedup_cached_vs_uncached=dt_u / dt_cn, equal_tokens=bool(torch.equal(unc, cached_n)))
    return out


def bench_train_step(size: str, batch: int = 4, frames: int = 1500, dropout: float = 0.1, steps: int = 3, seed: int = 0) -> dict:
    "Seconds per AdamW step on `batch` windows of `frames` backing + lead frames (forward, backward, update)."
    torch.manual_seed(seed)
    m = SaxGPT(SaxGPTConfig(size=size, dropout=dropout)).train()
    K, V = m.cfg.num_codebooks, m.cfg.n_codes
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4)
    b = (torch.randint(0, V, (batch, K, frames)), torch.randint(0, V, (batch, K, frames)))
    times = []
    for i in range(steps + 1):                                                  # first step is warm-up
        t = time.perf_counter()
        loss = m.training_step(b)["loss"]; opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        if i: times.append(time.perf_counter() - t)
    return dict(size=size, params=m.num_params(), batch=batch, encoder_tokens=frames, decoder_tokens=frames + K,
                dropout=dropout, dropout_mode=m.cfg.dropout_mode, step_s=min(times), step_s_all=times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--size", default="medium", choices=list(SIZES))
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--uncached-steps", type=int, default=1500)
    ap.add_argument("--train-sizes", nargs="*", default=["xsmall", "small", "medium"])
    ap.add_argument("--train-steps", type=int, default=2)
    ap.add_argument("--out", default="results/bench/saxgpt.json")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = dict(machine=machine_info(), params={s: count_params(s) for s in SIZES},
               targets=dict(cached_steps_per_s=235, speedup=10, medium_train_step_s=10),
               seed_reference=dict(cached_steps_per_s=117, medium_train_step_s=38, medium_train_step_s_no_dropout=8.5))
    res["generate"] = bench_generate(a.size, a.steps, a.uncached_steps)
    print(json.dumps(res["generate"], indent=1), flush=True)
    save_json(a.out, res)
    res["train_step"] = []
    for s in a.train_sizes:
        res["train_step"].append(bench_train_step(s, steps=a.train_steps))
        print(json.dumps(res["train_step"][-1]), flush=True)
        save_json(a.out, res)
    res["machine"]["loadavg_end"] = os.getloadavg()
    save_json(a.out, res)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
