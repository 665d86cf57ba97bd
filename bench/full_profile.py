"""Every family at its `full` size, built from params.yaml's `full` blocks through the recipe configs the stages use,
takes real optimizer steps (the Learner, the recipe's losses, optimizers, GAN phases and schedule) on this machine:
parameter count, seconds per step and peak resident memory per family.

    python bench/full_profile.py [--params params.yaml] [--steps 2] [--only melvae,codec] [--threads 2]
                                 [--out results/bench/full_profile.json]   (--only: rerun those, keep the others)

CPU, batch 1, a short crop per family (`CPU_CROPS`: seconds of audio or frames of tokens, so the whole run fits 24 GB
and minutes), fp32, one micro-batch per optimizer step (`grad_accum` 1). Each family runs in its own process, so
`ru_maxrss` (peak RSS) is that family's: the model, its gradients and AdamW state, and the activations of one step.
Step times: every step (the first one pays first-call costs: allocator growth, the tokenizer's k-means), and `step_s`,
the mean of the steps after the first. `bench/gpu_check.py` builds its steps from `build_job` too.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.utils.data import DataLoader

from audiolab.audio import get_preset
from audiolab.core import save_json, seed_everything
from audiolab.data.tokens import PromptTargetCollate
from audiolab.eval.bench import machine, yardsticks
from audiolab.models.audiolm import AudioLM
from audiolab.models.codec import LyraCodec, LyraCodecTask
from audiolab.models.kick import KickVAE, LatentUNet
from audiolab.models.melvae import MelVAE
from audiolab.models.saxgpt import SaxGPT
from audiolab.models.separation import SeparatorNet
from audiolab.models.tokenizer import AudioTokenizer
from audiolab.models.vocoder import VocoderTask
from audiolab.recipes.audiolm import AudioLMTrainConfig
from audiolab.recipes.codec import CodecRecipe
from audiolab.recipes.kick import DiffusionTask, KickConfig, VAETask
from audiolab.recipes.melvae import MelVAETrainConfig
from audiolab.recipes.saxgpt import SaxGPTTrainConfig
from audiolab.recipes.separation import SeparatorRecipe
from audiolab.recipes.tokenizer import TokenizerRecipe
from audiolab.recipes.vocoder import VocoderRecipe
from audiolab.train.learner import Callback, Learner, TrainConfig

# CPU crops: seconds of audio (waveform families), frames (MelVAE: 100 per ~1.07 s; token families: 50 per s)
CPU_CROPS = dict(
    melvae=128,  # mel frames (full segment 256)
    saxgpt=250,  # lead / backing frames (full window 1500)
    kick_vae=None,  # one whole kick mel (128 x 173): the model's fixed input
    kick_unet=None,  # one whole latent (4 x 8 x 11)
    audiolm=250,  # frames of one utterance, prompt + target (full: 5-15 s = 250-750)
    codec=1.0,  # seconds (full segment 65536 samples = 1.49 s)
    tokenizer=1.0,  # seconds (full segment_s 1.0)
    separator=2.0,  # seconds (full segment_s 8.0)
    vocoder_speech=0.34,  # seconds (full segment 16384 samples at 24 kHz)
    vocoder_kick=0.19,  # seconds (full segment 8192 samples at 44.1 kHz)
)
KICK_VOCAB = 64  # keywords of the kick U-Net's vocabulary (the corpus decides it; the count depends on it slightly)


@dataclasses.dataclass
class Job:
    "One family's training step: what the Learner trains, the published network inside it, data and settings."

    model: nn.Module  # the Learner's model (the family's task module)
    net: nn.Module  # the network the family publishes (its parameters are the family's size)
    items: list  # training items; `DataLoader(items, batch_size, collate_fn=collate)` gives the batches
    train: TrainConfig  # the recipe's optimisation settings
    phases: dict | None = None  # GAN families: 'disc' then 'gen'
    collate: Callable | None = None
    crop: str = ""  # what one item holds, in words

    def to_device(self, device) -> Job:
        self.model.to(device)
        return self

    def loader(self, batch_size: int) -> DataLoader:
        return DataLoader(self.items, batch_size=batch_size, shuffle=True, drop_last=True, collate_fn=self.collate)


def _samples(crop: float | None, full: int, sr: int) -> int:
    return full if crop is None else int(crop * sr)


def build_job(family: str, params: str = "params.yaml", profile: str = "full", crop=None, n_items: int = 4) -> Job:
    """`family`'s model and a training item at `profile`'s size; `crop` (seconds or frames, as `CPU_CROPS`) shortens
    the item, None keeps the recipe's training segment. Under `torch.device("meta")` it checks the sizes only (the
    vocoders cannot: torchaudio's mel filterbank reads a value)."""
    g = torch.Generator().manual_seed(0)
    if family == "melvae":
        c = MelVAETrainConfig.from_params("melvae", profile, params)
        T, m = crop or c.segment_frames, c.model
        mels = [torch.randn(T, m.mel_channels, generator=g) * m.mel_std + m.mel_mean for _ in range(n_items)]
        net = MelVAE(m)
        return Job(net, net, [dict(mel=x, length=torch.tensor(T)) for x in mels], c.train, crop=f"{T} mel frames")
    if family == "saxgpt":
        c = SaxGPTTrainConfig.from_params("saxgpt", profile, params)
        T, m = crop or c.model.max_frames, c.model
        net = SaxGPT(m)
        if c.train.ss_max_prob > 0:  # as train_saxgpt
            net.ss = dict(max_prob=c.train.ss_max_prob, start=c.train.ss_start_step, ramp=c.train.ss_ramp_steps)
        codes = [torch.randint(0, m.n_codes, (2, m.num_codebooks, T), generator=g) for _ in range(n_items)]
        return Job(net, net, [(x[0], x[1]) for x in codes], c.train, crop=f"{T} frames backing + lead")
    if family in ("kick_vae", "kick_unet"):
        c = KickConfig.from_params("kick", profile, params)
        vae = KickVAE(c.vae)
        mels = [torch.randn(1, c.vae.n_mels, c.vae.frames, generator=g) * 2.0 - 5.0 for _ in range(n_items)]
        if family == "kick_vae":
            if not mels[0].is_meta:  # meta (a size check): no statistics
                vae.fit_norm(torch.stack(mels))
            return Job(VAETask(vae, c.kl(0)), vae, [(x,) for x in mels], c.vae_train, crop="one kick mel")
        unet = LatentUNet(c.unet.replace(vocab_size=KICK_VOCAB))
        with torch.no_grad():
            z = vae.encode(torch.stack(mels))[0]  # (N, C, h, w): the latent shape the U-Net trains on
        ids = torch.randint(0, KICK_VOCAB, (n_items, c.max_keywords), generator=g)
        return Job(DiffusionTask(unet, p_uncond=c.p_uncond), unet, list(zip(z, ids)), c.diff_train, crop="one latent")
    if family == "audiolm":
        c = AudioLMTrainConfig.from_params("audiolm", profile, params)
        m = c.model
        T = crop or int(c.max_utt_s * m.frame_rate)  # the longest utterance the stage keeps
        codes = [torch.randint(0, m.bins, (m.n_q, T), generator=g) for _ in range(n_items)]
        net = AudioLM(m)
        return Job(net, net, codes, c.train, collate=PromptTargetCollate(c.prompt_ratio), crop=f"{T} frames")
    if family == "codec":
        r = CodecRecipe.from_params("codec", profile, params)
        T = _samples(crop, r.segment, r.sample_rate)
        T -= T % r.model.hop
        task = LyraCodecTask(LyraCodec(r.model), r.loss)
        x = [(0.1 * torch.randn(r.model.channels, T, generator=g),) for _ in range(n_items)]
        return Job(task, task.codec, x, r.train, task.phases(), crop=f"{T} samples x {r.model.channels} ch")
    if family == "tokenizer":
        r = TokenizerRecipe.from_params("tokenizer", profile, params)
        tok = AudioTokenizer(r.model)
        T = _samples(crop, int(r.segment_s * tok.sample_rate), tok.sample_rate)
        x = [(0.1 * torch.randn(r.model.channels, T, generator=g),) for _ in range(n_items)]
        if not x[0][0].is_meta:  # the steps after the AE warm-up: the VQ is on
            tok.init_codebooks(torch.stack([w for (w,) in x]))
        return Job(tok, tok, x, r.train, crop=f"{T} samples")
    if family == "separator":
        r = SeparatorRecipe.from_params("separator", profile, params)
        m = r.model
        T = _samples(crop, int(m.segment_s * m.sample_rate), m.sample_rate)
        stems = [0.1 * torch.randn(2, m.audio_channels, T, generator=g) for _ in range(n_items)]
        net = SeparatorNet(m)
        return Job(net, net, [(s[0], s[1]) for s in stems], r.train, crop=f"{T} samples")
    if family in ("vocoder_speech", "vocoder_kick"):
        r = VocoderRecipe.from_params(family, profile, params)
        sr = get_preset(r.preset).sr
        T = _samples(crop, r.segment, sr)
        task = VocoderTask(r.generator(), r.preset, r.loss)
        x = [(0.1 * torch.randn(1, T, generator=g),) for _ in range(n_items)]
        return Job(task, task.generator, x, r.train, task.phases(), crop=f"{T} samples")
    raise KeyError(f"unknown family {family!r}; known: {sorted(CPU_CROPS)}")


FAMILIES = tuple(CPU_CROPS)


class StepTimer(Callback):
    "Wall time of every optimizer step (CUDA: synchronised), in `times`."

    order = 100

    def __init__(self):
        self.times = []

    def _sync(self, learn):
        if learn.device.type == "cuda":
            torch.cuda.synchronize(learn.device)

    def before_batch(self, learn):
        self._sync(learn)
        self.t0 = time.perf_counter()

    def after_batch(self, learn):
        self._sync(learn)
        self.times.append(time.perf_counter() - self.t0)


def n_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


def train_steps(job: Job, steps: int, batch_size: int = 1, device=None, **train) -> dict:
    """`steps` optimizer steps of `job` with the Learner (`train` overrides the recipe's `TrainConfig`, e.g.
    precision, strategy); the step times, last logs and parameter counts."""
    cfg = job.train.replace(max_steps=steps, grad_accum=1, valid_every=0, **train)
    timer = StepTimer()
    learn = Learner(job.model, job.loader(batch_size), cfg=cfg, phases=job.phases, cbs=[timer], device=device)
    learn.fit()
    later = timer.times[1:] or timer.times
    return dict(
        params=n_params(job.net),
        trainable_params=sum(p.numel() for p in job.model.parameters() if p.requires_grad),
        step_times_s=[round(t, 4) for t in timer.times],
        step_s=round(sum(later) / len(later), 4),
        loss=learn.logs.get("loss", learn.logs.get("gen/loss")),
        finite=all(v == v for v in learn.logs.values() if isinstance(v, float)),
    )


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def profile_family(family: str, a) -> dict:
    "This process: build `family` at full size, take `a.steps` steps on CPU; its figures and peak RSS."
    torch.set_num_threads(a.threads)
    seed_everything(0)
    rss0 = rss_mb()
    t0 = time.perf_counter()
    job = build_job(family, a.params, "full", CPU_CROPS[family])
    build_s, rss_built = time.perf_counter() - t0, rss_mb()
    out = train_steps(job, a.steps, device="cpu", precision="fp32")
    return dict(
        crop=job.crop,
        batch=1,
        build_s=round(build_s, 2),
        **out,
        rss_start_mb=round(rss0),
        rss_after_build_mb=round(rss_built),
        peak_rss_mb=round(rss_mb()),
    )


def run_child(family: str, a) -> dict:
    "`family` in a fresh interpreter (its own peak RSS); its figures, or the error it died of."
    cmd = [sys.executable, __file__, "--child", family, "--params", a.params, "--steps", str(a.steps)]
    cmd += ["--threads", str(a.threads)]
    t0 = time.perf_counter()
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        return dict(error=f"exit {r.returncode}", stderr=r.stderr[-3000:], wall_s=round(time.perf_counter() - t0, 1))
    return dict(json.loads(r.stdout.strip().splitlines()[-1]), wall_s=round(time.perf_counter() - t0, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads per family")
    ap.add_argument("--only", default="", help="comma-separated families (default: all)")
    ap.add_argument("--out", default="results/bench/full_profile.json")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one family, JSON on stdout
    a = ap.parse_args()
    if a.child:
        print(json.dumps(profile_family(a.child, a)))
        return
    families = [f for f in a.only.split(",") if f] or list(FAMILIES)
    old = json.loads(Path(a.out).read_text()) if a.only and Path(a.out).exists() else {}
    res = dict(old.get("families", {}))  # --only: the other families' figures are kept
    for f in families:
        res[f] = run_child(f, a)
        r = res[f]
        gb = r.get("peak_rss_mb", 0) / 1024
        print(
            f"{f:15s} "
            + (
                f"ERROR {r['error']}: {r['stderr'][-300:]}"
                if "error" in r
                else f"{r['params'] / 1e6:8.2f} M  {r['step_s']:7.2f} s/step  peak RSS {gb:5.2f} GB"
            ),
            flush=True,
        )
    out = dict(
        what="full-profile models, real optimizer steps on CPU: batch 1, short crops, fp32, grad_accum 1",
        params_file=a.params,
        steps=a.steps,
        threads=a.threads,
        machine=machine(),
        yardsticks=yardsticks(),
        families=res,
        total_params=sum(r.get("params", 0) for r in res.values()),
        max_peak_rss_mb=max((r.get("peak_rss_mb", 0) for r in res.values()), default=0),
    )
    save_json(a.out, out)
    print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
