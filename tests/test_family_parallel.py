"""Every family under data parallelism (issue #20): its tiny config trained 3 steps on 2 gloo ranks (DDP, also with
`grad_accum: 2`, FSDP2 for AudioLM, MelVAE and LyraCodec, and `grad_checkpoint: true` for the transformer families)
ends with the weights and losses of 1 process on the same global batch (without activation checkpointing), to 1e-6
(measured: 0 for most cases, 7e-9 at most).

Two torchrun jobs run every case one after the other (one interpreter start per job): 1 process with `2 * A` micro-
batches per step, and 2 ranks with `A` each (`A` = the case's `grad_accum`); every micro-batch holds one example, so
rank r's micro-batch m on 2 ranks is micro-batch `2 m + r` of the single process (the sampler deals examples out in
that order). The tokenizer's EMA codebooks update once per forward with the statistics of the global batch (summed over
ranks), so its single process takes both ranks' examples as one micro-batch of 2. Each family's module is built as
its recipe builds it (the task wrappers, GAN phases) from its section of params.yaml (tiny profile) and trained by the
Learner on random data of the family's shapes (the vocoders: by their recipe's runner,
`recipes.vocoder.train_vocoder`). Families that draw random numbers in their training step (dropout, noise,
timesteps, crops) draw them from a seed of (step, global micro-batch index) (`Pinned`), so that the example a rank
holds sees the draws it sees in one process. The runs compute in float64: in float32 Adam turns the last-bit
differences of summing in another order (ranks vs micro-batches) into differences of up to 1.5e-4 after 3 steps, on
gradient entries near zero.
"""

from __future__ import annotations
import dataclasses
import json
import math
import os
import subprocess
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from audiolab.core import Config, load_section, seed_everything
from audiolab.data.kicks import KICK_MEL_SHAPE
from audiolab.data.tokens import PromptTargetCollate, TokenUtterances
from audiolab.models.audiolm import AudioLM, AudioLMConfig
from audiolab.models.codec import LyraCodec, LyraCodecTask
from audiolab.models.kick import KickVAE, LatentUNet
from audiolab.models.melvae import MelVAE, MelVAEConfig
from audiolab.models.saxgpt import SaxGPT, SaxGPTConfig
from audiolab.models.separation import SeparatorNet
from audiolab.models.tokenizer import AudioTokenizer
from audiolab.nn.diffusion import NoiseSchedule
from audiolab.recipes.codec import CodecRecipe
from audiolab.recipes.kick import DiffusionTask, KickConfig, VAETask
from audiolab.recipes.separation import SeparatorRecipe
from audiolab.recipes.tokenizer import TokenizerRecipe
from audiolab.recipes.vocoder import VocoderRecipe, train_vocoder
from audiolab.train import distributed as D
from audiolab.train.distributed import block_modules, torchrun_command
from audiolab.train.learner import Learner, TrainConfig

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
STEPS, N = 3, 16  # optimizer steps; examples per data set
TOL = 1e-6


def tiny(section: str) -> dict:
    return load_section(section, "tiny", str(PARAMS))


class Pinned(nn.Module):
    "A family's module whose training calls draw their random numbers from a seed of (step, global micro-batch)."

    def __init__(self, inner: nn.Module, accum: int):
        super().__init__()
        self.inner, self.accum, self.calls = inner, accum, {}

    def fsdp_blocks(self) -> list[nn.Module]:
        return block_modules(self.inner)

    def phases(self):
        return self.inner.phases() if hasattr(self.inner, "phases") else None

    def training_step(self, batch, phase: str | None = None, ctx: dict | None = None):
        n = self.calls.get(phase, 0)
        self.calls[phase] = n + 1
        step, m = divmod(n, self.accum)
        seed_everything(1000 * step + m * D.world_size() + D.rank())
        if phase is None:
            return self.inner.training_step(batch)
        return self.inner.training_step(batch, phase=phase, ctx=ctx)


class Items(Dataset):
    "Dicts of tensors, one per example."

    def __init__(self, items: list[dict]):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def saxgpt(gc: bool = False):
    cfg = SaxGPTConfig.from_dict({**tiny("saxgpt")["model"], "grad_checkpoint": gc})
    K, V = cfg.num_codebooks, cfg.padding_idx
    codes = torch.randint(0, V, (N, 2, K, 24), generator=_g())  # (backing, lead) windows of 24 frames
    return SaxGPT(cfg), TensorDataset(codes[:, 0], codes[:, 1]), None


def audiolm(gc: bool = False):
    cfg = AudioLMConfig.from_dict({**tiny("audiolm")["model"], "grad_checkpoint": gc})
    codes = torch.randint(0, cfg.bins, (N, cfg.n_q, 40), generator=_g())  # equal lengths: equal token weights
    return AudioLM(cfg), TokenUtterances(list(codes)), PromptTargetCollate(0.4)


def melvae(gc: bool = False):
    cfg = MelVAEConfig.from_dict({**tiny("melvae")["model"], "grad_checkpoint": gc})
    mels = cfg.mel_mean + cfg.mel_std * torch.randn(N, 64, cfg.mel_channels, generator=_g())  # (N, T, M)
    return MelVAE(cfg), Items([{"mel": m, "length": torch.tensor(64)} for m in mels]), None


def kick_vae():
    cfg = KickConfig.from_dict(tiny("kick"))
    vae = KickVAE(cfg.vae)
    mels = torch.randn(N, *KICK_MEL_SHAPE, generator=_g())
    vae.fit_norm(mels)
    return VAETask(vae, cfg.kl(0)), TensorDataset(mels), None


def kick_diffusion():
    cfg = KickConfig.from_dict(tiny("kick"))
    unet = LatentUNet(cfg.unet.replace(vocab_size=10))
    z = torch.randn(N, cfg.unet.latent_ch, 16, 22, generator=_g())
    ids = torch.randint(0, 10, (N, cfg.max_keywords), generator=_g(1))
    return DiffusionTask(unet, NoiseSchedule(), cfg.p_uncond), TensorDataset(z, ids), None


def codec():
    r = CodecRecipe.from_dict(tiny("codec"))
    x = 0.3 * torch.randn(N, r.model.channels, 2048, generator=_g())
    return LyraCodecTask(LyraCodec(r.model), r.loss), TensorDataset(x), None


def vocoder(section: str, gan: bool = False):
    d = tiny(section)
    if gan:  # the GAN recipe of the full profiles, with narrow discriminators
        d = {**d, "loss": {**d["loss"], "disc": "mpd+mrstft", "periods": [2, 3], "disc_width": 0.05}}
    return VocoderRecipe.from_dict(d), 0.3 * torch.randn(N, 1, 4096, generator=_g())  # the recipe's own runner


def tokenizer():
    r = TokenizerRecipe.from_dict(tiny("tokenizer"))
    tok = AudioTokenizer(r.model)
    # k-means as `recipes.tokenizer.CodebookInit` does: the same crops on every rank, EMA counts per global batch of 2
    tok.init_codebooks(0.3 * torch.randn(N, 1, 8000, generator=_g(1)), 2 * math.ceil(8000 / tok.hop_length))
    return tok, TensorDataset(0.3 * torch.randn(N, 1, 8000, generator=_g())), None


def separator():
    r = SeparatorRecipe.from_dict(tiny("separator"))
    cfg = r.model.replace(segment_s=0.25)  # short crops: seconds on a CPU
    L = int(cfg.segment_s * cfg.sample_rate)
    x = 0.1 * torch.randn(N, 2, cfg.audio_channels, L, generator=_g())
    return SeparatorNet(cfg), TensorDataset(x[:, 0], x[:, 1]), None


FAMILIES = {
    "saxgpt": saxgpt,
    "audiolm": audiolm,
    "melvae": melvae,
    "kick_vae": kick_vae,
    "kick_diffusion": kick_diffusion,
    "codec": codec,
    "vocoder_speech": lambda: vocoder("vocoder_speech"),
    "vocoder_kick": lambda: vocoder("vocoder_kick"),
    "vocoder_gan": lambda: vocoder("vocoder_speech", gan=True),
    "tokenizer": tokenizer,
    "separator": separator,
    "saxgpt_gc": lambda: saxgpt(gc=True),  # activation checkpointing: the same numbers as without
    "audiolm_gc": lambda: audiolm(gc=True),
    "melvae_gc": lambda: melvae(gc=True),
}
# (family, strategy, grad_accum per rank on 2 ranks)
CASES = [(f, "ddp", 1) for f in FAMILIES if not f.endswith("_gc")] + [
    ("vocoder_gan", "ddp", 2),  # a GAN family with accumulation
    ("saxgpt", "ddp", 2),  # a transformer family with accumulation
    ("audiolm", "fsdp", 1),
    ("melvae", "fsdp", 1),
    ("codec", "fsdp", 1),
    ("saxgpt_gc", "ddp", 1),
    ("audiolm_gc", "fsdp", 1),
    ("melvae_gc", "fsdp", 1),
]


def case_name(family: str, strategy: str, accum: int) -> str:
    return f"{family}-{strategy}-a{accum}"


def reference(family: str, accum: int) -> str:
    "The 1-process case a 2-rank case is compared with (activation checkpointing: the family without it)."
    return case_name(family.removesuffix("_gc"), "ddp", accum)


@dataclasses.dataclass
class RunConfig(Config):
    out: str = "family_runs"
    cases: tuple = ()  # case names, see `case_name`


def run(cfg: RunConfig) -> None:
    "Entry point (torchrun): train each case STEPS steps; write its weights and losses under `out/<case>`."
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float64)  # sums over ranks and over micro-batches differ in order only
    for name in cfg.cases:
        family, strategy, accum = name.rsplit("-", 2)
        accum, batch = int(accum[1:]), 1
        if D.world_size() == 1:  # one process: both ranks' micro-batches (the tokenizer: as one, see above)
            accum, batch = (accum, 2) if family == "tokenizer" else (2 * accum, 1)
        run_cfg = dict(max_steps=STEPS, grad_accum=accum, strategy=strategy, warmup_steps=0)
        seed_everything(0)
        built = FAMILIES[family]()
        if isinstance(built[0], VocoderRecipe):  # no random draws in training: `recipes.vocoder.train_vocoder` itself
            r, x = built
            r = r.replace(batch_size=1, train=r.train.replace(**run_cfg))
            _, learn = train_vocoder(r, r.generator(), x)
        else:
            module, ds, collate = built
            model = Pinned(module, accum)
            section = {"saxgpt": "saxgpt", "audiolm": "audiolm", "melvae": "melvae"}.get(family.removesuffix("_gc"))
            tc = TrainConfig.from_dict({**(tiny(section)["train"] if section else {}), **run_cfg})
            if family == "kick_diffusion":
                tc = tc.replace(ema_decay=0.9)  # as the recipe: an EMA copy, compared too
            dl = DataLoader(ds, batch_size=batch, shuffle=True, collate_fn=collate)
            learn = Learner(model, dl, cfg=tc, phases=model.phases())
            learn.fit()
        out = Path(cfg.out) / name
        learn.save_pretrained(out)  # every rank (FSDP gathers the shards)
        if learn.is_main:
            (out / "losses.json").write_text(
                json.dumps([h["loss" if "loss" in h else "gen/loss"] for h in learn.history])
            )


def launch(out: Path, nproc: int, cases: list[str]) -> None:
    cmd = torchrun_command("test_family_parallel:run", nproc, str(PARAMS), overrides={"out": str(out), "cases": cases})
    env = {
        **os.environ,
        "PYTHONPATH": f"{Path(__file__).parent}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
        "OMP_NUM_THREADS": "1",
    }
    r = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-8000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    "The 1-process references and the 2-rank runs of every case (two torchrun jobs)."
    root = tmp_path_factory.mktemp("family_parallel")
    refs = sorted({reference(f, a) for f, _, a in CASES})
    launch(root / "one", 1, refs)
    launch(root / "two", 2, [case_name(*c) for c in CASES])
    return root


@pytest.mark.parametrize("family,strategy,accum", CASES, ids=[case_name(*c) for c in CASES])
def test_two_ranks_equal_one_process(runs, family, strategy, accum):
    one, two = runs / "one" / reference(family, accum), runs / "two" / case_name(family, strategy, accum)
    a, b = load_file(one / "model.safetensors"), load_file(two / "model.safetensors")
    assert a.keys() == b.keys()
    floats = [k for k in a if a[k].is_floating_point() and a[k].numel()]
    steps = [k for k in a if not a[k].is_floating_point()]  # step clocks (KL warm-up, scheduled sampling)
    assert all(a[k].equal(b[k]) for k in steps), {k: (a[k], b[k]) for k in steps}  # optimizer-step clocks
    diff = max((a[k].double() - b[k].double()).abs().max().item() for k in floats)
    assert diff <= TOL, f"{family} {strategy} grad_accum {accum}: weights differ by {diff:.3g}"
    la, lb = json.loads((one / "losses.json").read_text()), json.loads((two / "losses.json").read_text())
    assert len(la) == len(lb) == STEPS and la[0] != la[-1], (la, lb)  # it trained
    assert max(abs(x - y) for x, y in zip(la, lb)) <= 1e-5 * max(1.0, max(map(abs, la))), (la, lb)
