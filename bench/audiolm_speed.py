"""AudioLM AR inference speed with vs without the KV cache: a 3 s prompt (150 frames at 50 Hz, 4 quantizers)
continued by 10 s (500 frames), at the reference VALL-E size the design table quotes (d512 × 6 layers, 8 heads,
1024-entry codebooks; random weights, EOS suppressed so every run makes all 500 frames). Also times the NAR fill of
quantizers 2-4 and checks that greedy (temperature 0) decoding gives identical tokens with and without the cache.

    python bench/audiolm_speed.py [--threads N] [--full-nocache] [--check-frames 50] [--out results/bench/audiolm.json]

The no-cache path recomputes `[prompt | BOS, t1..tk]` for every new frame (as the reference code does). By default its
500-frame time is the sum of per-step costs measured at 6 sequence lengths and interpolated (a full run takes ~10 min
on a loaded 2-core machine); `--full-nocache` runs it end to end instead. Both wall time and process CPU time are
recorded: on a shared machine the CPU-time rate (one thread) is the closer estimate of an idle machine.
Reference: VALL-E's public code (no cache) makes 5.6 frames/s on a 2-core machine; targets: >= 140 frames/s
with the cache and >= 10x our own no-cache path.

The rows compared with the reference implementation at its sizes (`--reference-sizes`, ~2 min on an idle 2-core
machine): a 353-token context (352 prompt frames + BOS) continued by 750 frames, at d512 × 6 (8 heads) and d1024 × 12
(16 heads), cached: eager fp32, compiled steps in fp32 and compiled in the machine's default precision (bf16 where
the CPU multiplies it natively), against the reference implementation's 3.12 and 0.84 frames/s (no cache) on the AMD
kind of machine (2 cores, fp32 matmul 2048^3 ~ 108 GFLOP/s); targets >= 78 and >= 21 (~5 min with the compiling):

    python bench/audiolm_speed.py --threads 2 --reference-sizes --out results/bench/audiolm_reference.json

`yardsticks` holds the fp32 and bf16 matmul GFLOP/s of the same process; `*_at_108` scale a rate to 108 GFLOP/s;
`reference_size` the compiled fp32 rates (the same computation as the reference's) and, under `default_precision`,
the compiled rates in the machine's default precision (bf16 on CPUs with native bf16: half the weight bytes per step,
which bound d1024's fp32 step; `nbs/45_models.audiolm.ipynb` tests bf16 against fp32).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from audiolab.core import inference_dtype, save_json
from audiolab.eval.bench import machine, yardsticks
from audiolab.models.audiolm import AudioLM, AudioLMConfig


def timed(fn):
    "(result, wall seconds, process CPU seconds) of `fn()`."
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


REFERENCE_SIZES = {"d512x6": (512, 6, 8, 3.12, 78.0), "d1024x12": (1024, 12, 16, 0.84, 21.0)}  # dim, layers, heads,
# the reference implementation's frames/s (no cache) and the target


VARIANTS = {"fp32": ("fp32", False), "fp32_compiled": ("fp32", True), "default_compiled": ("auto", True)}


def reference_rows(prompt_frames: int = 352, new_frames: int = 750, variants=tuple(VARIANTS)) -> dict:
    """Cached AR frames/s at the reference sizes, temperature 1 (EOS suppressed: all `new_frames` generated), per
    variant of `VARIANTS`: eager fp32, compiled steps (`generate_ar(compiled=True)`) in fp32 and in the machine's
    default precision (`core.inference_dtype`). The compile time is measured apart (the first run, same shapes)."""
    yard = yardsticks()
    print(yard, flush=True)
    rows = {}
    for name, (dim, layers, heads, ref, target) in REFERENCE_SIZES.items():
        cfg = AudioLMConfig(n_q=4, bins=1024, dim=dim, heads=heads, layers=layers, dropout=0.0)
        torch.manual_seed(0)
        model = AudioLM(cfg).eval()
        prompt = torch.randint(0, cfg.bins, (1, cfg.n_q, prompt_frames), generator=torch.Generator().manual_seed(0))
        row = dict(reference_frames_per_s=ref, target_frames_per_s=target, context_tokens=prompt_frames + 1)
        for variant in variants:
            prec, compiled = VARIANTS[variant]
            kw = dict(temperature=1.0, precision=prec, generator=torch.Generator().manual_seed(0), compiled=compiled)
            warm = new_frames if compiled else 8  # a compiled step is made for the generation's shapes
            _, warm_s, _ = timed(lambda: model.generate_ar(prompt, warm, min_new_tokens=warm, **kw))
            (q1, _), w, c = timed(lambda: model.generate_ar(prompt, new_frames, min_new_tokens=new_frames, **kw))
            assert q1.shape[1] == new_frames
            fps = new_frames / w
            row[variant] = dict(
                dtype=str(inference_dtype(torch.device("cpu"), prec)),
                first_run_s=warm_s,  # compiled: compiling + one generation
                wall_s=w,
                cpu_s=c,
                frames_per_s=fps,
                frames_per_cpu_s=new_frames / c,
                frames_per_s_at_108=fps * 108 / yard["matmul_fp32_gflops"],
                ratio_to_reference=fps / ref,
                ratio_to_reference_at_108=fps * 108 / yard["matmul_fp32_gflops"] / ref,
            )
            print(name, variant, row[variant], flush=True)
        rows[name] = row
    equal_size = {}  # compiled steps in fp32 (the same computation as the reference's) and in the default precision
    for name, row in rows.items():
        size = equal_size[name.split("x")[0]] = {}
        if "fp32_compiled" in row:
            size["frames_per_s"] = row["fp32_compiled"]["frames_per_s"]
        if "default_compiled" in row:
            size["default_precision"] = {k: row["default_compiled"][k] for k in ("dtype", "frames_per_s")}
    return dict(
        yardsticks=yard,
        reference_size=equal_size,  # the rows compared with the reference (eval.bench.REFERENCE_ROWS)
        prompt_frames=prompt_frames,
        new_frames=new_frames,
        rows=rows,
        machine=machine(),
    )


def nocache_estimate(model: AudioLM, prompt, tn: int, points: int = 6) -> tuple[float, float, list]:
    "Wall/CPU seconds of `tn` no-cache steps, integrated from single-step costs at `points` sequence lengths."
    ks = [round(i * (tn - 1) / (points - 1)) for i in range(points)]
    rows = []
    for k in ks:
        seq = torch.randint(0, model.cfg.bins, (1, k + 1), device=prompt.device)
        seq[:, 0] = model.cfg.bos

        def step():
            return model.ar_logits(prompt, None, seq, None)[:, -1].argmax(-1)

        with torch.no_grad():
            step()
            _, w, c = timed(step)
        rows.append(dict(target_len=k + 1, wall_s=w, cpu_s=c))

    def interp(key):
        return sum(float(np.interp(t, ks, [r[key] for r in rows])) for t in range(tn))

    return interp("wall_s"), interp("cpu_s"), rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--prompt-s", type=float, default=3.0)
    ap.add_argument("--new-s", type=float, default=10.0)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--full-nocache", action="store_true", help="run the no-cache generation end to end")
    ap.add_argument(
        "--check-frames", type=int, default=50, help="frames compared cache vs no cache (without --full-nocache)"
    )
    ap.add_argument("--reference-sizes", action="store_true", help="only the reference-size rows (see above)")
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS), help="reference-size runs")
    ap.add_argument("--out", default="results/bench/audiolm.json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    if a.reference_sizes:
        res = reference_rows(variants=a.variants)
        save_json(a.out, res)
        return res
    cfg = AudioLMConfig(n_q=4, bins=1024, dim=a.dim, heads=a.heads, layers=a.layers, dropout=0.0, frame_rate=50.0)
    torch.manual_seed(0)
    model = AudioLM(cfg).eval().to(a.device)
    tp, tn = int(a.prompt_s * cfg.frame_rate), int(a.new_s * cfg.frame_rate)
    prompt = torch.randint(0, cfg.bins, (1, cfg.n_q, tp), generator=torch.Generator().manual_seed(0)).to(a.device)
    kw = dict(temperature=0, min_new_tokens=tn)  # greedy, all frames generated

    model.generate_ar(prompt, 20, use_cache=True, **{**kw, "min_new_tokens": 20})  # warm-up
    (q_cache, _), t_cache, c_cache = timed(lambda: model.generate_ar(prompt, tn, use_cache=True, **kw))
    print(f"cache: {tn} frames in {t_cache:.1f} s wall / {c_cache:.1f} s CPU", flush=True)
    if a.full_nocache:
        (q_nc, _), t_nc, c_nc = timed(lambda: model.generate_ar(prompt, tn, use_cache=False, **kw))
        same, checked, method, steps = bool(torch.equal(q_cache, q_nc)), tn, "full run", []
    else:
        t_nc, c_nc, steps = nocache_estimate(model, prompt, tn)
        n = min(a.check_frames, tn)
        q_nc, _ = model.generate_ar(prompt, n, use_cache=False, temperature=0, min_new_tokens=n)
        same, checked, method = bool(torch.equal(q_cache[:, :n], q_nc)), n, "sum of interpolated per-step costs"
    print(
        f"no cache ({method}): {t_nc:.1f} s wall / {c_nc:.1f} s CPU; identical over {checked} frames: {same}",
        flush=True,
    )
    _, t_nar, c_nar = timed(lambda: model.generate_nar(prompt, q_cache))
    res = dict(
        config=dict(
            dim=a.dim,
            layers=a.layers,
            heads=a.heads,
            n_q=cfg.n_q,
            bins=cfg.bins,
            frame_rate=cfg.frame_rate,
            params_ar=sum(p.numel() for n, p in model.named_parameters() if n.startswith("ar_")),
            params_total=sum(p.numel() for p in model.parameters()),
        ),
        prompt_frames=tp,
        new_frames=tn,
        device=a.device,
        nocache_method=method,
        nocache_step_samples=steps,
        ar_cache_wall_s=t_cache,
        ar_cache_cpu_s=c_cache,
        ar_nocache_wall_s=t_nc,
        ar_nocache_cpu_s=c_nc,
        nar_fill_wall_s=t_nar,
        nar_fill_cpu_s=c_nar,
        ar_frames_per_s_cache=tn / t_cache,
        ar_frames_per_s_nocache=tn / t_nc,
        ar_frames_per_s_cache_cpu=tn / c_cache,
        ar_frames_per_s_nocache_cpu=tn / c_nc,
        speedup=t_nc / t_cache,
        speedup_cpu=c_nc / c_cache,
        realtime_factor_cache=(tn / cfg.frame_rate) / (t_cache + t_nar),
        identical_tokens_temperature0=same,
        identical_checked_frames=checked,
        targets=dict(speedup_min=10.0, frames_per_s_cache_min=140.0, reference_vall_e_nocache_frames_per_s=5.6),
        meets=dict(
            speedup=t_nc / t_cache >= 10.0,
            frames_per_s_wall=tn / t_cache >= 140.0,
            frames_per_s_cpu=tn / c_cache >= 140.0,
            identical=same,
        ),
        machine=machine(),
    )
    save_json(a.out, res)
    print(
        {
            k: (round(v, 3) if isinstance(v, float) else v)
            for k, v in res.items()
            if k not in ("machine", "config", "targets", "nocache_step_samples")
        }
    )
    return res


if __name__ == "__main__":
    main()
