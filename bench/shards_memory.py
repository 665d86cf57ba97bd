"""Peak memory and speed of streaming sharded tokenization (`data.shards`) vs the corpus size.

A synthetic LibriTTS-layout tree (24 kHz speech-like tones + noise, `--seconds` per utterance) is tokenized by a small
untrained tokenizer of the tiny profile's size (`params.yaml` tokenizer.tiny model; codebooks k-means-initialised on
noise: speed, not quality) into shards, for N and 4N utterances and with 1 and 2 worker processes. Each run is a fresh
subprocess; its peak RSS is `getrusage(RUSAGE_SELF)` of the run and `getrusage(RUSAGE_CHILDREN)` of its spawned workers.
For contrast, the in-memory path it replaced (every waveform loaded before encoding) runs on the same trees.
Acceptance: the streaming peak RSS at 4N is within 20 % of N's. Writes JSON (with the `machine` yardstick) to
results/bench/shards_memory.json.

    python bench/shards_memory.py [--n 40] [--seconds 4] [--threads 2]
"""

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from audiolab.core import load_section, save_json
from audiolab.data.shards import plan_audio, write_shards
from audiolab.data.speech import read_libritts
from audiolab.data.tokens import SpeechTokens
from audiolab.eval.bench import machine
from audiolab.models.tokenizer import AudioTokenizer, TokenizerConfig


def make_tree(root: Path, n: int, seconds: float, sr: int = 24000, seed: int = 0) -> Path:
    "`n` utterances of `seconds` ± 20 % in LibriTTS layout (10 speakers), written with soundfile."
    g = np.random.default_rng(seed)
    for j in range(n):
        d = root / "train-clean-100" / f"{100 + j % 10}" / "1"
        d.mkdir(parents=True, exist_ok=True)
        m = int(seconds * g.uniform(0.8, 1.2) * sr)
        t = np.arange(m) / sr
        wav = 0.3 * np.sin(2 * np.pi * (100 + 7 * (j % 30)) * t * (1 + 0.1 * np.sin(3 * t))) + 0.02 * g.standard_normal(
            m
        )
        sf.write(d / f"{100 + j % 10}_1_{j:06d}_000000.wav", wav.astype(np.float32), sr)
    return root


def make_tokenizer(path: Path) -> Path:
    "The tiny profile's tokenizer, untrained, codebooks k-means-initialised by one training-mode pass on noise."
    torch.manual_seed(0)
    tok = AudioTokenizer(TokenizerConfig(**load_section("tokenizer", "tiny", "params.yaml")["model"]))
    tok.train()
    with torch.no_grad():
        tok(0.1 * torch.randn(4, 1, tok.sample_rate))
    tok.save_pretrained(path)
    return path


def run(root: str, tok_dir: str, out: str, workers: int, mode: str, threads: int) -> dict:
    "One measured run (in its own process): tokenize every utterance of `root` into `out`."
    torch.set_num_threads(threads)
    items = read_libritts(root)
    enc = SpeechTokens(tok_dir)
    batches, skipped = plan_audio(items, enc.tok.sample_rate, 16.0)
    audio_s = sum(sf.info(it["path"]).duration for it in items)
    t0 = time.perf_counter()
    if mode == "shards":
        ix = write_shards(out, items, enc, batches, "bench", workers=workers, keep=("utt_id",), skipped=skipped)
        n = len(ix["entries"])
    else:  # the replaced in-memory path: every waveform first, then the same batches
        wavs = [enc.load(it) for it in items]
        with torch.inference_mode():
            codes = [r for b in batches for r in enc.encode([wavs[i] for i in b], [items[i] for i in b])]
        n = len(codes)
    wall = time.perf_counter() - t0
    kb = 1024  # ru_maxrss is in KiB on Linux
    self_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / kb
    child_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kb
    return dict(
        mode=mode,
        workers=workers,
        utterances=n,
        audio_s=round(audio_s, 1),
        wall_s=round(wall, 2),
        x_realtime=round(audio_s / wall, 1),
        peak_rss_mb=round(max(self_mb, child_mb), 1),
        peak_rss_self_mb=round(self_mb, 1),
        peak_rss_workers_mb=round(child_mb, 1),
    )


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=40, help="utterances of the small corpus (the large one has 4n)")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of a run (split among its workers)")
    ap.add_argument("--out", default="results/bench/shards_memory.json")
    ap.add_argument("--run", nargs=5, metavar=("ROOT", "TOK", "OUT", "WORKERS", "MODE"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.run:
        root, tok, out, workers, mode = a.run
        print(json.dumps(run(root, tok, out, int(workers), mode, a.threads)))
        return {}
    tmp = Path(tempfile.mkdtemp(prefix="shards_bench."))
    tok = make_tokenizer(tmp / "tok")
    rows = []
    for n in (a.n, 4 * a.n):
        root = make_tree(tmp / f"c{n}", n, a.seconds)
        for mode, workers in (("shards", 1), ("shards", 2), ("in_memory", 1)):
            cmd = [sys.executable, __file__, "--threads", str(a.threads), "--run"]
            cmd += [str(root), str(tok), str(tmp / f"s{n}_{mode}_{workers}"), str(workers), mode]
            res = subprocess.run(cmd, capture_output=True, text=True, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], flush=True)

    def peak(mode, workers, n):
        return next(r["peak_rss_mb"] for r in rows if (r["mode"], r["workers"], r["utterances"]) == (mode, workers, n))

    growth = {
        f"{m}_w{w}": round(peak(m, w, 4 * a.n) / peak(m, w, a.n) - 1, 3)
        for m, w in (("shards", 1), ("shards", 2), ("in_memory", 1))
    }
    report = dict(
        machine=machine(),
        n=a.n,
        seconds=a.seconds,
        threads=a.threads,
        tokenizer="tiny profile (params.yaml tokenizer.tiny model), untrained",
        runs=rows,
        peak_rss_growth_4n_over_n=growth,
        meets_20pct=all(v < 0.2 for k, v in growth.items() if k.startswith("shards")),
    )
    save_json(a.out, report)
    print(json.dumps({k: report[k] for k in ("peak_rss_growth_4n_over_n", "meets_20pct")}))
    return report


if __name__ == "__main__":
    main()
