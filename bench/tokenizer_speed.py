"""Speed of the shared tokenizer and the separator, as x real time (seconds of audio per second of compute).

- AudioTokenizer (32 kHz, hop 640, 4 codebooks): `encode`, `encode_long` (chunked, as the SaxGPT tokenize step runs
  it) and `decode` at the tiny profile's size (n_filters 8, 256 bins) and, unless `--quick`, at encodec_32khz's
  size (n_filters 64, 2 LSTM layers, 2048 bins);
- Separator (small HTDemucs lead/backing, the tiny profile's size): `lead_backing` on mono 32 kHz audio.

Random weights (speed does not depend on them; codebooks filled with random vectors). Writes JSON with a `machine`
record to results/bench/tokenizer_speed.json (or `--out`).

    python bench/tokenizer_speed.py [--seconds 10] [--repeats 3] [--threads N] [--quick]
"""

import argparse
import json
import os
import platform
import statistics
import time
import warnings
from pathlib import Path

import torch

from audiolab.core import save_json
from audiolab.models.tokenizer import AudioTokenizer, TokenizerConfig
from audiolab.models.separation import Separator, SeparatorConfig, SeparatorNet

SIZES = dict(
    tiny=dict(n_filters=8, dimension=64, lstm=1, bins=256),
    encodec_32khz=dict(n_filters=64, dimension=128, lstm=2, bins=2048),
)


def timed(fn, repeats):
    "Median wall time of `fn()` over `repeats` runs after one warm-up."
    fn()
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts)


def bench_tokenizer(size, seconds, repeats):
    tok = AudioTokenizer(TokenizerConfig(**SIZES[size], chunk_len_s=min(25.0, seconds / 2))).eval()
    for layer in tok.quantizer.vq.layers:  # random codebooks stand in for trained ones
        cb = layer._codebook
        cb.embed.normal_()
        cb.inited.fill_(1)
    x = 0.1 * torch.randn(1, 1, int(seconds * tok.sample_rate))
    with torch.inference_mode():
        enc = timed(lambda: tok.encode(x), repeats)
        enc_long = timed(lambda: tok.encode_long(x), repeats)
        codes = tok.encode(x)
        dec = timed(lambda: tok.decode(codes), repeats)
    return dict(
        params=sum(p.numel() for p in tok.parameters()),
        seconds=seconds,
        frames=codes.shape[-1],
        chunk_len_s=tok.cfg.chunk_len_s,
        encode_s=enc,
        encode_long_s=enc_long,
        decode_s=dec,
        encode_x_real_time=seconds / enc,
        encode_long_x_real_time=seconds / enc_long,
        decode_x_real_time=seconds / dec,
    )


def bench_separator(seconds, repeats):
    net = SeparatorNet(SeparatorConfig(channels=8, depth=3, nfft=1024, t_layers=1, t_heads=2, segment_s=2.0))
    sep = Separator(net)
    x = 0.1 * torch.randn(1, int(seconds * 32000))
    t = timed(lambda: sep.lead_backing(x, 32000), repeats)
    return dict(params=sum(p.numel() for p in net.parameters()), seconds=seconds, separate_s=t, x_real_time=seconds / t)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--quick", action="store_true", help="tiny sizes only")
    ap.add_argument("--out", default="results/bench/tokenizer_speed.json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    res = dict(
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor(),
            cpus=os.cpu_count(),
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            load_avg=os.getloadavg(),
        )
    )
    res["tokenizer"] = {s: bench_tokenizer(s, a.seconds, a.repeats) for s in (["tiny"] if a.quick else list(SIZES))}
    res["separator"] = {"tiny": bench_separator(a.seconds, a.repeats)}
    res["machine"]["load_avg_end"] = os.getloadavg()
    save_json(Path(a.out), res)
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))
    return res


if __name__ == "__main__":
    main()
