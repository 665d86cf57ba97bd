"""Inference speed of the codec and the vocoders, as x real time (seconds of audio per second of compute).

- LyraCodec encode + decode of stereo audio: `tiny` (the `codec` stage's tiny profile from `--params`, 22.05 kHz) on
  `--seconds`, the reference implementation's size (255.9 M parameters, 44.1 kHz) on `--reference-seconds` (default: the
  same; it runs at well under real time on a CPU, so short inputs keep the bench short);
- vocoders on the same log-mel (`vocos24k` preset, 100 mels, hop 256, from `--seconds` of 24 kHz audio):
  HiFi-GAN (KickWithReverb's widths, upsampling 8,8,2,2 for hop 256) vs Vocos (the `charactr/vocos-mel-24khz` size),
  plain and with the FreeV magnitude-prior head (`mag_prior`).

Random weights (speed does not depend on them). Machine load varies, so the script also measures fp32 matmul
GFLOP/s in the same process as a yardstick. Writes JSON to results/bench/codec_speed.json (or `--out`).

    python bench/codec_speed.py [--params params.yaml] [--seconds 10] [--reference-seconds S] [--threads 2]
                                [--device cpu] [--repeats 3] [--quick]
"""

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from audiolab.audio import mel_spectrogram
from audiolab.core import load_section, save_json
from audiolab.models.codec import LyraCodec, LyraCodecConfig
from audiolab.models.vocoder import HiFiGAN, HiFiGANConfig, VocosConfig, VocosVocoder


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(fn, device, repeats):
    "Median wall time of `fn()` over `repeats` runs after one warm-up."
    fn()
    sync(device)
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(device)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), ts


def matmul_gflops(device, n=2048, repeats=5):
    a = torch.randn(n, n, device=device)
    t, _ = timed(lambda: a @ a, device, repeats)
    return 2 * n**3 / t / 1e9


def bench_codec(cfg, seconds, device, repeats):
    model = LyraCodec(cfg).to(device).eval()
    x = torch.randn(1, cfg.channels, int(seconds * cfg.sample_rate), device=device) * 0.1
    with torch.inference_mode():
        enc, enc_ts = timed(lambda: model.encode(x), device, repeats)
        z = model.encode(x)
        dec, dec_ts = timed(lambda: model.decode(z, x.shape[-1]), device, repeats)
    n_params = sum(p.numel() for p in model.parameters())
    model = None  # free the weights before the next run
    return dict(
        params=n_params,
        seconds=seconds,
        sample_rate=cfg.sample_rate,
        channels=cfg.channels,
        encode_s=enc,
        decode_s=dec,
        encode_decode_s=enc + dec,
        x_real_time=seconds / (enc + dec),
        runs_encode_s=enc_ts,
        runs_decode_s=dec_ts,
    )


def bench_vocoder(model, mel, seconds, device, repeats):
    model = model.to(device).eval()
    with torch.inference_mode():
        t, ts = timed(lambda: model(mel), device, repeats)
        out_len = model(mel).shape[-1]
    return dict(
        params=sum(p.numel() for p in model.parameters()),
        seconds=seconds,
        wall_s=t,
        runs_s=ts,
        x_real_time=seconds / t,
        output_samples=out_len,
    )


def profile_codec_config(params: str, profile: str = "tiny") -> LyraCodecConfig:
    "The `codec` stage's model for `profile` (its sample rate included)."
    return LyraCodecConfig.from_dict(load_section("codec", profile, params)["model"])


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml", help="where the tiny codec's config comes from")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument(
        "--reference-seconds",
        type=float,
        default=None,
        help="audio length for the reference-size codec (default: --seconds)",
    )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="tiny models only (seconds)")
    ap.add_argument("--out", default="results/bench/codec_speed.json")
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    torch.manual_seed(0)
    res = dict(
        machine=dict(
            platform=platform.platform(),
            processor=platform.processor(),
            cpus=os.cpu_count(),
            torch=torch.__version__,
            threads=torch.get_num_threads(),
            device=str(device),
            cuda=torch.cuda.get_device_name(device) if device.type == "cuda" else None,
            load_avg=os.getloadavg(),
        ),
        matmul_gflops=matmul_gflops(device),
    )
    res["codec"] = {"tiny": bench_codec(profile_codec_config(a.params), a.seconds, device, a.repeats)}
    if not a.quick:
        res["codec"]["reference_size"] = bench_codec(
            LyraCodecConfig(), a.reference_seconds or a.seconds, device, a.repeats
        )
    # vocoders on one mel
    audio = torch.randn(1, int(a.seconds * 24000), device=device) * 0.1
    mel = mel_spectrogram(audio, "vocos24k")  # (1, 100, frames)
    hifi_cfg = HiFiGANConfig("vocos24k", (8, 8, 2, 2), (16, 16, 4, 4), 256 if not a.quick else 32)
    voc_cfg = VocosConfig() if not a.quick else VocosConfig(dim=64, intermediate_dim=192, num_layers=2)
    res["vocoder"] = dict(
        mel_shape=list(mel.shape),
        hifigan=bench_vocoder(HiFiGAN(hifi_cfg), mel, a.seconds, device, a.repeats),
        vocos=bench_vocoder(VocosVocoder(voc_cfg), mel, a.seconds, device, a.repeats),
        vocos_mag_prior=bench_vocoder(
            VocosVocoder(dataclasses.replace(voc_cfg, mag_prior=True)), mel, a.seconds, device, a.repeats
        ),
    )
    res["machine"]["load_avg_end"] = os.getloadavg()
    save_json(Path(a.out), res)
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1, default=str)[:3000])
    return res


if __name__ == "__main__":
    main()
