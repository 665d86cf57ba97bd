"""`load_audio` over a generated grid of files: 8/16/24/32-bit int and 32/64-bit float WAV (plus FLAC/OGG/MP3),
8-96 kHz, 1-6 channels. Each file holds a known signal (channel c: a sine with peak 0.8*(c+1)/C), so the checks
cover shape, rate, dtype, range, channel order and sample values within the format's quantization step."""

import math

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolab.audio import audio_info, load_audio, save_audio

DUR = 0.05  # seconds: keeps the 150-file grid well under a second of I/O
WAV_SUBTYPES = {"PCM_U8": 2**-7, "PCM_16": 2**-15, "PCM_24": 2**-23, "PCM_32": 2**-31, "FLOAT": 1e-7, "DOUBLE": 1e-7}
RATES = [8000, 16000, 22050, 44100, 48000, 96000]
CHANNELS = [1, 2, 4, 6]


def signal(sr: int, channels: int) -> np.ndarray:
    "(T, C) float64: channel c is a 300*(c+1) Hz sine with peak 0.8*(c+1)/C."
    t = np.arange(int(sr * DUR)) / sr
    return np.stack([0.8 * (c + 1) / channels * np.sin(2 * math.pi * 300 * (c + 1) * t) for c in range(channels)], 1)


def check(wav, got_sr, x, sr, tol):
    assert isinstance(wav, torch.Tensor) and wav.dtype == torch.float32
    assert got_sr == sr and tuple(wav.shape) == (x.shape[1], x.shape[0])
    assert wav.abs().max() <= 1.0
    np.testing.assert_allclose(wav.numpy().T, x, atol=tol + 1e-7)
    peaks = wav.abs().amax(-1).numpy()  # channel order survives
    assert (np.diff(peaks) > 0).all() or len(peaks) == 1


@pytest.mark.parametrize("channels", CHANNELS)
@pytest.mark.parametrize("sr", RATES)
@pytest.mark.parametrize("subtype", list(WAV_SUBTYPES))
def test_wav_grid(tmp_path, subtype, sr, channels):
    x = signal(sr, channels)
    path = tmp_path / f"{subtype}_{sr}_{channels}.wav"
    sf.write(path, x, sr, subtype=subtype)
    info = audio_info(path)
    assert (info.sr, info.frames, info.channels, info.subtype) == (sr, len(x), channels, subtype)
    check(*load_audio(path), x, sr, WAV_SUBTYPES[subtype])


@pytest.mark.parametrize(
    "suffix,subtype,tol", [(".flac", "PCM_S8", 2**-7), (".flac", "PCM_16", 2**-15), (".flac", "PCM_24", 2**-23)]
)
@pytest.mark.parametrize("sr,channels", [(8000, 1), (44100, 2), (96000, 6)])
def test_flac_grid(tmp_path, suffix, subtype, tol, sr, channels):
    x = signal(sr, channels)
    path = tmp_path / f"a{suffix}"
    sf.write(path, x, sr, subtype=subtype)
    check(*load_audio(path), x, sr, tol)


@pytest.mark.parametrize("suffix", [".ogg", ".mp3"])
@pytest.mark.parametrize("sr,channels", [(16000, 1), (44100, 2), (48000, 2)])
def test_lossy(tmp_path, suffix, sr, channels):
    "Lossy codecs: shape, rate and range exact; samples only close (RMS error below 5% of full scale)."
    t = np.arange(int(sr * 0.5)) / sr
    x = np.stack([0.5 * np.sin(2 * math.pi * 440 * (c + 1) * t) for c in range(channels)], 1)
    path = tmp_path / f"a{suffix}"
    save_audio(path, torch.from_numpy(x.T), sr)
    wav, got = load_audio(path)
    assert got == sr and wav.shape[0] == channels and wav.dtype == torch.float32 and wav.abs().max() <= 1.0
    assert abs(wav.shape[1] - len(x)) <= 0.01 * sr
    n = min(wav.shape[1], len(x))
    assert np.sqrt(((wav.numpy().T[:n] - x[:n]) ** 2).mean()) < 0.05


@pytest.mark.parametrize("sr_in", [8000, 22050, 96000])
@pytest.mark.parametrize(
    "channels,mix,out_c", [(6, dict(mono=True), 1), (1, dict(channels=2), 2), (6, dict(channels=2), 2)]
)
def test_resample_and_mix(tmp_path, sr_in, channels, mix, out_c):
    x = signal(sr_in, channels)
    path = tmp_path / "a.wav"
    sf.write(path, x, sr_in, subtype="FLOAT")
    wav, sr = load_audio(path, sr=24000, **mix)
    assert sr == 24000 and tuple(wav.shape) == (out_c, math.ceil(len(x) * 24000 / sr_in))
    assert torch.isfinite(wav).all() and wav.abs().max() <= 1.0
