"""Hostile inputs (issue #11): the malformed-audio corpus of `tests/hostile.py` through the ingest paths
(`load_audio`, `scan_audio` + manifest) and through every model family's inference entry point, at tiny sizes.

Contract checked for each (entry point, hostile case):
* an error must be an `AudiolabError` or `ValueError` whose message names the problem (`PROBLEM_WORDS`), never a
  RuntimeError/IndexError from deep inside torch;
* NaN/Inf samples and out-of-range token ids must be refused (an output computed from them is silently wrong);
* any other accepted input must give a finite output of the documented shape (e.g. resampled / channel-mixed).
Entry points check their inputs with `audiolab.core.check_tensor` / `check_codes` (`InputError`)."""

import math
import re
from pathlib import Path

import pytest
import torch

from audiolab.audio import load_audio
from audiolab.core import AudioFileError, AudiolabError
from audiolab.data.ingest import read_manifest, write_manifest

from conftest import make_tiny_tokenizer
from hostile import PROBLEM_WORDS, hostile_codes, hostile_waves, make_hostile_files, mel_cases
from test_ingest import scan_and_check

torch.set_num_threads(1)  # tiny models on a shared 2-core machine

MUST_REFUSE = {"nan", "inf", "out_of_range", "negative", "nan_guidance", "wrong_n_mels"}


# ------------------------------------------------------------------------------------------------ ingest
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile") / "pack"
    return root, make_hostile_files(root, long_seconds=120.0)


def test_load_audio_every_file(corpus):
    "Each usable file loads as finite float32 (C, T) in [-1, 1]; each bad one raises AudioFileError with its reason."
    root, exp = corpus
    for name, why in exp.items():
        if Path(name).suffix not in (".wav", ".flac", ".ogg", ".mp3"):
            with pytest.raises(AudioFileError, match="unsupported format"):
                load_audio(root / name)
            continue
        if why is None:
            wav, sr = load_audio(root / name)
            assert wav.dtype == torch.float32 and wav.ndim == 2 and wav.shape[1] >= 1 and sr > 0, name
            assert torch.isfinite(wav).all() and wav.abs().max() <= 1.0, name
        elif why not in ("silent", "clipped"):  # those two are ingest policy, not load errors
            with pytest.raises(AudioFileError) as e:
                load_audio(root / name)
            assert name in str(e.value), f"the error must name the file: {e.value}"


def test_load_audio_missing_and_directory(tmp_path):
    with pytest.raises(AudioFileError, match="no such file"):
        load_audio(tmp_path / "nope.wav")
    (tmp_path / "dir.wav").mkdir()
    with pytest.raises(AudioFileError, match="directory"):
        load_audio(tmp_path / "dir.wav")


@pytest.mark.parametrize(
    "name,sr_in,frames",
    [
        ("kick_rate_8k.wav", 8000, 2400),
        ("kick_6ch_96k.wav", 96000, 9600),
        ("kick_one_sample.wav", 16000, 1),
        ("kick_long.wav", 8000, 960000),
    ],
)
def test_load_audio_conforms_to_a_model(corpus, name, sr_in, frames):
    "Wrong rate / channel count / length are the loader's job: `sr=`, `channels=` give exactly what a model wants."
    root, _ = corpus
    for sr, ch in [(24000, 1), (44100, 2)]:
        wav, got = load_audio(root / name, sr=sr, channels=ch)
        assert got == sr and tuple(wav.shape) == (ch, math.ceil(frames * sr / sr_in)), (name, sr, ch, wav.shape)
        assert torch.isfinite(wav).all()


def test_scan_and_manifest_lose_nothing(corpus, tmp_path):
    "Every bad file is skipped with its reason, every usable one kept, and the manifest round-trips them all."
    root, exp = corpus
    sc = scan_and_check(root, exp)
    rows = read_manifest(write_manifest(tmp_path / "m.csv", sc["rows"]))
    assert [r["path"] for r in rows] == [r["path"] for r in sc["rows"]]
    long = next(r for r in rows if r["path"] == "kick_long.wav")
    assert long["frames"] == 960000 and abs(long["duration"] - 120.0) < 1e-6


# ------------------------------------------------------------------------------------------------ models
def _finite(y) -> bool:
    if isinstance(y, dict):
        return all(_finite(v) for v in y.values())
    if isinstance(y, (tuple, list)):
        return all(_finite(v) for v in y)
    if isinstance(y, torch.Tensor) and y.is_floating_point():
        return bool(torch.isfinite(y).all())
    return True


def check_handled(case: str, fn, x, output_ok) -> None:
    "The contract above, for one entry point `fn` and one hostile input `x` named `case`."
    try:
        y = fn(x)
    except (AudiolabError, ValueError) as e:
        assert re.search(PROBLEM_WORDS[case], str(e), re.I), f"{case}: the error does not name the problem: {e!r}"
        return
    except Exception as e:
        raise AssertionError(f"{case}: crash from inside: {type(e).__name__}: {str(e)[:300]}") from None
    assert case not in MUST_REFUSE, f"{case}: accepted silently"
    assert _finite(y), f"{case}: non-finite output"
    output_ok(x, y)


def _tiny_codec():
    from audiolab.models.codec import LyraCodec, tiny_codec_config

    m = LyraCodec(tiny_codec_config(channels=2)).eval()

    def fn(x):
        return m.decode(m.encode(x), x.shape[-1])

    def ok(x, y):
        assert y.shape == x.shape

    return fn, hostile_waves(2, 4410, long_length=44100 * 10), ok


def _tiny_hifigan():
    from audiolab.models.vocoder import HiFiGAN, HiFiGANConfig

    m = HiFiGAN(
        HiFiGANConfig(upsample_initial_channel=32, resblock_kernel_sizes=(3,), resblock_dilations=((1, 3),))
    ).eval()

    def ok(x, y):
        assert x.shape[1] == 128 and y.shape == (1, 1, x.shape[-1] * m.hop)

    return torch.no_grad()(m), mel_cases(128, 20), ok


def _tiny_vocos():
    from audiolab.models.vocoder import VocosConfig, VocosVocoder

    m = VocosVocoder(VocosConfig(dim=32, intermediate_dim=64, num_layers=2)).eval()

    def ok(x, y):
        assert x.shape[1] == 100 and y.shape[:2] == (1, 1) and y.shape[-1] == max(0, x.shape[-1] - 1) * m.hop

    return torch.no_grad()(m), mel_cases(100, 20), ok


def _tiny_melvae():
    from audiolab.models.melvae import MelVAE, MelVAEConfig

    m = MelVAE(
        MelVAEConfig(
            d_model=32,
            tf_heads=2,
            tf_layers=1,
            latent_dim=8,
            n_residual_blocks=1,
            enc_channels=4,
            unet_dim=32,
            unet_depth=2,
            unet_heads=2,
            drop_p=0.0,
        )
    ).eval()
    g = torch.Generator().manual_seed(0)
    cases = {k: [(v[0], 24000)] for k, v in hostile_waves(1, 2400).items()}  # [(wav (C, L), sr)]
    cases["wrong_channels"] = [(hostile_waves(2, 2400)["ok"][0], 24000)]  # stereo: documented mixdown
    cases["wrong_rate"] = [(hostile_waves(1, 800)["ok"][0], 8000)]  # documented: resampled

    def fn(items):
        return m.encode_and_sample(items, num_steps=2, generator=g)

    def ok(items, out):
        wav, sr = items[0]
        frames = wav.shape[-1] * 24000 // sr // 256 + 1  # vocos24k, centered frames
        assert out.mel.shape == (1, frames, 100) and int(out.lengths[0]) == frames

    return fn, cases, ok


def _tiny_kick_mel():
    from audiolab.data.kicks import KICK_MEL_SHAPE
    from audiolab.models.kick import kick_mel

    cases = {k: v[0] for k, v in hostile_waves(1, 4410).items()}  # (1, T) = (B, T) mono
    cases["wrong_channels"] = hostile_waves(2, 4410)["ok"]  # (1, 2, T): stereo, unbatched
    cases["wrong_rate"] = (cases["ok"], 22050)

    def fn(x):
        return kick_mel(*x) if isinstance(x, tuple) else kick_mel(x)

    def ok(x, y):
        x = x[0] if isinstance(x, tuple) else x
        assert x.ndim <= 2 and y.shape == (*x.shape[:-1], *KICK_MEL_SHAPE)

    return fn, cases, ok


def _tiny_kick_generate():
    from audiolab.models.kick import (
        KickLDM,
        KickVAE,
        KickVAEConfig,
        KeywordVocab,
        LatentUNet,
        LatentUNetConfig,
        KICK_SAMPLES,
    )

    vocab = KeywordVocab(["deep", "punchy"])
    unet = LatentUNet(
        LatentUNetConfig(channels=(16, 32), cond_dim=32, time_freq_dim=16, kw_emb_dim=8, vocab_size=len(vocab), heads=2)
    )
    ldm = KickLDM(KickVAE(KickVAEConfig(channels=(8, 8, 16, 16))), unet, vocab)
    base = dict(keywords="deep", n=1, steps=2, sampler="ddim")
    cases = dict(
        ok={},
        unknown_keywords=dict(keywords="zorblax 12!"),
        zero_n=dict(n=0),
        zero_steps=dict(steps=0),
        nan_guidance=dict(guidance=float("nan")),
        bad_sampler=dict(sampler="bogus"),
    )

    def fn(kw):
        return ldm.generate(**{**base, **kw})

    def ok(kw, y):
        assert y.shape == ({**base, **kw}["n"], KICK_SAMPLES)

    return fn, cases, ok


def _tiny_saxgpt():
    from audiolab.models.saxgpt import SaxGPT, SaxGPTConfig

    m = SaxGPT(SaxGPTConfig(size="tiny", vocab_size=65, padding_idx=64, max_seq_len=40, dropout=0.0)).eval()
    g = torch.Generator().manual_seed(0)
    cases = hostile_codes(4, 64, 8)
    cases["too_long"] = torch.randint(0, 64, (1, 4, m.cfg.max_frames + 1))

    def fn(x):
        return m.generate(x, generator=g)

    def ok(x, y):
        assert y.shape == x.shape and y.dtype == torch.long and (y >= 0).all() and (y < 64).all()

    return fn, cases, ok


def _tiny_audiolm():
    from audiolab.models.audiolm import AudioLM, AudioLMConfig

    m = AudioLM(AudioLMConfig(n_q=4, bins=16, dim=32, heads=4, layers=2, dropout=0.0)).eval()
    g = torch.Generator().manual_seed(0)

    def fn(x):
        return m.inference(x, 6, generator=g)

    def ok(x, y):
        assert y.shape[:2] == (1, 4) and y.shape[-1] <= 6 and (y >= 0).all() and (y < 16).all()

    return fn, hostile_codes(4, 16, 10), ok


def _tiny_tokenizer():
    m = make_tiny_tokenizer()

    def ok(x, y):
        assert y.shape == (1, 4, math.ceil(x.shape[-1] / m.hop_length)) and (y >= 0).all() and (y < 64).all()

    return torch.no_grad()(m.encode), hostile_waves(1, 3200, long_length=32000 * 5), ok


def _tiny_detokenizer():
    from audiolab.models.tokenizer import AudioTokenizer, TokenizerConfig

    m = AudioTokenizer(TokenizerConfig(n_filters=4, dimension=16, bins=64, lstm=0, kmeans_iters=3)).eval()

    def ok(x, y):
        assert y.shape == (1, 1, x.shape[-1] * m.hop_length)

    return torch.no_grad()(m.decode), hostile_codes(4, 64, 5), ok


def _tiny_separator():
    from audiolab.models.separation import Separator, SeparatorConfig, SeparatorNet

    sep = Separator(
        SeparatorNet(
            SeparatorConfig(sample_rate=16000, channels=8, depth=2, nfft=256, t_layers=1, t_heads=2, segment_s=0.5)
        )
    )
    cases = {k: (v[0], 16000) for k, v in hostile_waves(1, 8000).items()}  # (C, L) at sr
    cases["wrong_channels"] = (hostile_waves(2, 8000)["ok"][0], 16000)  # documented: stems keep C
    cases["wrong_rate"] = (hostile_waves(1, 4000)["ok"][0], 8000)  # documented: resampled

    def fn(x):
        return sep.separate(*x)

    def ok(x, y):
        assert set(y) == {"lead", "backing"} and all(v.shape == x[0].shape for v in y.values())

    return fn, cases, ok


ENTRIES = dict(
    codec=_tiny_codec,
    hifigan=_tiny_hifigan,
    vocos=_tiny_vocos,
    melvae=_tiny_melvae,
    kick_mel=_tiny_kick_mel,
    kick_generate=_tiny_kick_generate,
    saxgpt=_tiny_saxgpt,
    audiolm=_tiny_audiolm,
    tokenizer_encode=_tiny_tokenizer,
    tokenizer_decode=_tiny_detokenizer,
    separator=_tiny_separator,
)
PROBLEM_WORDS.update(
    wrong_rate=r"rate|hz|resample",
    unknown_keywords=r"keyword",
    zero_n=r"\bn\b|batch|at least|>= ?1|positive",
    zero_steps=r"steps",
    nan_guidance=r"guidance|nan|finite",
    bad_sampler=r"sampler",
)


def _cases():
    "All (entry, case) pairs, each case list known without building the models (names only)."
    names = dict(
        waves=["ok", "wrong_channels", "wrong_ndim", "too_short", "empty", "nan", "inf"],
        codes=["ok", "out_of_range", "negative", "wrong_codebooks", "empty", "float_codes", "wrong_ndim"],
    )
    per = dict(
        codec=names["waves"] + ["too_long"],
        hifigan=names["waves"],
        vocos=names["waves"],
        melvae=names["waves"] + ["wrong_rate"],
        kick_mel=names["waves"] + ["wrong_rate"],
        kick_generate=["ok", "unknown_keywords", "zero_n", "zero_steps", "nan_guidance", "bad_sampler"],
        saxgpt=names["codes"] + ["too_long"],
        audiolm=names["codes"],
        tokenizer_encode=names["waves"] + ["too_long"],
        tokenizer_decode=names["codes"],
        separator=names["waves"] + ["wrong_rate"],
    )
    for entry, cases in per.items():
        for case in cases:
            yield pytest.param(entry, case, id=f"{entry}-{case}")


_built: dict = {}


@pytest.mark.parametrize("entry,case", list(_cases()))
def test_entry_point(entry, case):
    if entry not in _built:
        _built[entry] = ENTRIES[entry]()
    fn, cases, ok = _built[entry]
    check_handled(case, fn, cases[case], ok)
