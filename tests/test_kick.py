"Kick latent diffusion (models.kick, nn.diffusion, eval.fad): shapes, keywords, guidance, samplers, overfit, save/load."

import copy
import math

import pytest
import torch

from audiolab.core import CheckpointError, ConfigError, load_section
from audiolab.data.kicks import KICK_MEL_SHAPE
from audiolab.eval.fad import fewest_steps_within
from audiolab.recipes.kick import evaluate_samplers
from audiolab.models.kick import (
    KickLDM,
    active_frames,
    KickVAE,
    KickVAEConfig,
    KeywordEncoder,
    KeywordVocab,
    LatentUNet,
    LatentUNetConfig,
    diffusion_loss,
    kick_mel,
    synth_kicks,
    vae_loss,
)
from audiolab.models.vocoder import HiFiGAN, HiFiGANConfig
from audiolab.nn.conv import TimeMajorConv1d, TimeMajorConvTranspose1d
from audiolab.nn.diffusion import NoiseSchedule, SAMPLERS, ddpm_sample, trailing_timesteps
from audiolab.viz import kick_panel

TINY_VAE = KickVAEConfig(channels=(8, 8, 16, 16))


def tiny_unet(vocab_size):
    return LatentUNetConfig(
        channels=(16, 32), cond_dim=32, time_freq_dim=16, kw_emb_dim=8, vocab_size=vocab_size, heads=2
    )


@pytest.fixture(scope="module")
def kicks():
    wavs, kws = synth_kicks(4, seed=3)
    return kick_mel(wavs), kws


@pytest.fixture(scope="module")
def vocab():
    return KeywordVocab(["deep", "punchy", "long"])


def randomize_out(unet):
    "The U-Net's output conv and condition projections start at zero (ε = 0, keywords ignored): perturb every weight."
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return unet


def test_vae_shapes_and_crop(kicks):
    mels, _ = kicks
    assert mels.shape[1:] == KICK_MEL_SHAPE == (1, 128, 173)
    vae = KickVAE()  # KickWithReverb's full-size config
    mu, logvar = vae.encode(mels[:1])
    assert mu.shape == logvar.shape == (1, 4, 8, 11) and vae.latent_shape == (4, 8, 11)
    assert vae.decode(mu).shape == (1, 1, 128, 173)  # 173 -> 87 -> 44 -> 22 -> 11 and back, cropped
    recon, mu2, _ = vae(mels[:1], sample=False)
    assert torch.equal(mu2, mu) and recon.shape == mels[:1].shape
    with pytest.raises(ValueError, match="128, 173"):
        vae.encode(mels[:1, :, :, :172])


def test_vae_other_sizes():
    vae = KickVAE(KickVAEConfig(n_mels=64, frames=101, channels=(8, 16, 16)))
    z = vae.encode(torch.randn(2, 1, 64, 101))[0]
    assert z.shape == (2, 4, 8, 13) and vae.decode(z).shape == (2, 1, 64, 101)
    with pytest.raises(ConfigError, match="groups"):
        KickVAEConfig(channels=(12, 16))


def test_vae_overfits_one_batch(kicks):
    torch.manual_seed(0)
    mels, _ = kicks
    vae = KickVAE(TINY_VAE)
    vae.fit_norm(mels)
    opt = torch.optim.Adam(vae.parameters(), 3e-3)
    losses = []
    for _ in range(25):
        loss, parts = vae_loss(vae, mels, 1e-4)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts["loss"])
    assert losses[-1] < 0.5 * losses[0], losses


REFERENCE_UNET_PARAMS = 5_905_284  # KickWithReverb's LatentUNet (the keyword encoder is a separate module there)


def test_full_unet_is_the_reference_architecture(vocab):
    "params.yaml kick.full: the reference's U-Net, parameter for parameter; up blocks at the concatenated width."
    cfg = LatentUNetConfig.from_dict({**load_section("kick", "full")["unet"], "vocab_size": len(vocab)})
    assert (cfg.up_block, cfg.cond_mode, cfg.heads) == ("concat", "add", 1)
    unet = LatentUNet(cfg)
    assert sum(p.numel() for n, p in unet.named_parameters() if not n.startswith("keywords.")) == REFERENCE_UNET_PARAMS
    widths = [(up.res.conv1.in_channels, up.reduce.out_channels) for up in unet.ups]
    assert widths == [(256, 128), (128, 64)]  # ResBlock at skip + upsampled channels, then the 1x1 reduce
    assert all(b.cond.out_features == b.conv1.out_channels for b in [*unet.down_res, unet.mid1, unet.mid2])
    acts = {}
    for name in ("mid2", "ups.0", "ups.1"):
        unet.get_submodule(name).register_forward_hook(lambda m, i, o, name=name: acts.__setitem__(name, o.shape))
    out = randomize_out(unet)(torch.randn(2, 4, 8, 11), torch.tensor([999, 3]), vocab.encode([["deep"], []]))
    assert out.shape == (2, 4, 8, 11) and out.isfinite().all()
    assert acts == {"mid2": (2, 256, 2, 3), "ups.0": (2, 128, 4, 6), "ups.1": (2, 64, 8, 11)}


def test_keyword_vocab_and_encoder(vocab):
    built = KeywordVocab.build([["deep", "kick"], ["deep"], ["kick", "x"], ["deep", "kick"]], min_count=2)
    assert built.words == ["deep", "kick"] and len(built) == 3  # "x" seen once: below min_count
    ids = vocab.encode([["deep", "long"], [], ["unknown", "words"], ["long", "deep", "deep"]])
    assert ids.tolist() == [[1, 3], [0, 0], [0, 0], [3, 1]]
    enc = KeywordEncoder(len(vocab), 8, 16)
    out = enc(ids)
    null = enc.proj(enc.null)
    torch.testing.assert_close(out[1], null)
    torch.testing.assert_close(out[2], null)  # empty == unknown == null
    torch.testing.assert_close(out[0], out[3])  # a set: order, repeats ignored
    torch.testing.assert_close(out[0], enc.proj(enc.emb.weight[[1, 3]].mean(0)))  # mean of the embeddings
    assert not torch.allclose(out[0], null)
    assert vocab.encode([[]]).shape == (1, 1) and vocab.encode([["deep"]], max_len=4).tolist() == [[1, 0, 0, 0]]


def test_cfg_scale_identities(vocab):
    torch.manual_seed(0)
    unet = randomize_out(LatentUNet(tiny_unet(len(vocab)))).eval()
    z, t = torch.randn(3, 4, 8, 11), torch.tensor(321)
    ids = vocab.encode([["deep"], ["punchy", "long"], []])
    with torch.no_grad():
        cond, unc = unet(z, t, ids), unet(z, t, torch.zeros_like(ids))
        assert (cond[:2] - unc[:2]).abs().max() > 1e-3
        torch.testing.assert_close(unet.guided_eps(ids, 0.0)(z, t), unc, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(unet.guided_eps(ids, 1.0)(z, t), cond, atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(unet.guided_eps(ids, 4.0)(z, t), unc + 4 * (cond - unc), atol=1e-4, rtol=1e-4)


def test_v_prediction_target_and_eps(vocab):
    "A v-model's output v = √ᾱ ε - √(1-ᾱ) z0 becomes ε = √(1-ᾱ) z + √ᾱ v for the samplers; its loss regresses v."
    torch.manual_seed(0)
    sched = NoiseSchedule()
    unet = randomize_out(LatentUNet(tiny_unet(len(vocab)).replace(prediction="v"))).eval()
    z, ids, t = torch.randn(2, 4, 8, 11), vocab.encode([["deep"], ["long"]]), torch.tensor(600)
    a = sched.abar(t).item()
    with torch.no_grad():
        v = unet(z, t, ids)
        torch.testing.assert_close(unet.guided_eps(ids, 1.0, sched)(z, t), math.sqrt(1 - a) * z + math.sqrt(a) * v)
        z0, noise = torch.randn(2, 4, 8, 11), torch.randn(2, 4, 8, 11)
        g = torch.Generator().manual_seed(3)
        tt = torch.randint(0, sched.steps, (2,), generator=g)
        noise = torch.randn(z0.shape, generator=g)
        ab = sched.abar(tt).float().view(-1, 1, 1, 1)
        want = torch.nn.functional.mse_loss(
            unet(sched.add_noise(z0, noise, tt), tt, ids), ab.sqrt() * noise - (1 - ab).sqrt() * z0
        )
        torch.testing.assert_close(diffusion_loss(unet, sched, z0, ids, 0.0, torch.Generator().manual_seed(3)), want)
    with pytest.raises(ConfigError, match="schedule"):
        unet.guided_eps(ids, 1.0)
    with pytest.raises(ConfigError, match="prediction"):
        LatentUNetConfig(prediction="x0")


@pytest.mark.parametrize("sampler", ["ddim", "dpm++"])
def test_few_step_samplers_deterministic_and_exact(sampler):
    sched = NoiseSchedule()
    x = torch.randn(2, 4, 8, 11)

    def exact(z, t):
        return (z - math.sqrt(a := sched.abar(t.reshape(1)).item()) * x) / math.sqrt(1 - a)

    z = torch.randn(2, 4, 8, 11, generator=torch.Generator().manual_seed(0))
    out = SAMPLERS[sampler](exact, sched, z, 7)
    torch.testing.assert_close(out, x, atol=1e-4, rtol=1e-4)  # exact ε -> the data point, at any step count
    assert torch.equal(out, SAMPLERS[sampler](exact, sched, z.clone(), 7))


def test_ddpm_seeded_determinism():
    sched = NoiseSchedule(100)

    def eps(z, t):
        return 0.5 * z

    z = torch.randn(2, 4, 2, 2)
    a = ddpm_sample(eps, sched, z, torch.Generator().manual_seed(5))
    assert torch.equal(a, ddpm_sample(eps, sched, z, torch.Generator().manual_seed(5)))
    assert not torch.equal(a, ddpm_sample(eps, sched, z, torch.Generator().manual_seed(6)))


def test_trailing_timesteps():
    assert trailing_timesteps(4) == [999, 749, 499, 249]
    assert trailing_timesteps(1000) == list(range(999, -1, -1))
    with pytest.raises(ValueError):
        trailing_timesteps(1001)


def test_diffusion_loss_falls_on_one_batch(vocab):
    torch.manual_seed(0)
    sched, unet = NoiseSchedule(), LatentUNet(tiny_unet(len(vocab)))
    z0, ids = torch.randn(4, 4, 8, 11), vocab.encode([["deep"], ["long"], [], ["deep", "punchy"]])

    def fixed():
        return diffusion_loss(unet, sched, z0, ids, 0.0, torch.Generator().manual_seed(1)).item()

    opt = torch.optim.Adam(unet.parameters(), 2e-3)
    before = fixed()
    for s in range(40):
        loss = diffusion_loss(unet, sched, z0, ids, 0.15, torch.Generator().manual_seed(s % 4))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert fixed() < 0.8 * before


def test_generation_seeded_and_save_load(tmp_path, vocab):
    torch.manual_seed(0)
    ldm = KickLDM(KickVAE(TINY_VAE), randomize_out(LatentUNet(tiny_unet(len(vocab)))), vocab, latent_scale=1.5)
    a = ldm.sample_latents("deep, long", n=2, steps=3, guidance=2.0, seed=4)
    assert a.shape == (2, 4, 8, 11)
    assert torch.equal(a, ldm.sample_latents("deep long", n=2, steps=3, guidance=2.0, seed=4))
    assert not torch.equal(a, ldm.sample_latents("deep long", n=2, steps=3, guidance=2.0, seed=5))
    ldm.save_pretrained(tmp_path / "kick")
    back = KickLDM.from_pretrained(tmp_path / "kick")
    assert torch.equal(a, back.sample_latents("deep long", n=2, steps=3, guidance=2.0, seed=4))
    with pytest.raises(CheckpointError, match="kick.json"):
        KickLDM.from_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="sampler"):
        ldm.sample_latents("deep", sampler="heun")
    with pytest.raises(ConfigError, match="rows"):
        KickLDM(KickVAE(TINY_VAE), LatentUNet(tiny_unet(9)), vocab)


class _FrameVocoder(torch.nn.Module):
    "Stand-in vocoder (B, 128, F) -> (B, 1, F*512) that records how many frames it was given."

    def __init__(self):
        super().__init__()
        self.gain = torch.nn.Parameter(torch.ones(1))
        self.frames = []

    def forward(self, mel):
        self.frames.append(mel.shape[-1])
        return (self.gain * mel.mean(1, keepdim=True).exp()).repeat_interleave(512, -1)


def test_vocode_trims_silent_tail(vocab):
    ldm = KickLDM(KickVAE(TINY_VAE), LatentUNet(tiny_unet(len(vocab))), vocab, vocoder=_FrameVocoder())
    mel = torch.full((1, 1, 128, 173), -11.5)
    mel[..., :50] = -1.0
    trimmed, full = ldm.vocode(mel), ldm.vocode(mel, trim=False)
    assert ldm.vocoder.frames == [58, 173]  # 50 loud frames + an 8-frame margin
    assert trimmed.shape == full.shape == (1, 88200)
    assert trimmed[:, 58 * 512 :].abs().max() == 0
    torch.testing.assert_close(trimmed[:, : 50 * 512], full[:, : 50 * 512])


def test_active_frames_relative_to_the_decoded_mel():
    "A trained VAE decodes silence well above log(1e-5): the tail over a -5 floor trims as one over -11.5 does."
    g = torch.Generator().manual_seed(0)
    decay = torch.linspace(3, -12, 173)
    noise = 0.3 * torch.randn(1, 1, 128, 173, generator=g)
    raised, data = decay.clamp_min(-5) + noise, decay.clamp_min(-11.5) + noise
    assert (raised > -7).flatten(0, -2).any(0).all()  # an absolute floor of -7 kept all 173 frames
    n = active_frames(raised)
    assert 60 < n < 100 and active_frames(raised - 3.0) == n  # a level offset changes nothing
    assert active_frames(data) >= n  # a lower floor exposes more of the decay
    assert active_frames(torch.full((1, 128, 173), -5.0)) == 9  # nothing loud: one frame + the margin


@pytest.mark.parametrize("cfg_kw", [{}, {"up_block": "concat", "cond_mode": "add", "heads": 1}])
def test_fast_bf16_within_tolerance_of_fp32(vocab, cfg_kw):
    """KickLDM.for_inference('bf16'): the U-Net's output and the decoded mel within 3% of fp32's range; the guided ε
    (CFG 3, one batch of 2: ε_u + 3 (ε_c - ε_u) scales each branch's rounding by up to 3 + 2) within 6%."""
    torch.manual_seed(0)
    unet = randomize_out(LatentUNet(tiny_unet(len(vocab)).replace(**cfg_kw)))
    fp32 = KickLDM(KickVAE(TINY_VAE), unet, vocab)
    bf16 = KickLDM(copy.deepcopy(fp32.vae), copy.deepcopy(unet), vocab).for_inference("bf16")
    ids, z, t = vocab.encode([["deep"], ["long"]]), torch.randn(2, 4, 8, 11), torch.tensor(600)
    with torch.no_grad():
        e32, eb = fp32.unet.guided_eps(ids, 3.0)(z, t), bf16.unet.guided_eps(ids, 3.0)(z, t)
        m32, mb = fp32.vae.decode(z), bf16.vae.decode(z)
        u32, ub = fp32.unet(z, t, ids), bf16.unet(z, t, ids)
    assert eb.dtype == mb.dtype == torch.float32
    assert (ub - u32).abs().max() <= 0.03 * u32.abs().max()
    assert (eb - e32).abs().max() <= 0.06 * e32.abs().max()
    assert (mb - m32).abs().max() <= 0.03 * m32.abs().max()
    assert torch.equal(
        KickLDM(fp32.vae, copy.deepcopy(unet), vocab).for_inference("fp32").unet(z, t, ids), fp32.unet(z, t, ids)
    )


def test_served_vocoder_is_time_major_and_equal(vocab):
    "for_inference runs the HiFi-GAN on time-major activations (2-D channels-last convs): the plain vocoder's waveform."
    torch.manual_seed(0)
    tiny = HiFiGANConfig(upsample_initial_channel=64, resblock_kernel_sizes=(3,), resblock_dilations=((1, 3),))
    plain = KickLDM(KickVAE(TINY_VAE), LatentUNet(tiny_unet(len(vocab))), vocab, vocoder=HiFiGAN(tiny))
    fast = KickLDM(plain.vae, plain.unet, vocab, vocoder=copy.deepcopy(plain.vocoder)).for_inference("fp32")
    kinds = {type(m) for m in fast.vocoder.modules()}
    assert {TimeMajorConv1d, TimeMajorConvTranspose1d} <= kinds and torch.nn.Conv1d not in kinds
    mel = torch.randn(1, *KICK_MEL_SHAPE[:-1], 20) - 4
    torch.testing.assert_close(fast.vocode(mel, trim=False), plain.vocode(mel, trim=False), atol=1e-5, rtol=1e-4)


def test_compiled_unet_equals_eager(vocab):
    "KickLDM.for_inference(compile=True): inductor, frozen weights, latents equal to eager within 1e-3 (3 DDIM steps)."
    torch.manual_seed(0)
    unet = randomize_out(LatentUNet(tiny_unet(len(vocab)).replace(up_block="concat", cond_mode="add")))
    eager = KickLDM(KickVAE(TINY_VAE), unet, vocab, latent_scale=1.5)
    fast = KickLDM(eager.vae, copy.deepcopy(unet), vocab, latent_scale=1.5).for_inference("fp32", compile=True)
    a = eager.sample_latents("deep long", n=1, steps=3, guidance=3.0, seed=2, sampler="ddim")
    b = fast.sample_latents("deep long", n=1, steps=3, guidance=3.0, seed=2, sampler="ddim")
    torch.testing.assert_close(b, a, rtol=1e-3, atol=1e-3)  # inductor reassociates fp32 sums; CFG 3 amplifies


def test_generate_refuses_bad_arguments(vocab):
    ldm = KickLDM(KickVAE(TINY_VAE), LatentUNet(tiny_unet(len(vocab))), vocab)
    with pytest.raises(ValueError, match="n .* >= 1"):
        ldm.generate("deep", n=0)
    with pytest.raises(ValueError, match="guidance"):
        ldm.generate("deep", guidance=float("nan"))
    with pytest.raises(ValueError, match="mono"):
        kick_mel(torch.zeros(1, 2, 1000))


def test_missing_vocoder_falls_back_to_griffin_lim(tmp_path, vocab):
    KickLDM(KickVAE(TINY_VAE), LatentUNet(tiny_unet(len(vocab))), vocab).save_pretrained(tmp_path / "kick")
    with pytest.warns(UserWarning, match="Griffin-Lim"):
        assert KickLDM.from_pretrained(tmp_path / "kick", vocoder=tmp_path / "no_vocoder").vocoder is None


def test_evaluate_samplers_scores_ddpm_at_its_own_n(vocab):
    "DDPM generates only `ddpm_n` kicks; every row reports FAD on all its kicks and on its first `ddpm_n`."
    torch.manual_seed(0)
    ldm = KickLDM(KickVAE(TINY_VAE), randomize_out(LatentUNet(tiny_unet(len(vocab)))), vocab, sched=NoiseSchedule(20))
    ref = torch.randn(8, 1, 128, 173) - 5
    rows = evaluate_samplers(ldm, ref, [["deep"], ["long"], []] * 4, [("ddpm", 20), ("ddim", 3)], ddpm_n=5)
    assert [(r["sampler"], r["n"]) for r in rows] == [("noise", 12), ("vae_recon", 8), ("ddpm", 5), ("ddim", 12)]
    ddpm = rows[2]
    assert ddpm["fad_mel"] == ddpm["fad_mel_k"] and rows[3]["fad_mel"] != rows[3]["fad_mel_k"]
    best = fewest_steps_within(rows, tol=1e9)
    assert best["sampler"] == "ddim" and fewest_steps_within(rows, tol=-1.0) is None


def test_panel_generates_a_player(vocab, capsys):
    ldm = KickLDM(KickVAE(TINY_VAE), LatentUNet(tiny_unet(len(vocab))), vocab, vocoder=_FrameVocoder())
    panel = kick_panel(ldm)
    kw_box, seed = panel.children[0].children
    steps, guidance = panel.children[1].children
    kw_box.value, steps.value, guidance.value = "deep long", 3, 1.5
    panel.generate()
    assert len(ldm.vocoder.frames) == 1  # one kick generated and vocoded
    assert "'deep long' · 3 steps · g=1.5" in capsys.readouterr().out  # its player shown (stdout outside Jupyter)
