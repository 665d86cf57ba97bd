"""The malformed-audio corpus for the reliability tests (issue #11).

Three generators, one per kind of entry point:

* `make_hostile_files(root)` writes files for the ingest paths (`load_audio`, `scan_audio`): the corpus of
  `tests/test_ingest.py` (truncated, empty, NaN, silent, clipped, text, noise, wrong extension, 8-96 kHz,
  1-6 channels) plus hand-made headers (zero channels, zero sample rate), +/-Inf samples, a one-sample file,
  a long file and files at the "wrong" rate / channel count for a model. Returns `{name: expected}` where
  `expected` is `None` for a usable file or a substring of the reason ingest must report.
* `hostile_waves(channels, length)` gives waveform tensors `(B, C, L)` for models that take audio.
* `hostile_codes(K, bins, T)` gives token tensors `(B, K, T)` for models that take codes.

Each tensor case name says what is wrong; `PROBLEM_WORDS[name]` lists words one of which a clear error message
must contain (a regex alternation)."""

import struct
import sys
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

sys.path.insert(0, str(Path(__file__).parent))
from test_ingest import make_corpus, tone  # noqa: E402  (the hostile corpus extends the ingest corpus)


def wav_header(channels: int, sr: int, bits: int = 16, n_bytes: int = 0) -> bytes:
    "A canonical 44-byte RIFF/WAVE PCM header (fields taken as given, so they can lie)."
    block = channels * bits // 8
    return (
        b"RIFF"
        + struct.pack("<I", 36 + n_bytes)
        + b"WAVE"
        + b"fmt "
        + struct.pack("<IHHIIHH", 16, 1, channels, sr, sr * block, block, bits)
        + b"data"
        + struct.pack("<I", n_bytes)
    )


def make_hostile_files(root: Path, long_seconds: float = 120.0) -> dict:
    "Write the hostile file corpus under `root`; `{relative name: None (usable) or expected reason substring}`."
    exp = make_corpus(Path(root))
    root = Path(root)
    # hand-made headers: zero channels, zero sample rate (sndfile refuses both)
    (root / "kick_zero_channels.wav").write_bytes(wav_header(0, 16000, n_bytes=3200) + bytes(3200))
    exp["kick_zero_channels.wav"] = "channel"
    (root / "kick_zero_rate.wav").write_bytes(wav_header(1, 0, n_bytes=3200) + bytes(3200))
    exp["kick_zero_rate.wav"] = "not a readable audio file"
    # +/-Inf samples in a float WAV
    x = tone(16000, 0.25).astype(np.float32)
    x[10], x[20] = np.inf, -np.inf
    sf.write(root / "kick_inf.wav", x, 16000, subtype="FLOAT")
    exp["kick_inf.wav"] = "non-finite"
    # usable but hostile for a model: one sample, very long, wrong rate, wrong channel count
    sf.write(root / "kick_one_sample.wav", np.full((1, 1), 0.5), 16000, subtype="PCM_16")
    exp["kick_one_sample.wav"] = None
    sf.write(root / "kick_long.wav", tone(8000, long_seconds, amp=0.3), 8000, subtype="PCM_16")
    exp["kick_long.wav"] = None
    sf.write(root / "kick_rate_8k.wav", tone(8000, 0.3), 8000, subtype="PCM_16")
    exp["kick_rate_8k.wav"] = None
    sf.write(root / "kick_6ch_96k.wav", tone(96000, 0.1, ch=6), 96000, subtype="PCM_24")
    exp["kick_6ch_96k.wav"] = None
    return exp


# ---------------------------------------------------------------------------------------------- tensors
PROBLEM_WORDS = {
    "wrong_channels": r"channel|expect|\(B, \d|got \(",
    "wrong_ndim": r"expect|dim|shape|got \(",
    "too_short": r"short|samples|length|frames|>=|at least|got \(",
    "empty": r"empty|short|samples|length|frames|>=|at least|got \(",
    "nan": r"nan|non-finite|finite",
    "inf": r"inf|non-finite|finite",
    "out_of_range": r"range|bins|vocab|codes must|\[0, ",
    "negative": r"range|negative|codes must|\[0, ",
    "wrong_codebooks": r"codebook|\(B, \d|got \(|shape|K",
    "float_codes": r"dtype|integer|long|int",
    "too_long": r"long|exceed|window|max",
}


def hostile_waves(channels: int, length: int, long_length: int | None = None, seed: int = 0) -> dict:
    "`{case: (B, C, L) float32}`: ok, wrong_channels, wrong_ndim, too_short, empty, nan, inf (and too_long)."
    g = torch.Generator().manual_seed(seed)
    ok = 0.3 * torch.randn(1, channels, length, generator=g)  # (1, C, L)
    nan, inf = ok.clone(), ok.clone()
    nan[..., length // 3] = float("nan")
    inf[..., length // 2] = float("inf")
    cases = dict(
        ok=ok,
        wrong_channels=ok[:, :1].repeat(1, channels + 1, 1),
        wrong_ndim=ok[0, 0],
        too_short=ok[..., :1],
        empty=ok[..., :0],
        nan=nan,
        inf=inf,
    )
    if long_length:
        cases["too_long"] = 0.3 * torch.randn(1, channels, long_length, generator=g)
    return cases


def hostile_codes(K: int, bins: int, T: int, seed: int = 0) -> dict:
    "`{case: (B, K, T) int64}`: ok, out_of_range, negative, wrong_codebooks, empty, float_codes, wrong_ndim."
    g = torch.Generator().manual_seed(seed)
    ok = torch.randint(0, bins, (1, K, T), generator=g)
    hi, neg = ok.clone(), ok.clone()
    hi[0, 0, T // 2] = bins + 7
    neg[0, -1, T // 2] = -3
    return dict(
        ok=ok,
        out_of_range=hi,
        negative=neg,
        wrong_codebooks=ok[:, :1].repeat(1, K + 1, 1),
        empty=ok[..., :0],
        float_codes=ok.float(),
        wrong_ndim=ok[0],
    )


def mel_cases(n_mels: int, frames: int, seed: int = 0) -> dict:
    "`{case: (B, n_mels, F) log-mel}` for vocoders: ok, wrong_channels (+3), wrong_ndim, too_short, empty, nan, inf."
    g = torch.Generator().manual_seed(seed)
    ok = torch.randn(1, n_mels, frames, generator=g) - 5  # log-mel-ish values
    nan, inf = ok.clone(), ok.clone()
    nan[0, 3, frames // 2] = float("nan")
    inf[0, 5, frames // 3] = float("inf")
    return dict(
        ok=ok,
        wrong_channels=torch.randn(1, n_mels + 3, frames, generator=g),
        wrong_ndim=ok[0],
        too_short=ok[..., :1],
        empty=ok[..., :0],
        nan=nan,
        inf=inf,
    )


if __name__ == "__main__":  # write the corpus somewhere to look at it
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "hostile_corpus")
    for name, why in sorted(make_hostile_files(out, long_seconds=10).items()):
        print(f"{name:32s} {why or 'usable'}")
    print(f"written to {out}")
