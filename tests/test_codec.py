"""LyraCodec contracts across modules: sizes, exact lengths over config knobs, chunked == whole, streaming of the
causal variant, save/load round trip and bad checkpoints, Snake parameters stay positive under training."""

import math

import pytest
import torch

from audiolab.core import CheckpointError
from audiolab.models.codec import LyraCodec, LyraCodecConfig, LyraCodecTask, LyraLossConfig, tiny_codec_config
from audiolab.nn.conv import Snake, random_chunks, step_sequential


pytestmark = pytest.mark.usefixtures("one_thread")


def test_seed_size_on_meta():
    with torch.device("meta"):
        m = LyraCodec(LyraCodecConfig())
        assert sum(p.numel() for p in m.parameters()) == 255_858_050
        assert m.encode(torch.empty(1, 2, 88200)).shape == (1, 64, 44)  # ceil(88200 / 2048)
        assert m.decode(torch.empty(1, 64, 44), 88200).shape == (1, 2, 88200)


@pytest.mark.parametrize(
    "knobs",
    [
        dict(channels=1),
        dict(channels=2),
        dict(causal=True),
        dict(weight_norm=True),
        dict(strides=(3, 5), c_mults=(1, 2)),
        dict(dilations=(1, 2)),
        dict(per_channel=True),
    ],
)
def test_exact_lengths_for_any_length(knobs):
    torch.manual_seed(0)
    m = LyraCodec(tiny_codec_config(**knobs)).eval()
    for T in (1, m.hop - 1, m.hop + 1, 5 * m.hop + 7):
        x = torch.randn(1, m.cfg.channels, T)
        with torch.no_grad():
            z = m.encode(x)
            assert z.shape == (1, m.cfg.latent_channels, math.ceil(T / m.hop))
            assert m(x)["recon"].shape == x.shape


@pytest.mark.parametrize("seed", range(4))
def test_chunked_equals_whole(seed):
    "Stated tolerance: 1e-4 absolute on unit-variance input (the context covers the receptive field)."
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    m = LyraCodec(tiny_codec_config(channels=1 + seed % 2, causal=seed == 2, per_channel=seed == 3)).eval()
    T = m.hop * int(torch.randint(20, 60, (1,), generator=g)) + int(torch.randint(0, m.hop, (1,), generator=g))
    x = torch.randn(1, m.cfg.channels, T)
    chunk = int(torch.randint(3, 9, (1,), generator=g))
    with torch.no_grad():
        torch.testing.assert_close(m.encode_chunked(x, chunk), m.encode(x), atol=1e-4, rtol=0)
        torch.testing.assert_close(m.reconstruct(x, chunk_frames=chunk), m.reconstruct(x), atol=1e-4, rtol=0)


def test_causal_codec_streams():
    "A causal LyraCodec is built from streaming blocks only: encoder and decoder run chunk by chunk == offline."
    torch.manual_seed(0)
    m = LyraCodec(tiny_codec_config(causal=True)).eval()
    x = torch.randn(1, 2, 40 * m.hop)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        h_off, y_off = m.encoder(x), m.decoder(m.encoder(x).chunk(2, 1)[0])
        hs, state, i = [], None, 0
        for n in random_chunks(x.shape[-1], 3 * m.hop, g):
            h, state = step_sequential(m.encoder.net, x[..., i : i + n], state)
            hs.append(h)
            i += n
        torch.testing.assert_close(torch.cat(hs, -1), h_off, atol=1e-5, rtol=1e-5)
        mu = h_off.chunk(2, 1)[0]
        ys, state, i = [], None, 0
        for n in random_chunks(mu.shape[-1], 5, g):
            y, state = step_sequential(m.decoder.net, mu[..., i : i + n], state)
            ys.append(y)
            i += n
        torch.testing.assert_close(torch.cat(ys, -1), y_off, atol=1e-5, rtol=1e-5)


def test_save_load_round_trip_and_bad_files(tmp_path):
    torch.manual_seed(0)
    m = LyraCodec(tiny_codec_config(channels=1, weight_norm=True)).eval()
    m.save_pretrained(tmp_path / "codec")
    assert sorted(p.name for p in (tmp_path / "codec").iterdir()) == ["config.json", "model.safetensors"]
    back = LyraCodec.from_pretrained(tmp_path / "codec").eval()
    x = torch.randn(1, 1, 300)
    with torch.no_grad():
        assert torch.equal(back(x)["recon"], m(x)["recon"])
    f = tmp_path / "codec" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])  # truncated
    with pytest.raises(CheckpointError, match="model.safetensors"):
        LyraCodec.from_pretrained(tmp_path / "codec")
    LyraCodec(tiny_codec_config(channels=2)).save_pretrained(tmp_path / "other")
    (tmp_path / "other" / "config.json").write_text((tmp_path / "codec" / "config.json").read_text())
    with pytest.raises(CheckpointError, match="do not fit"):  # weights of another config
        LyraCodec.from_pretrained(tmp_path / "other")


def test_snake_parameters_positive_under_training():
    "Optimiser steps drive log-alpha/log-beta negative; alpha and beta themselves stay > 0 and the loss falls."
    torch.manual_seed(0)
    task = LyraCodecTask(LyraCodec(tiny_codec_config()), LyraLossConfig(fft_sizes=(128, 32)))
    opt = torch.optim.Adam([p for n, p in task.codec.named_parameters() if "log_" in n], lr=0.3)
    x = torch.randn(2, 2, 512)
    losses = []
    for _ in range(5):
        loss = task.training_step(x)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    snakes = [mod for mod in task.codec.modules() if isinstance(mod, Snake)]
    assert min(s.log_alpha.min().item() for s in snakes) < -1 and min(s.log_beta.min().item() for s in snakes) < -1
    assert snakes and all((s.alpha > 0).all() and (s.beta > 0).all() for s in snakes)


def _twins(**knobs):
    "Two codecs with the same weights: the plain one and a copy to make fast."
    plain = LyraCodec(tiny_codec_config(**knobs)).eval()
    fast = LyraCodec(tiny_codec_config(**knobs)).eval()
    fast.load_state_dict(plain.state_dict())
    return plain, fast


@pytest.mark.parametrize("knobs", [dict(weight_norm=True), dict(causal=True, weight_norm=True), dict(per_channel=True)])
def test_fp32_inference_path_equals_the_plain_model(knobs):
    "Folded weight norm + time-major convs in fp32: same latents and audio (1e-5), channel-major fp32 outputs."
    torch.manual_seed(0)
    plain, fast = _twins(**knobs)
    fast.for_inference("fp32", fused=False)
    assert not any("parametrizations" in k for k in fast.state_dict())
    x = torch.randn(2, 2, 3 * fast.hop + 5)
    with torch.no_grad():
        z = fast.encode(x)
        torch.testing.assert_close(z, plain.encode(x), atol=1e-5, rtol=1e-5)
        y = fast.decode(z, x.shape[-1])
        torch.testing.assert_close(y, plain.decode(z, x.shape[-1]), atol=1e-5, rtol=1e-5)
    assert y.stride(-1) == 1 and y.dtype == z.dtype == torch.float32  # channel-major, like the plain model


def test_fused_snake_equals_eager():
    "The compiled one-pass Snake (fp32 and bf16, channel-major and time-major inputs) equals the eager formula."
    from audiolab.nn.conv import channels_last_1d

    torch.manual_seed(0)
    s = Snake(16, alpha=0.8, beta=1.2)
    with torch.no_grad():
        s.log_alpha.normal_(0, 0.3)
        s.log_beta.normal_(0, 0.3)
        for x in (torch.randn(2, 16, 333) * 3, channels_last_1d(torch.randn(1, 16, 1000))):
            s.fused = False
            eager = s(x)
            s.fused = True
            fused = s(x)
            torch.testing.assert_close(fused, eager, atol=1e-5, rtol=1e-5)
            assert fused.stride() == eager.stride()
            s.to(torch.bfloat16)
            torch.testing.assert_close(s(x.bfloat16()).float(), eager, atol=0.05, rtol=0.02)  # bf16 rounding
            s.float()


@pytest.mark.parametrize("seed", range(3))
def test_bf16_inference_within_tolerance(seed):
    """Stated tolerance of the bf16 path (fused Snake included): reconstruction SI-SDR vs fp32 >= 20 dB, latents
    within 5% of their scale; encode/decode take and return fp32."""
    from audiolab.eval.metrics import si_sdr

    torch.manual_seed(seed)
    plain, fast = _twins(channels=1 + seed % 2)
    fast.for_inference("bf16")
    x = torch.randn(1, fast.cfg.channels, 4001)
    with torch.no_grad():
        z, z_ref = fast.encode(x), plain.encode(x)
        y, y_ref = fast.reconstruct(x), plain.reconstruct(x)
    assert fast.dtype == torch.bfloat16 and z.dtype == y.dtype == torch.float32
    assert (z - z_ref).abs().max() <= 0.05 * z_ref.abs().max()
    assert si_sdr(y, y_ref) >= 20


def test_for_inference_follows_the_machine(monkeypatch):
    "precision='auto' is core.inference_dtype: $AUDIOLAB_PRECISION, else bf16 only where the device has it."
    from audiolab import core

    monkeypatch.setenv(core.PRECISION_ENV, "fp32")
    assert LyraCodec(tiny_codec_config()).for_inference(fused=False).dtype == torch.float32
    monkeypatch.setenv(core.PRECISION_ENV, "bf16")
    assert LyraCodec(tiny_codec_config()).for_inference(fused=False).dtype == torch.bfloat16
    monkeypatch.delenv(core.PRECISION_ENV)
    expected = torch.bfloat16 if core.fast_bf16("cpu") else torch.float32
    assert LyraCodec(tiny_codec_config()).for_inference(fused=False).dtype == expected
