"""CPU latency of one 2 s kick from `models.kick` (keywords -> U-Net steps -> VAE decode -> vocoder), at the
reference implementation's size and on the trained tiny model.

    python bench/kick_latency.py [--model models/kick/ldm] [--vocoder runs/vocoder/kick/model] [--steps N]
                                 [--sampler dpm++] [--threads 2] [--reps 3] [--compile] [--skip-reference]
                                 [--out results/bench/kick.json]

`reference_size`: KickWithReverb's sizes with random weights (latency does not depend on them): the VAE of
`kick.full`, the U-Net of `kick.full` (the reference's architecture, 5,905,284 parameters besides the keyword encoder)
and HiFi-GAN V1 at `upsample_initial_channel` 256. Two settings, each in fp32 and bf16 (`KickLDM.fast`):
- `ddim50_cfg`: the reference's own setting, DDIM 50 steps with CFG 3.0 (cond + uncond in one batch of 2), VAE
  decode, HiFi-GAN on all 173 frames. KickWithReverb measured 1.47 s on an AMD EPYC with 2 threads, fp32 matmul
  2048³ ~108 GFLOP/s.
- `served`: `KickLDM.generate`'s path at the evaluation's sampler and steps (results/kick/fad.json's choice, else
  DPM-Solver++ 10), vocoding only the active frames. Random weights decode to no particular level, so the frames
  vocoded are those `active_frames` finds in the trained model's decoded mel when one exists, else in a kick-like
  decaying mel.
Each row's `latency_s` is the machine's default precision (`core.inference_dtype`: bf16 where the CPU multiplies it
natively); `by_precision` has both, the max |difference| of the bf16 mel from the fp32 one (same noise), and the
process's fp32/bf16 matmul yardstick (`eval.bench.yardsticks`). On a shared machine divide by
`idle_scale = 108 / yardstick` figures: `latency_s_at_108_gflops` = latency x yardstick / 108.

`trained`: `KickLDM.generate` as served on the trained KickLDM at --model (else an untrained tiny one) with the
HiFi-GAN at --vocoder (else an untrained tiny one).
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from audiolab.core import inference_dtype, load_section, save_json
from audiolab.eval.bench import yardsticks
from audiolab.models.kick import (
    KickLDM,
    KickVAE,
    KickVAEConfig,
    KeywordVocab,
    LatentUNet,
    LatentUNetConfig,
    KICK_SAMPLES,
    active_frames,
)
from audiolab.models.vocoder import HiFiGAN, HiFiGANConfig
from audiolab.nn.conv import fold_weight_norm

IDLE_GFLOPS = 108.0  # fp32 matmul 2048³ of the idle machine the reference figure comes from
VOCAB = KeywordVocab(["deep", "punchy", "sub", "long", "tight", "clicky", "distorted", "short"])


def timed(fn, reps: int, warmup: int = 1):
    "Median wall and process-CPU seconds of `fn()` over `reps` runs after `warmup` runs, and the last result."
    for _ in range(warmup):
        out = fn()
    ts, cs = [], []
    for _ in range(reps):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    return round(statistics.median(ts), 4), round(statistics.median(cs), 4), out


def kick_like(mel: torch.Tensor) -> torch.Tensor:
    "A decaying log-mel of `mel`'s shape: 3 -> -12 over 173 frames over a -5 floor (a trained VAE's decoded silence)."
    g = torch.Generator().manual_seed(0)
    return torch.linspace(3, -12, mel.shape[-1]).clamp_min(-5) + 0.3 * torch.randn(mel.shape, generator=g)


def reference_ldm() -> KickLDM:
    "KickWithReverb-size KickLDM (params.yaml kick.full VAE and U-Net, HiFi-GAN V1 256), random weights."
    full = load_section("kick", "full")
    vae = KickVAE(KickVAEConfig.from_dict(full["vae"]))
    unet = LatentUNet(LatentUNetConfig.from_dict({**full["unet"], "vocab_size": len(VOCAB)}))
    with torch.no_grad():  # zero-initialised output and condition layers would make ε = 0 and CFG a no-op
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.02)
    return KickLDM(vae, unet, VOCAB, vocoder=HiFiGAN(HiFiGANConfig()))


def run_reference(a, served_frames: int | None) -> dict:
    base = reference_ldm()
    kw, res = "deep punchy", {}
    unet_m = sum(p.numel() for n, p in base.unet.named_parameters() if not n.startswith("keywords.")) / 1e6
    for prec in ("fp32", "bf16"):
        ldm = reference_ldm()
        ldm.load_state_dict(base.state_dict())
        ldm.for_inference(prec, compile=a.compile)
        with torch.inference_mode():
            z = ldm.sample_latents(kw, 1, 50, a.guidance, 0, "ddim")
            mel = ldm.vae.decode(z)
            frames = served_frames or active_frames(kick_like(mel))
            # the decoded mel up to the trained kick's last loud frame, silence after: active_frames keeps `frames`
            cut = torch.nn.functional.pad(mel[..., : frames - 8], (0, mel.shape[-1] - frames + 8), value=-30.0)
            assert active_frames(cut) == frames

            def ddim50():
                return ldm.vocode(ldm.vae.decode(ldm.sample_latents(kw, 1, 50, a.guidance, 0, "ddim")), trim=False)

            def served():
                ldm.vae.decode(ldm.sample_latents(kw, 1, a.steps, a.guidance, 0, a.sampler))
                return ldm.vocode(cut)  # random weights decode to no particular level: vocode the trained kick's frames

            parts = dict(
                unet_steps_ddim50_s=timed(lambda: ldm.sample_latents(kw, 1, 50, a.guidance, 0, "ddim"), a.reps)[:2],
                unet_steps_served_s=timed(lambda: ldm.sample_latents(kw, 1, a.steps, a.guidance, 0, a.sampler), a.reps)[
                    :2
                ],
                vae_decode_s=timed(lambda: ldm.vae.decode(z), a.reps)[:2],
                vocoder_173_frames_s=timed(lambda: ldm.vocode(mel, trim=False), a.reps)[:2],
                vocoder_served_frames_s=timed(lambda: ldm.vocode(cut), a.reps)[:2],
            )
            d_wall, d_cpu, wav = timed(ddim50, a.reps)
            s_wall, s_cpu, wav_s = timed(served, a.reps)
        assert wav.shape == wav_s.shape == (1, KICK_SAMPLES)
        res[prec] = dict(
            ddim50_cfg=dict(latency_s=d_wall, cpu_s=d_cpu),
            served=dict(latency_s=s_wall, cpu_s=s_cpu, frames_vocoded=frames),
            parts_wall_cpu_s=parts,
            mel=mel.float(),
        )
    diff = (res["bf16"].pop("mel") - res["fp32"].pop("mel")).abs().max().item()
    ys = yardsticks()
    scale = ys["matmul_fp32_gflops"] / IDLE_GFLOPS
    default = "bf16" if inference_dtype("cpu") == torch.bfloat16 else "fp32"
    out = {
        row: dict(
            latency_s=res[default][row]["latency_s"],
            latency_s_at_108_gflops=round(res[default][row]["latency_s"] * scale, 4),
            precision=default,
            reference_s=1.47,
            target_s=round(1.47 / (2 if row == "ddim50_cfg" else 5), 3),
        )
        for row in ("ddim50_cfg", "served")
    }
    for row in out.values():
        row["speedup_vs_reference_at_108_gflops"] = round(1.47 / row["latency_s_at_108_gflops"], 2)
    return dict(
        **out,
        by_precision=res,
        bf16_vs_fp32_mel_max_abs_diff=round(diff, 4),
        unet_params_m=round(unet_m, 6),
        sampler=a.sampler,
        steps=a.steps,
        guidance=a.guidance,
        compiled_unet=a.compile,
        yardsticks=ys,
        idle_scale=round(IDLE_GFLOPS / ys["matmul_fp32_gflops"], 3),
    )


def load_trained(model: str, vocoder: str) -> tuple[KickLDM, str, str]:
    "The trained KickLDM and HiFi-GAN, else untrained ones of the tiny profiles' sizes."
    if (Path(model) / "kick.json").is_file():
        ldm, weights = KickLDM.from_pretrained(model), f"trained ({model})"
    else:
        unet = LatentUNet(LatentUNetConfig(channels=(32, 64), cond_dim=128, vocab_size=len(VOCAB)))  # kick.tiny
        ldm, weights = KickLDM(KickVAE(KickVAEConfig(channels=(8, 8, 16, 16))), unet, VOCAB), "untrained tiny"
    trained = (Path(vocoder) / "model.safetensors").is_file()
    tiny = HiFiGANConfig(upsample_initial_channel=64, resblock_kernel_sizes=(3,), resblock_dilations=((1, 3),))
    ldm.vocoder = fold_weight_norm((HiFiGAN.from_pretrained(vocoder) if trained else HiFiGAN(tiny)).eval())
    return ldm, weights, f"trained ({vocoder})" if trained else "untrained tiny"


def run_trained(a, ldm: KickLDM) -> dict:
    kw = " ".join(ldm.vocab.words[:2])
    ldm.for_inference(a.precision)
    with torch.inference_mode():
        total, cpu, wav = timed(lambda: ldm.generate(kw, 1, a.steps, a.guidance, 0, a.sampler), a.reps)
        mel = ldm.vae.decode(ldm.sample_latents(kw, 1, a.steps, a.guidance, 0, a.sampler))
    assert wav.shape == (1, KICK_SAMPLES)
    return dict(latency_s=total, cpu_s=cpu, active_frames_of_173=active_frames(mel), keywords=kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/kick/ldm")
    ap.add_argument("--vocoder", default="runs/vocoder/kick/model")
    ap.add_argument("--fad", default="results/kick/fad.json", help="kick_evaluate's table: its sampler and steps")
    ap.add_argument("--steps", type=int, help="served sampler steps (default: the evaluation's choice, else 10)")
    ap.add_argument("--sampler", help="served sampler (default: the evaluation's choice, else dpm++)")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument("--precision", default="auto", help="trained model's precision: auto, fp32 or bf16")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (the reference's run: 2)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--compile", action="store_true", help="compile the U-Net (minutes of inductor on 2 cores)")
    ap.add_argument("--skip-reference", action="store_true", help="only the trained (or tiny) model")
    ap.add_argument("--out", default="results/bench/kick.json")
    a = ap.parse_args()
    chosen = json.loads(Path(a.fad).read_text()).get("chosen", {}) if Path(a.fad).is_file() else {}
    a.steps, a.sampler = a.steps or chosen.get("steps", 10), a.sampler or chosen.get("sampler", "dpm++")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ldm, weights, vocoder = load_trained(a.model, a.vocoder)
    trained = run_trained(a, ldm)
    res = dict(
        what="one 2 s kick at 44.1 kHz, keywords -> waveform, batch 1, CFG 3 as one batch of 2 (cond + uncond)",
        sampler=a.sampler,
        steps=a.steps,
        steps_from=a.fad if chosen else "default",
        trained=dict(weights=weights, vocoder=vocoder, **trained),
        machine=dict(
            cpu=platform.processor() or platform.machine(),
            cores=os.cpu_count(),
            threads=torch.get_num_threads(),
            load_average=[round(x, 2) for x in os.getloadavg()],
            torch=torch.__version__,
            python=platform.python_version(),
        ),
    )
    if not a.skip_reference:
        frames = trained["active_frames_of_173"] if weights.startswith("trained") else None
        res["reference_size"] = run_reference(a, frames)
        res["yardsticks"] = res["reference_size"]["yardsticks"]
    else:
        res["yardsticks"] = yardsticks()
    save_json(Path(a.out), res)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
