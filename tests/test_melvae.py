"""MelCausalVAE contracts on tiny random configs (CPU, seconds). (Overfitting one batch is tested in the notebook.)

- encoder shapes for every compression factor C in {4, 8, 16, 32} (and odd lengths through `MelVAE.encode`);
- causality: latents that end before a perturbed frame do not move, on random configs and perturbation points;
- streaming: the encoder fed in chunks of random multiples of C equals the offline encoder (<= 1e-5);
- classifier-free guidance at scale 1 is exactly the conditional model, and scale g extrapolates linearly;
- seeded sampling is deterministic (same seed == same mel; another seed differs), for both solvers;
- save_pretrained / from_pretrained round-trips outputs; bad checkpoints raise CheckpointError;
- `train_melvae` under `torchrun --nproc_per_node=2` (gloo) trains, checkpoints and saves a loadable model.
"""

import math
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiolab.core import CheckpointError
from audiolab.models.melvae import MelVAE, MelVAEConfig, ConvformerEncoder, check_causality, stream_encode
from audiolab.nn.diffusion import time_grid
from audiolab.train.learner import Learner, TrainConfig

torch.set_num_threads(1)  # tiny tensors on a shared 2-core machine


def tiny(**kw) -> MelVAEConfig:
    base = dict(
        d_model=32,
        tf_heads=2,
        tf_layers=1,
        latent_dim=8,
        n_residual_blocks=1,
        enc_channels=4,
        mel_channels=24,
        unet_dim=32,
        unet_depth=2,
        unet_heads=2,
        drop_p=0.0,
    )
    return MelVAEConfig(**{**base, **kw})


def random_cfg(rng: random.Random) -> MelVAEConfig:
    return tiny(
        compress_factor_C=rng.choice([4, 8, 16, 32]),
        n_residual_blocks=rng.randint(1, 2),
        conv_dilations=tuple(rng.sample([1, 2, 4, 8], rng.randint(1, 3))),
        tf_layers=rng.randint(1, 2),
        conv_kernel_size=rng.choice([3, 5, 7]),
        enc_channels=rng.choice([2, 4]),
        tf_heads=rng.choice([1, 2, 4]),
    )


def with_live_gates(vae: MelVAE) -> MelVAE:
    "adaLN-zero starts as the identity (zero velocity): give the gates and output some weight so outputs differ."
    for blk in vae.decoder.blocks:
        torch.nn.init.normal_(blk.ada[1].weight, std=0.05)
    torch.nn.init.normal_(vae.decoder.final.proj.weight, std=0.05)
    torch.nn.init.normal_(vae.decoder.final.ada[1].weight, std=0.05)
    return vae.eval()


@pytest.mark.parametrize("C", [4, 8, 16, 32])
def test_shapes_every_C(C):
    torch.manual_seed(C)
    vae = MelVAE(tiny(compress_factor_C=C)).eval()
    mu, logvar = vae.encoder(torch.randn(2, 3 * C, 24))
    assert mu.shape == logvar.shape == (2, 3, 8)
    mu, logvar, zmask = vae.encode(torch.randn(2, 2 * C + 1, 24), torch.tensor([2 * C + 1, C]))  # padded to 3C
    assert mu.shape == (2, 3, 8) and zmask.tolist() == [[True] * 3, [True, False, False]]
    mel = vae.sample(mu, num_steps=2, lengths=torch.tensor([2 * C + 1, C]))
    assert mel.shape == (2, 2 * C + 1, 24) and torch.isfinite(mel).all()
    out = vae.train()(torch.randn(2, 2 * C, 24) - 2)
    assert math.isfinite(out["loss"].item())


def test_bad_configs_and_inputs():
    with pytest.raises(ValueError, match="power of 2"):
        tiny(compress_factor_C=12)
    with pytest.raises(ValueError, match="unknown solver"):
        tiny(solver="rk4")
    enc = ConvformerEncoder(tiny(compress_factor_C=8))
    with pytest.raises(ValueError, match="multiple of C=8"):
        enc(torch.randn(1, 20, 24))
    with pytest.raises(ValueError, match="multiple of C=8"):
        enc.step(torch.randn(1, 4, 24))


def test_causality_random_configs():
    rng = random.Random(1)
    for trial in range(6):
        cfg = random_cfg(rng)
        torch.manual_seed(trial)
        enc = ConvformerEncoder(cfg).eval()
        T = 4 * cfg.compress_factor_C
        ps = {check_causality(enc, T=T, seed=100 * trial + s) for s in range(3)}
        assert len(ps) > 1  # different perturbation points were tried


def test_causality_check_catches_a_leak():
    "The contract test fails on a model that peeks ahead."
    enc = ConvformerEncoder(tiny(compress_factor_C=4)).eval()
    fwd = enc.forward
    enc.forward = lambda mel: fwd(
        torch.cat([mel[:, 4:], mel[:, -4:]], 1)
    )  # shift left by C: latent n sees frame (n+2)C-1
    with pytest.raises(AssertionError):
        for s in range(8):
            check_causality(enc, T=32, seed=s)


def test_streaming_equals_offline_random_chunks():
    rng = random.Random(2)
    for trial in range(4):
        cfg = random_cfg(rng)
        C = cfg.compress_factor_C
        torch.manual_seed(trial)
        enc = ConvformerEncoder(cfg).eval()
        n = rng.randint(3, 6)
        mel = torch.randn(2, n * C, 24)
        with torch.no_grad():
            offline = enc(mel)[0]
            state, outs, i = None, [], 0
            while i < n:  # chunks of 1..3 latent steps
                k = min(rng.randint(1, 3), n - i)
                (mu, _), state = enc.step(mel[:, i * C : (i + k) * C], state)
                outs.append(mu)
                i += k
            assert (torch.cat(outs, 1) - offline).abs().max().item() <= 1e-5
            assert (stream_encode(enc, mel, C) - offline).abs().max().item() <= 1e-5


def test_cfg_scale_one_is_conditional():
    torch.manual_seed(0)
    vae = with_live_gates(MelVAE(tiny(compress_factor_C=4)))
    z, x, t = torch.randn(2, 4, 8), torch.randn(2, 16, 24), 0.4
    with torch.no_grad():
        cond = vae.decoder.condition(z, 16)
        tt = torch.full((2,), t)
        v_c, v_u = vae.decoder(x, tt, cond), vae.decoder(x, tt, vae.decoder.null(2, 16))
        assert torch.equal(vae.decoder.velocity(cond, None, 1.0)(x, t), v_c)
        g3 = vae.decoder.velocity(cond, None, 3.0)(x, t)
        assert torch.allclose(g3, v_u + 3 * (v_c - v_u), atol=1e-5) and (g3 - v_c).abs().max() > 1e-3

        def gen():
            return torch.Generator().manual_seed(5)

        a = vae.sample(z, 3, guidance_scale=1.0, generator=gen())
        b = vae.sample(z, 3, guidance_scale=1.0, generator=gen())
        assert torch.equal(a, b) and not torch.allclose(a, vae.sample(z, 3, guidance_scale=2.0, generator=gen()))


@pytest.mark.parametrize("solver,sway", [("euler", -1.0), ("midpoint", None)])
def test_seeded_sampling_is_deterministic(solver, sway):
    torch.manual_seed(0)
    vae = with_live_gates(MelVAE(tiny(compress_factor_C=8)))
    z = torch.randn(1, 3, 8)

    def run(s):
        return vae.sample(z, 4, solver=solver, sway_coef=sway, generator=torch.Generator().manual_seed(s))

    assert torch.equal(run(3), run(3))
    assert not torch.allclose(run(3), run(4))
    torch.manual_seed(9)
    a = vae.sample(z, 4, solver=solver, sway_coef=sway)
    torch.manual_seed(9)
    b = vae.sample(z, 4, solver=solver, sway_coef=sway)
    assert torch.equal(a, b)  # the global seed works too


def test_time_grid():
    u, s = time_grid(10), time_grid(10, -1.0)
    assert torch.allclose(u, torch.linspace(0, 1, 11))
    assert s[0] == 0 and abs(s[-1] - 1) < 1e-6 and (s.diff() > 0).all() and (s[1:-1] < u[1:-1]).all()


def test_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    vae = with_live_gates(MelVAE(tiny(compress_factor_C=4)))
    vae.save_pretrained(tmp_path / "m")
    back = MelVAE.from_pretrained(tmp_path / "m").eval()
    assert back.cfg == vae.cfg
    mel = torch.randn(1, 16, 24) - 3
    z = vae.encode(mel)[0]
    assert torch.equal(z, back.encode(mel)[0])

    def g():
        return torch.Generator().manual_seed(0)

    assert torch.equal(vae.sample(z, 2, generator=g()), back.sample(z, 2, generator=g()))
    (tmp_path / "m" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="model.safetensors"):
        MelVAE.from_pretrained(tmp_path / "m")


def _tone_corpus(root: Path):
    for split, n in (("train-clean-100", 4), ("dev-clean", 1)):
        d = root / split / "7" / "1"
        d.mkdir(parents=True)
        for u in range(n):
            t = torch.arange(18000) / 24000
            sf.write(
                d / f"7_1_{u:06d}_000000.wav",
                (0.3 * torch.sin(2 * math.pi * (150 + 40 * u) * t * (1 + t))).numpy(),
                24000,
            )


def test_torchrun_two_ranks(tmp_path):
    "The pipeline's launch path: torchrun -> audiolab.train.distributed -> train_melvae, 2 gloo ranks."
    _tone_corpus(tmp_path / "speech")
    small = {k: v for k, v in tiny(mel_channels=100).to_dict().items()}
    params = tmp_path / "params.yaml"
    import yaml

    params.write_text(
        yaml.safe_dump(
            {
                "melvae": {
                    "model": {**small, "conv_dilations": list(small["conv_dilations"])},
                    "train": {"max_steps": 3, "lr": 2e-4, "schedule": "cosine", "valid_every": 0, "warmup_steps": 0},
                    "data_dir": str(tmp_path / "speech"),
                    "out_dir": str(tmp_path / "run"),
                    "segment_frames": 32,
                    "batch_size": 2,
                }
            }
        )
    )
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        "-m",
        "audiolab.train.distributed",
        "audiolab.recipes.melvae:train_melvae",
        "--params",
        str(params),
        "--section",
        "melvae",
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    vae = MelVAE.from_pretrained(tmp_path / "run" / "model")
    assert int(vae.train_calls) == 3
    assert (tmp_path / "run" / "model" / "mel_stats.json").exists() and any((tmp_path / "run" / "ckpt").iterdir())


@pytest.mark.parametrize("valid_every", [0, 1])
def test_kl_warmup_follows_optimizer_steps(valid_every):
    "The KL weight of step n is the same with `grad_accum` 1 and 2 (the clock counts optimizer steps, not calls)."
    cfg = tiny(kl_loss_warmup_steps=8)
    mels = torch.randn(16, 32, cfg.mel_channels) * 2 - 4
    items = [{"mel": m, "length": torch.tensor(32)} for m in mels]
    weights = {}
    for accum in (1, 2):
        torch.manual_seed(0)
        vae = MelVAE(cfg)
        tc = TrainConfig(max_steps=5, grad_accum=accum, lr=1e-4, seed=0, valid_every=valid_every)
        vdl = DataLoader(items[:2], batch_size=2) if valid_every else None  # validation calls must not count
        learn = Learner(vae, DataLoader(items, batch_size=2, shuffle=True), vdl, cfg=tc).fit()
        assert int(vae.train_calls) == 5
        weights[accum] = [h["kl_weight"] for h in learn.history]
    want = [cfg.kl_loss_weight * 0.5 * (1 - math.cos(math.pi * n / 8)) for n in range(5)]
    assert weights[1] == pytest.approx(want, abs=1e-7) and weights[2] == pytest.approx(want, abs=1e-7), weights
