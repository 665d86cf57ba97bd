"""Vocoder contracts: HiFi-GAN V1 sizes and exact lengths, Vocos shapes, save/load round trips (the API the kick
family loads: `HiFiGAN.from_pretrained(dir)`), the silence gate, input checks with clear errors, reconstruction-only
training drives the mel L1 down; reconstruction metrics against known values."""

import math

import pytest
import torch

from audiolab.audio import mel_spectrogram
from audiolab.eval.metrics import lsd, mel_distance, mrstft_distance, si_sdr
from audiolab.core import ConfigError, InputError
from audiolab.models.vocoder import (
    HiFiGAN,
    HiFiGANConfig,
    VocoderLossConfig,
    VocosConfig,
    VocosVocoder,
    save_vocos_dir,
)
from audiolab.recipes.vocoder import VocoderRecipe, train_vocoder
from audiolab.train.learner import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")
TINY_HIFI = dict(upsample_initial_channel=32, resblock_kernel_sizes=(3,), resblock_dilations=((1, 3),))
TINY_VOCOS = dict(dim=32, intermediate_dim=64, num_layers=2)


def test_hifigan_reference_size_and_exact_lengths():
    ref = HiFiGAN()  # KickWithReverb's reference implementation: Conv1d(128, 256, 7) ... Conv1d(8, 1, 7)
    assert (ref.conv_pre.in_channels, ref.conv_pre.out_channels, ref.conv_post.in_channels) == (128, 256, 8)
    assert [u.stride[0] for u in ref.ups] == [8, 8, 2, 2, 2] and [len(m) for m in ref.mrfs] == [3] * 5
    g = HiFiGAN(HiFiGANConfig(**TINY_HIFI)).eval()
    for frames in (1, 2, 7, 33):
        with torch.no_grad():
            y = g(torch.randn(2, 128, frames) - 5)
        assert y.shape == (2, 1, frames * 512) and y.abs().max() <= 1


def test_vocos_lengths_and_its_own_mel():
    v = VocosVocoder(VocosConfig(**TINY_VOCOS)).eval()
    audio = 0.1 * torch.randn(1, 1, 24000)
    torch.testing.assert_close(v.mel(audio), mel_spectrogram(audio.squeeze(1), "vocos24k"), atol=1e-4, rtol=0)
    for frames in (2, 5, 40):
        with torch.no_grad():
            assert v(torch.randn(1, 100, frames)).shape == (1, 1, (frames - 1) * 256)


@pytest.mark.parametrize(
    "cls,cfg",
    [
        (HiFiGAN, HiFiGANConfig(**TINY_HIFI)),
        (VocosVocoder, VocosConfig(**TINY_VOCOS)),
        (VocosVocoder, VocosConfig(**TINY_VOCOS, mag_prior=True)),
    ],
)
def test_save_load_round_trip(tmp_path, cls, cfg):
    torch.manual_seed(0)
    m = cls(cfg).eval()
    m.save_pretrained(tmp_path / "model")
    back = cls.from_pretrained(tmp_path / "model").eval()
    assert back.cfg == m.cfg
    mel = torch.randn(1, back.cfg.n_mels if cls is VocosVocoder else 128, 6) - 4
    with torch.no_grad():
        assert torch.equal(back(mel), m(mel))


def test_silence_gate_zeroes_exactly_the_floor_windows_and_survives_save_load(tmp_path):
    torch.manual_seed(0)
    HiFiGAN(HiFiGANConfig(**TINY_HIFI, silence_gate=True)).save_pretrained(tmp_path / "model")
    g = HiFiGAN.from_pretrained(tmp_path / "model").eval()
    plain = HiFiGAN(HiFiGANConfig(**TINY_HIFI)).eval()
    plain.load_state_dict(g.state_dict())
    mel = torch.randn(1, 128, 12) - 4
    mel[..., 6:] = math.log(1e-5)  # kick44k's clamp floor from frame 6 on: its 2048-sample window starts at hop 4
    with torch.no_grad():
        y, y_plain = g(mel), plain(mel)
    assert g.cfg.silence_gate and torch.equal(y[..., 4 * 512 :], torch.zeros(1, 1, 8 * 512))
    assert torch.equal(y[..., : 4 * 512], y_plain[..., : 4 * 512])  # untouched before the silence


@pytest.mark.parametrize(
    "make,n_mels",
    [(lambda: HiFiGAN(HiFiGANConfig(**TINY_HIFI)), 128), (lambda: VocosVocoder(VocosConfig(**TINY_VOCOS)), 100)],
)
def test_bad_mels_are_refused_by_name(make, n_mels):
    m = make().eval()
    ok = torch.randn(1, n_mels, 4)
    bad = ok.clone()
    bad[0, 0, 1] = float("nan")
    for x, words in [
        (torch.randn(1, n_mels + 3, 4), f"expected size {n_mels} at dim 1"),
        (ok[0], "expected 3 dims"),
        (ok[..., :0], "too short"),
        (bad, "non-finite"),
    ]:
        with pytest.raises(InputError, match=words):
            m(x)


def test_mag_prior_head_reproduces_the_mel_and_keeps_the_state_dict(tmp_path):
    """FreeV prior: with a zero residual |S| = max(pinv(fbᵀ) mel, 1e-7), whose mel is the input's (up to the clamp in a
    few narrow low bands of a harmonic comb); no new parameters; no hub export."""
    torch.manual_seed(0)
    v = VocosVocoder(VocosConfig(**TINY_VOCOS, mag_prior=True)).eval()
    torch.nn.init.zeros_(v.head.out.weight)
    speechy = sum(torch.sin(2 * math.pi * 130 * k * torch.arange(12000) / 24000) / k for k in range(1, 30))[None] * 0.1
    for x in (speechy, 0.05 * torch.randn(1, 12000)):
        mel = v.mel(x)
        with torch.no_grad():
            mag = v.head.spectrum(v.backbone(mel), mel).abs()  # (1, 513, F)
        fb = v.feature_extractor.mel_spec.mel_scale.fb  # (513, 100)
        err = ((fb.T @ mag).clamp_min(1e-7).log() - mel).abs()  # (1, 100, F)
        assert err.median() < 1e-3 and err.mean() < (0.25 if x is speechy else 0.02), (err.median(), err.mean())
        mag_plain = (fb.T.pinverse() @ mel.exp()).clamp_min(1e-7)
        torch.testing.assert_close(mag, mag_plain, rtol=1e-4, atol=1e-6)
    assert set(v.state_dict()) == set(VocosVocoder(VocosConfig(**TINY_VOCOS)).state_dict())
    with pytest.raises(ConfigError, match="no magnitude-prior head"):
        save_vocos_dir(v, tmp_path / "hub")


def test_mag_prior_head_starts_with_frame_centred_pulses():
    """The phase bias pi*(k mod 2) makes the untrained head emit one pulse at the centre t*hop of every frame; a zero
    phase puts each pulse at the frame's edge, where the synthesis window is zero, and the output nearly vanishes."""
    v = VocosVocoder(VocosConfig(**TINY_VOCOS, mag_prior=True)).eval()
    torch.nn.init.zeros_(v.head.out.weight)
    mel = torch.full((1, v.cfg.n_mels, 12), -2.0)
    with torch.no_grad():
        y = v.head(v.backbone(mel), mel)[0]  # (11 * hop,)
        hop = v.hop
        peaks = y.abs().reshape(-1, hop).argmax(1)
        assert (peaks[1:-1] == 0).all(), peaks  # maxima at the frame centres
        torch.nn.init.zeros_(v.head.out.bias)
        y0 = v.head(v.backbone(mel), mel)[0]
    assert y0.abs().max() < 0.1 * y.abs().max()


@pytest.mark.parametrize("mag_prior", [False, True])
def test_reconstruction_only_training_lowers_mel_l1(mag_prior):
    "disc='none': one optimizer, mel L1 (+ MR-STFT) only; on a fixed batch of a tone the mel L1 falls by a fifth."
    torch.manual_seed(0)
    t = torch.arange(8192) / 24000
    wave = (0.3 * torch.sin(2 * math.pi * 220 * t) * torch.exp(-3 * t))[None, None]  # (1, 1, 8192)
    loss = VocoderLossConfig(disc="none", w_mel=1.0, w_stft=0.5)
    run = VocoderRecipe(
        loss=loss, train=TrainConfig(max_steps=40, lr=3e-3, clip_grad=10.0), preset="vocos24k", batch_size=1
    )
    task, learn = train_vocoder(run, VocosVocoder(VocosConfig(**TINY_VOCOS, mag_prior=mag_prior)), wave)
    assert task.phases() is None and set(learn.history[0]) >= {"mel", "stft", "loss"}
    first, last = learn.history[0]["mel"], learn.history[-1]["mel"]
    assert last < 0.8 * first, (first, last)
    with torch.no_grad():
        assert mel_distance(task.generate(wave), wave) < first


def test_metrics_known_values():
    torch.manual_seed(0)
    y = 0.1 * torch.randn(1, 1, 24000)
    assert si_sdr(0.5 * y, y) > 60 and si_sdr(-2 * y, y) > 60  # a scaled copy (either sign): only float precision left
    assert abs(si_sdr(y + 0.1 * y.std() * torch.randn_like(y), y) - 20.0) < 0.3  # noise at -20 dB -> 20 dB
    assert abs(mel_distance(0.5 * y, y) - math.log(2)) < 1e-3  # a gain g shifts every (unclamped) log-mel by log g
    assert abs(lsd(0.1 * y, y) - 20.0) < 1e-3  # -20 dB at every bin
    assert mrstft_distance(y, y) < 1e-6 < mrstft_distance(0.5 * y, y)
