"""End-to-end CPU latency of one 2 s kick from `models.kick` (keywords -> U-Net steps -> VAE decode -> vocoder).

    python bench/kick_latency.py [--model models/kick/ldm] [--vocoder runs/vocoder/kick/model] [--steps N]
                                 [--sampler dpm++] [--threads 1] [--reps 5] [--out results/bench/kick.json]

Sampler and steps default to the choice of the `kick_evaluate` stage (results/kick/fad.json: the fewest steps within
10% of DDPM-1000's FAD), else DPM-Solver++ at 10 steps.

Uses the trained KickLDM at --model when it exists, else an untrained one of the tiny profile's sizes; the HiFi-GAN at
--vocoder when it exists, else an untrained one of the tiny `vocoder_kick` size (latency does not depend on the
weights). The JSON says which (`weights`, `vocoder`). `latency_s` is `KickLDM.generate` as served: inference mode,
weight norm folded, and only the frames above the silence floor vocoded (the decayed tail is silence). The reference
implementation's setting (KickWithReverb: DDIM 50 steps with CFG, all 173 frames vocoded) is timed in the same process
as a reference, since a shared machine's speed varies.
"""

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch

from audiolab.core import save_json
from audiolab.models.kick import (
    KickLDM,
    KickVAE,
    KickVAEConfig,
    KeywordVocab,
    LatentUNet,
    LatentUNetConfig,
    KICK_SAMPLES,
    active_frames,
    bake_weight_norm,
)


CPU_S: dict[str, float] = {}


def timed(fn, reps: int, warmup: int = 1, name: str | None = None):
    """Median wall time (s) of `fn()` over `reps` runs after `warmup` runs, and the last result. The median process
    CPU time goes to CPU_S[name]: on a loaded machine it estimates the quiet wall time of a 1-thread run."""
    for _ in range(warmup):
        out = fn()
    ts, cs = [], []
    for _ in range(reps):
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    if name:
        CPU_S[name] = round(statistics.median(cs), 4)
    return statistics.median(ts), out


def load_model(model: str) -> tuple[KickLDM, str]:
    if (Path(model) / "kick.json").is_file():
        return KickLDM.from_pretrained(model), f"trained ({model})"
    vocab = KeywordVocab(["deep", "punchy", "sub", "long", "tight", "clicky", "distorted", "short"])
    unet = LatentUNet(LatentUNetConfig(channels=(32, 64), cond_dim=128, vocab_size=len(vocab)))  # params.yaml kick.tiny
    return KickLDM(
        KickVAE(KickVAEConfig(channels=(8, 8, 16, 16))), unet, vocab
    ), f"untrained tiny (no KickLDM at {model})"


def load_vocoder(path: str):
    "The kick HiFi-GAN at `path`, else an untrained one of the `vocoder_kick` stage's tiny size."
    from audiolab.models.vocoder import HiFiGAN, HiFiGANConfig

    trained = (Path(path) / "model.safetensors").is_file()
    tiny = HiFiGANConfig(
        preset="kick44k", upsample_initial_channel=64, resblock_kernel_sizes=(3,), resblock_dilations=((1, 3),)
    )
    voc = HiFiGAN.from_pretrained(path) if trained else HiFiGAN(tiny)
    what = f"trained ({path})" if trained else f"untrained tiny (no HiFi-GAN at {path})"
    return bake_weight_norm(
        voc.eval()
    ), f"HiFi-GAN V1 kick44k, {what}, {sum(p.numel() for p in voc.parameters()) / 1e6:.2f} M params"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="models/kick/ldm")
    ap.add_argument("--vocoder", default="runs/vocoder/kick/model")
    ap.add_argument(
        "--fad",
        default="results/kick/fad.json",
        help="kick_evaluate's table: its chosen sampler and steps are the defaults",
    )
    ap.add_argument("--steps", type=int, help="sampler steps (default: the evaluation's choice, else 10)")
    ap.add_argument("--sampler", help="sampler (default: the evaluation's choice, else dpm++)")
    ap.add_argument("--guidance", type=float, default=3.0)
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch intra-op threads (default 1: ops at batch 2 are too small to split)",
    )
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--out", default="results/bench/kick.json")
    a = ap.parse_args()
    chosen = json.loads(Path(a.fad).read_text()).get("chosen", {}) if Path(a.fad).is_file() else {}
    a.steps, a.sampler = a.steps or chosen.get("steps", 10), a.sampler or chosen.get("sampler", "dpm++")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    ldm, weights = load_model(a.model)
    ldm.vocoder, vocoder = load_vocoder(a.vocoder)
    kw = " ".join(ldm.vocab.words[:2])
    with torch.inference_mode():
        parts = {}
        parts["unet_steps_s"], z = timed(
            lambda: ldm.sample_latents(kw, 1, a.steps, a.guidance, 0, a.sampler), a.reps, name="unet_steps_s"
        )
        parts["vae_decode_s"], mel = timed(lambda: ldm.vae.decode(z), a.reps, name="vae_decode_s")
        if weights.startswith("untrained"):  # random weights decode to any level:
            mel = torch.zeros_like(mel) + torch.linspace(-2, -22, mel.shape[-1]).clamp_min(-11.5)  # a kick-like decay
        parts["active_frames_of_173"] = active_frames(mel)
        parts["vocoder_s"], _ = timed(lambda: ldm.vocode(mel, trim=True), a.reps, name="vocoder_s")
        parts["vocoder_all_frames_s"], _ = timed(
            lambda: ldm.vocode(mel, trim=False), max(1, a.reps // 2), name="vocoder_all_frames_s"
        )
        total, wav = timed(lambda: ldm.generate(kw, 1, a.steps, a.guidance, 0, a.sampler), a.reps, name="latency_s")
        seed_ref, _ = timed(
            lambda: ldm.vocode(ldm.vae.decode(ldm.sample_latents(kw, 1, 50, a.guidance, 0, "ddim")), trim=False),
            max(1, a.reps // 2),
            warmup=0,
        )
    assert wav.shape == (1, KICK_SAMPLES)
    res = dict(
        what="one 2 s kick at 44.1 kHz, keywords -> waveform (KickLDM.generate), batch 1, CFG in one batched call",
        keywords=kw,
        sampler=a.sampler,
        steps=a.steps,
        steps_from=a.fad if chosen else "default",
        guidance=a.guidance,
        weights=weights,
        vocoder=vocoder,
        latency_s=round(total, 4),
        target_s=0.3,
        meets_target=total <= 0.3,
        parts_s={k: round(v, 4) for k, v in parts.items()},
        cpu_s=CPU_S,
        seed_setting_ddim50_all_frames_s=round(seed_ref, 4),
        params_m=dict(
            vae=round(sum(p.numel() for p in ldm.vae.parameters()) / 1e6, 3),
            unet=round(sum(p.numel() for p in ldm.unet.parameters()) / 1e6, 3),
        ),
        machine=dict(
            cpu=platform.processor() or platform.machine(),
            cores=os.cpu_count(),
            threads=torch.get_num_threads(),
            load_average=[round(x, 2) for x in os.getloadavg()],
            torch=torch.__version__,
            python=platform.python_version(),
        ),
    )
    save_json(Path(a.out), res)
    print(res)


if __name__ == "__main__":
    main()
