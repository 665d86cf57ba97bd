"""Transformer block forward+backward on CPU: achieved FLOP/s against the machine's own fp32 matmul FLOP/s
(measured in the same run), SDPA against naive attention with and without dropout, and the SaxGPT-medium
train step (31 M params, batch 4, 1505 + 1500 tokens, dropout 0.1) that the design table sets at <= 10 s.

    python bench/transformer_block.py [--quick] [--threads N] [--out results/bench/transformer_block.json]

Times are the minimum over repeats (the machine is shared: the minimum is the least disturbed run).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from audiolab.core import save_json
from audiolab.nn.attention import naive_attention
from audiolab.nn.embed import MultiCodebookEmbedding
from audiolab.nn.transformer import TransformerDecoder, TransformerEncoder, TransformerEncoderLayer


def best_time(fn, reps: int = 3, warmup: int = 1) -> float:
    "Minimum wall time of `fn()` over `reps` runs after `warmup` runs."
    for _ in range(warmup):
        fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return min(ts)


def matmul_flops(n: int, reps: int = 5) -> float:
    "fp32 FLOP/s of an n×n×n matmul."
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / best_time(lambda: a @ b, reps, warmup=2)


def block_flops(B: int, T: int, D: int, F_: int, causal: bool) -> float:
    "Forward FLOPs of one encoder layer: projections + FFN matmuls + attention (causal counts half)."
    lin = 2 * B * T * (4 * D * D + 2 * D * F_)
    att = 4 * B * T * T * D * (0.5 if causal else 1.0)
    return lin + att


def bench_block(B, T, D, H, F_, causal, dropout, mode, reps):
    torch.manual_seed(0)
    layer = TransformerEncoderLayer(D, H, ff_dim=F_, dropout=dropout, causal=causal, dropout_mode=mode).train()
    x = torch.randn(B, T, D, requires_grad=True)

    def step():
        layer.zero_grad(set_to_none=True)
        layer(x).sum().backward()

    t = best_time(step, reps)
    flops = 3 * block_flops(B, T, D, F_, causal)  # backward ≈ 2 × forward
    return dict(
        B=B,
        T=T,
        dim=D,
        heads=H,
        ff_dim=F_,
        causal=causal,
        dropout=dropout,
        dropout_mode=mode,
        seconds=t,
        gflop=flops / 1e9,
        gflops_per_s=flops / t / 1e9,
    )


def bench_attention(B, H, T, Dh, reps):
    "Attention alone, forward+backward: SDPA vs naive, dropout 0 and 0.1, causal."
    torch.manual_seed(0)
    q, k, v = (torch.randn(B, H, T, Dh, requires_grad=True) for _ in range(3))
    out = {}
    for name, fn in [
        ("sdpa", lambda p: F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=True)),
        ("naive", lambda p: naive_attention(q, k, v, dropout_p=p, is_causal=True)),
    ]:
        for p in (0.0, 0.1):

            def step(fn=fn, p=p):
                q.grad = k.grad = v.grad = None
                fn(p).sum().backward()

            out[f"{name}_dropout{p}"] = best_time(step, reps)
    out["speedup_sdpa_vs_naive_dropout0"] = out["naive_dropout0.0"] / out["sdpa_dropout0.0"]
    out["slowdown_sdpa_dropout_vs_nodropout"] = out["sdpa_dropout0.1"] / out["sdpa_dropout0.0"]
    return dict(B=B, heads=H, T=T, head_dim=Dh, seconds=out)


def bench_dropout(shape=(4, 1500, 1536), p=0.1, reps=3):
    "Cost of one dropout (forward+backward) on an FFN-hidden-sized tensor: the CPU mask RNG dominates."
    x = torch.randn(*shape, requires_grad=True)
    out = {}
    for name, fn in [("F.dropout", lambda: F.dropout(x, p, True)), ("none", lambda: x * 1.0)]:

        def step(fn=fn):
            x.grad = None
            fn().sum().backward()

        out[name] = best_time(step, reps)
    return dict(shape=list(shape), p=p, seconds=out)


class SaxGPTLike(nn.Module):
    "The SaxGPT-medium shape from audiolab blocks: 4-codebook embeddings, 6+6 layers d384, 4 logit heads."

    def __init__(self, dropout: float, mode: str, K=4, V=2049, D=384, H=6, F_=1536, L=6):
        super().__init__()
        kw = dict(ff_dim=F_, dropout=dropout, activation="relu", dropout_mode=mode)
        self.src_emb = MultiCodebookEmbedding(K, V, D, padding_idx=V - 1)
        self.tgt_emb = MultiCodebookEmbedding(K, V, D, padding_idx=V - 1)
        self.pos = nn.Embedding(1505, D)
        self.enc = TransformerEncoder(L, D, H, **kw)
        self.dec = TransformerDecoder(L, D, H, **kw)
        self.heads = nn.ModuleList(nn.Linear(D, V) for _ in range(K))

    def forward(self, src, tgt):
        ps, pt = self.pos.weight[: src.shape[-1]], self.pos.weight[: tgt.shape[-1]]
        mem = self.enc(self.src_emb(src) + ps)
        h = self.dec(self.tgt_emb(tgt) + pt, mem)
        return torch.stack([hd(h) for hd in self.heads], 1)  # (B, K, T, V)


def bench_saxgpt(mode: str, dropout: float, reps: int):
    torch.manual_seed(0)
    m = SaxGPTLike(dropout, mode).train()
    opt = torch.optim.AdamW(m.parameters(), lr=3e-4)
    src, tgt = torch.randint(0, 2048, (4, 4, 1505)), torch.randint(0, 2048, (4, 4, 1501))

    def step():
        opt.zero_grad(set_to_none=True)
        logits = m(src, tgt[..., :-1])
        F.cross_entropy(logits.flatten(0, 2), tgt[..., 1:].flatten()).backward()
        opt.step()

    t = best_time(step, reps, warmup=1)
    return dict(
        params_M=sum(p.numel() for p in m.parameters()) / 1e6,
        dropout=dropout,
        dropout_mode=mode,
        batch=4,
        src_tokens=1505,
        tgt_tokens=1500,
        seconds_per_step=t,
    )


@torch.no_grad()
def bench_decode(steps: int = 1500, max_len: int | None = 1500):
    "KV-cached greedy decoding of the SaxGPT-medium shape, batch 1: decoder steps per second."
    torch.manual_seed(0)
    m = SaxGPTLike(0.0, "auto").eval()
    src = torch.randint(0, 2048, (1, 4, 1505))
    mem = m.enc(m.src_emb(src) + m.pos.weight[:1505])
    tok = torch.zeros(1, 4, 1, dtype=torch.long)
    cache = m.dec.make_cache(max_len)
    t = time.perf_counter()
    for i in range(steps):
        h = m.dec(m.tgt_emb(tok) + m.pos.weight[i], mem if i == 0 else None, cache=cache)
        tok = torch.stack([hd(h[:, -1]).argmax(-1) for hd in m.heads], 1)[..., None]  # (1, 4, 1)
    dt = time.perf_counter() - t
    return dict(
        steps=steps, batch=1, memory_tokens=1505, preallocated=max_len is not None, seconds=dt, steps_per_s=steps / dt
    )


def cpu_model() -> str:
    try:
        return next(ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small sizes only, no SaxGPT step")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default="results/bench/transformer_block.json")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    reps = 2 if a.quick else 3
    res = dict(
        machine=dict(
            cpu_count=os.cpu_count(),
            torch_threads=torch.get_num_threads(),
            torch=torch.__version__,
            device="cpu",
            cpu_model=cpu_model(),
            python=platform.python_version(),
            mkldnn=torch.backends.mkldnn.is_available(),
        )
    )
    mm = {n: matmul_flops(n) / 1e9 for n in (512, 1024, 2048)}
    res["matmul_fp32_gflops"] = mm
    peak = max(mm.values())
    print(f"fp32 matmul: {mm} GFLOP/s (peak {peak:.0f})", flush=True)

    sizes = [(4, 256, 256, 4, 1024), (2, 1024, 384, 6, 1536)]
    if not a.quick:
        sizes.append((4, 1500, 384, 6, 1536))
    blocks = []
    for B, T, D, H, F_ in sizes:
        for causal, dropout, mode in [
            (False, 0.0, "auto"),
            (True, 0.0, "auto"),
            (True, 0.1, "output"),
            (True, 0.1, "probs"),
        ]:
            r = bench_block(B, T, D, H, F_, causal, dropout, mode, reps)
            r["fraction_of_matmul_peak"] = r["gflops_per_s"] / peak
            blocks.append(r)
            print(
                f"block B{B} T{T} D{D} causal={causal} drop={dropout}/{mode}: {r['seconds'] * 1e3:.0f} ms "
                f"{r['gflops_per_s']:.0f} GFLOP/s ({100 * r['fraction_of_matmul_peak']:.0f}% of matmul)",
                flush=True,
            )
    res["block_fwd_bwd"] = blocks

    att = [bench_attention(4, 6, 512, 64, reps)]
    if not a.quick:
        att.append(bench_attention(4, 6, 1500, 64, 2))
    for r in att:
        print("attention", r, flush=True)
    res["attention_fwd_bwd"] = att

    res["dropout_fwd_bwd"] = bench_dropout(reps=reps)
    print("dropout", res["dropout_fwd_bwd"], flush=True)

    if not a.quick:
        sax = [bench_saxgpt("auto", 0.1, 2), bench_saxgpt("auto", 0.0, 1), bench_saxgpt("probs", 0.1, 1)]
        for r in sax:
            print("saxgpt-medium train step", r, flush=True)
        res["saxgpt_medium_train_step"] = sax
        dec = [bench_decode(1500, 1500), bench_decode(1500, None)]
        for r in dec:
            print("saxgpt-medium cached decoding", r, flush=True)
        res["saxgpt_medium_cached_decoding"] = dec
    save_json(a.out, res)
    print("wrote", a.out)


if __name__ == "__main__":
    main()
