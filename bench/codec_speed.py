"""Inference speed of the codec and the vocoders, as x real time (seconds of audio per second of compute).

- LyraCodec at the reference implementation's size (255.9 M parameters, strides 2,4,4,8,8), mono, `--reference-seconds`
  (default 10) of 44.1 kHz audio, encode + decode, batch 1 (the reference implementation measured 0.284x real time
  on AMD EPYC 2 cores, fp32 matmul 108 GFLOP/s). Three paths on the same weights and input: `plain_fp32` (the
  training modules as they are), `fp32` and `bf16` (`LyraCodec.for_inference`: folded weight norm, time-major conv
  weights, fused Snake), with the bf16 output's SI-SDR and max error against the fp32 one. `reference_size/
  x_real_time` is the path `for_inference()` picks on this machine (`core.inference_dtype`: bf16 where native).
  Each run: one warm-up on `--warmup-seconds` (compiles the fused Snake), then `--repeats` timed runs;
- the `codec` stage's tiny model (stereo, its sample rate) on `--seconds`;
- vocoders on the same log-mel (`vocos24k` preset, 100 mels, hop 256, from `--seconds` of 24 kHz audio):
  HiFi-GAN (KickWithReverb's widths, upsampling 8,8,2,2 for hop 256) vs Vocos (the `charactr/vocos-mel-24khz` size),
  plain and with the FreeV magnitude-prior head (`mag_prior`).

Random weights (speed does not depend on them). Machine load varies, so the script records the fp32 and bf16 matmul
GFLOP/s of the same process (`yardsticks`, and around each reference-size run), the process CPU time of each run
(`cpu_s`; under contention `seconds / (cpu_s / threads)` estimates the idle figure better than wall time) and
`x_real_time_at_108` = x_real_time * 108 / the run's fp32 yardstick (the figure scaled to the reference's machine; an
approximation when other processes share the cores). Writes JSON to results/bench/codec_speed.json (or `--out`).

    python bench/codec_speed.py [--params params.yaml] [--seconds 10] [--reference-seconds 10] [--threads 2]
                                [--device cpu] [--repeats 1] [--quick | --reference-only]
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
from audiolab.core import inference_dtype, load_section, save_json
from audiolab.eval.bench import matmul_yardstick, yardsticks
from audiolab.eval.metrics import si_sdr
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


def bench_reference_codec(seconds, device, repeats, warmup_seconds=1.0):
    "LyraCodec at the reference size, mono 44.1 kHz: plain fp32, then `for_inference` in fp32 and in bf16."
    cfg = LyraCodecConfig(channels=1)
    torch.manual_seed(0)
    state = LyraCodec(cfg).state_dict()
    x = torch.randn(1, 1, int(seconds * cfg.sample_rate), device=device) * 0.1
    warm = x[..., : int(warmup_seconds * cfg.sample_rate)]
    rows, outs = {}, {}
    for name, precision in (("plain_fp32", None), ("fp32", "fp32"), ("bf16", "bf16")):
        model = LyraCodec(cfg).to(device).eval()
        model.load_state_dict(state)
        if precision is not None:
            model.for_inference(precision)
        with torch.inference_mode():
            model.reconstruct(warm)  # compiles the fused Snake, creates the oneDNN primitives
            gflops = matmul_yardstick(torch.float32, device=str(device))
            walls, cpus = [], []
            for _ in range(repeats):
                sync(device)
                t, c = time.perf_counter(), time.process_time()
                outs[name] = model.decode(model.encode(x), x.shape[-1])
                sync(device)
                walls.append(time.perf_counter() - t)
                cpus.append(time.process_time() - c)
            gflops = (gflops + matmul_yardstick(torch.float32, device=str(device))) / 2
        wall, cpu = statistics.median(walls), statistics.median(cpus)
        rows[name] = dict(
            wall_s=wall,
            cpu_s=cpu,
            x_real_time=seconds / wall,
            x_real_time_from_cpu=seconds / (cpu / torch.get_num_threads()),
            matmul_fp32_gflops=round(gflops, 1),
            x_real_time_at_108=seconds / wall * 108.0 / gflops,
            runs_wall_s=walls,
            runs_cpu_s=cpus,
        )
        model = None  # free the weights before the next path
    y32, y16 = outs["fp32"].float(), outs["bf16"].float()
    default = "bf16" if inference_dtype(device) == torch.bfloat16 else "fp32"
    return dict(
        params=sum(v.numel() for v in state.values()),
        seconds=seconds,
        sample_rate=cfg.sample_rate,
        channels=1,
        strides=list(cfg.strides),
        precision=default,
        x_real_time=rows[default]["x_real_time"],
        **rows,
        fp32_vs_plain_max_abs_err=float((y32 - outs["plain_fp32"]).abs().max()),
        bf16_vs_fp32=dict(
            si_sdr_db=si_sdr(y16, y32),
            max_abs_err=float((y16 - y32).abs().max()),
            max_rel_err=float((y16 - y32).abs().max() / y32.abs().max()),
        ),
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
    ap.add_argument("--reference-seconds", type=float, default=10.0, help="audio length for the reference-size codec")
    ap.add_argument("--warmup-seconds", type=float, default=1.0, help="warm-up input of the reference-size runs")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="tiny models only (seconds)")
    ap.add_argument("--reference-only", action="store_true", help="only the reference-size codec (~1.5 min idle)")
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
        yardsticks=yardsticks(str(device)),
    )
    if not a.quick:
        res["reference_size"] = bench_reference_codec(a.reference_seconds, device, a.repeats, a.warmup_seconds)
    if not a.reference_only:
        res["codec"] = {"tiny": bench_codec(profile_codec_config(a.params), a.seconds, device, a.repeats)}
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
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1, default=str)[:4000])
    return res


if __name__ == "__main__":
    main()
