"""AudioLM AR inference speed with vs without the KV cache: a 3 s prompt (150 frames at 50 Hz, 4 quantizers)
continued by 10 s (500 frames), at the reference VALL-E size the design table quotes (d512 × 6 layers, 8 heads,
1024-entry codebooks; random weights, EOS suppressed so every run makes all 500 frames). Checks that greedy
(temperature 0) decoding gives identical tokens both ways, and times the NAR fill of quantizers 2-4.

    python bench/audiolm_speed.py [--threads N] [--new-s 10] [--prompt-s 3] [--out results/bench/audiolm.json]

Reference: the seed's public VALL-E code (no cache) makes 5.6 frames/s here; the target is >= 140 frames/s with
the cache and >= 10x our own no-cache path. Times are single runs after a warm-up (the machine is shared; the load
average is recorded beside them).
"""
from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from audiolab.core import save_json
from audiolab.models.audiolm import AudioLM, AudioLMConfig


def machine() -> dict:
    "What ran the benchmark."
    return dict(platform=platform.platform(), processor=platform.processor() or platform.machine(), python=platform.python_version(),
                torch=torch.__version__, cpu_count=os.cpu_count(), threads=torch.get_num_threads(),
                load_avg_1m=os.getloadavg()[0], cuda=torch.cuda.get_device_name() if torch.cuda.is_available() else None)


def timed(fn):
    t = time.perf_counter(); out = fn(); return out, time.perf_counter() - t


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    ap.add_argument("--prompt-s", type=float, default=3.0); ap.add_argument("--new-s", type=float, default=10.0)
    ap.add_argument("--dim", type=int, default=512); ap.add_argument("--layers", type=int, default=6); ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default="results/bench/audiolm.json")
    a = ap.parse_args(argv)
    if a.threads: torch.set_num_threads(a.threads)
    cfg = AudioLMConfig(n_q=4, bins=1024, dim=a.dim, heads=a.heads, layers=a.layers, dropout=0.0, frame_rate=50.0)
    torch.manual_seed(0)
    model = AudioLM(cfg).eval().to(a.device)
    tp, tn = int(a.prompt_s * cfg.frame_rate), int(a.new_s * cfg.frame_rate)
    prompt = torch.randint(0, cfg.bins, (1, cfg.n_q, tp), generator=torch.Generator().manual_seed(0)).to(a.device)
    kw = dict(temperature=0, min_new_tokens=tn)                 # greedy, all frames generated

    model.generate_ar(prompt, 20, use_cache=True, **{**kw, "min_new_tokens": 20})       # warm-up
    (q_cache, _), t_cache = timed(lambda: model.generate_ar(prompt, tn, use_cache=True, **kw))
    (q_nocache, _), t_nocache = timed(lambda: model.generate_ar(prompt, tn, use_cache=False, **kw))
    _, t_nar = timed(lambda: model.generate_nar(prompt, q_cache))
    same = bool(torch.equal(q_cache, q_nocache))
    res = dict(
        config=dict(dim=a.dim, layers=a.layers, heads=a.heads, n_q=cfg.n_q, bins=cfg.bins, frame_rate=cfg.frame_rate,
                    params_ar=sum(p.numel() for n, p in model.named_parameters() if n.startswith("ar_")),
                    params_total=sum(p.numel() for p in model.parameters())),
        prompt_frames=tp, new_frames=tn, device=a.device,
        ar_cache_s=t_cache, ar_nocache_s=t_nocache, nar_fill_s=t_nar,
        ar_frames_per_s_cache=tn / t_cache, ar_frames_per_s_nocache=tn / t_nocache,
        speedup=t_nocache / t_cache, total_frames_per_s_cache=tn / (t_cache + t_nar),
        realtime_factor_cache=(tn / cfg.frame_rate) / (t_cache + t_nar),
        identical_tokens_temperature0=same,
        targets=dict(speedup_min=10.0, frames_per_s_cache_min=140.0, reference_vall_e_nocache_frames_per_s=5.6),
        meets=dict(speedup=t_nocache / t_cache >= 10.0, frames_per_s=tn / t_cache >= 140.0, identical=same),
        machine=machine())
    save_json(a.out, res)
    print({k: (round(v, 3) if isinstance(v, float) else v) for k, v in res.items() if k not in ("machine", "config", "targets")})
    return res


if __name__ == "__main__":
    main()
