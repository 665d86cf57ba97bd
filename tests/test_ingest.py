"""Bad input through every ingest path: a malformed corpus (truncated, empty, NaN, 8/16/24/32-bit, 8-96 kHz,
1-6 channels, silent, clipped, wrong extension, non-audio) must never crash scanning, kick aggregation and
preprocessing, the codec dataset or the speech mel cache; every bad file is reported with its reason and every
good file is processed."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from audiolab.data.ingest import scan_audio
from audiolab.data.kicks import aggregate_kicks, preprocess_kicks
from audiolab.data.datasets import CodecDataset, KickMelDataset
from audiolab.data.shards import ShardDataset, speech_mel_shards
from audiolab.data.speech import read_libritts


def tone(sr, secs=0.5, ch=1, amp=0.5):
    t = np.arange(int(sr * secs)) / sr
    return np.stack([amp * np.sin(2 * np.pi * (110 + 30 * c) * t) for c in range(ch)], 1)  # (T, C)


# name -> (writer, expected reason substring or None for a good file)
def make_corpus(root: Path) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    exp = {}

    def good(name, sr, ch, subtype, fmt=None, secs=0.5):
        sf.write(root / name, tone(sr, secs, ch), sr, subtype=subtype, format=fmt)
        exp[name] = None

    good("kick_u8_8k_mono.wav", 8000, 1, "PCM_U8")
    good("kick_16_16k_stereo.wav", 16000, 2, "PCM_16")
    good("kick_24_96k_3ch.wav", 96000, 3, "PCM_24", secs=0.2)
    good("kick_32_48k_6ch.wav", 48000, 6, "PCM_32", secs=0.2)
    good("kick_float_22k_4ch.wav", 22050, 4, "FLOAT")
    good("kick_flac_44k_5ch.flac", 44100, 5, "PCM_16")
    good("kick_ogg_32k.ogg", 32000, 2, "VORBIS")
    good("kick_mp3_44k.mp3", 44100, 2, "MPEG_LAYER_III", fmt="MP3")
    sf.write(root / "kick_flac_named.wav", tone(24000), 24000, format="FLAC")
    exp["kick_flac_named.wav"] = None  # wrong ext, real audio
    # bad ones
    full = root / "kick_full.wav"
    sf.write(full, tone(44100, 1.0), 44100, subtype="PCM_16")
    (root / "kick_truncated.wav").write_bytes(full.read_bytes()[:30000])
    full.unlink()
    exp["kick_truncated.wav"] = "truncated"
    (root / "kick_empty.wav").write_bytes(b"")
    exp["kick_empty.wav"] = "empty"
    x = tone(16000, 0.5).astype(np.float32)
    x[100:200] = np.nan
    sf.write(root / "kick_nan.wav", x, 16000, subtype="FLOAT")
    exp["kick_nan.wav"] = "non-finite"
    sf.write(root / "kick_silent.wav", np.zeros((16000, 1)), 16000, subtype="PCM_16")
    exp["kick_silent.wav"] = "silent"
    sf.write(root / "kick_clipped.wav", np.clip(4 * tone(16000, 0.5), -1, 1), 16000, subtype="PCM_16")
    exp["kick_clipped.wav"] = "clipped"
    sf.write(root / "kick_zero_frames.wav", np.zeros((0, 1)), 16000, subtype="PCM_16")
    exp["kick_zero_frames.wav"] = "empty"
    (root / "kick_text.wav").write_text("this is not audio\n" * 500)
    exp["kick_text.wav"] = "not a readable audio file"
    (root / "kick_noise.flac").write_bytes(np.random.default_rng(0).bytes(20000))
    exp["kick_noise.flac"] = "not a readable audio file"
    (root / "kick_image.xyz").write_bytes(b"\x89PNG" + bytes(9000))
    exp["kick_image.xyz"] = "not an audio extension"
    return exp


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad") / "pack"
    return root, make_corpus(root)


def scan_and_check(root, exp: dict) -> dict:
    "`scan_audio(root)`, asserting each usable file of `exp` is a row and each bad one is skipped with its reason."
    sc = scan_audio(root)
    good = {n for n, r in exp.items() if r is None}
    assert {r["path"] for r in sc["rows"]} == good
    reasons = {s["path"]: s["reason"] for s in sc["skipped"]}
    assert set(reasons) == set(exp) - good
    for name, why in reasons.items():
        assert exp[name] in why, (name, why)
    return sc


def test_scan_reports_every_bad_file(corpus):
    root, exp = corpus
    sc = scan_and_check(root, exp)
    rows = {r["path"]: r for r in sc["rows"]}
    assert rows["kick_24_96k_3ch.wav"]["sr"] == 96000 and rows["kick_24_96k_3ch.wav"]["channels"] == 3
    assert rows["kick_32_48k_6ch.wav"]["channels"] == 6 and rows["kick_u8_8k_mono.wav"]["sr"] == 8000
    assert abs(rows["kick_16_16k_stereo.wav"]["duration"] - 0.5) < 1e-6


def test_kick_aggregation_and_preprocessing(corpus, tmp_path):
    root, exp = corpus
    agg = aggregate_kicks(root, tmp_path / "k")
    agg_skip = {s["path"]: s["reason"] for s in agg["skipped"]}
    # aggregation filters by name/size/extension only; every file it drops has a reason
    assert agg["kept"] + len(agg_skip) == len(exp)
    assert agg_skip["kick_empty.wav"].startswith("too small") and "extension" in agg_skip["kick_image.xyz"]
    pre = preprocess_kicks(tmp_path / "k" / "raw", tmp_path / "k" / "mels")
    pre_skip = {s["path"].split("_", 1)[1]: s["reason"] for s in pre["skipped"]}
    kept = {n for n in exp if n not in agg_skip}
    # the kick pipeline keeps clipped kicks (they are still kicks); everything else bad is skipped with its reason
    should_fail = {n for n in kept if exp[n] is not None and exp[n] != "clipped"}
    assert set(pre_skip) == should_fail, (pre_skip, should_fail)
    for n, why in pre_skip.items():
        assert exp[n] in why or "truncated" in why, (n, why)
    assert pre["processed"] == len(kept) - len(should_fail)
    ds = KickMelDataset(tmp_path / "k" / "mels", tmp_path / "k" / "metadata.csv")
    assert len(ds) == pre["processed"]
    for i in range(len(ds)):
        m, kw = ds[i]
        assert m.shape == (1, 128, 173) and torch.isfinite(m).all() and "kick" in kw


def test_codec_dataset_never_stops(corpus):
    """The lazy codec dataset: files whose header is unusable are listed in `.skipped` with their reason, a file that
    fails when a crop is read (NaN samples) is recorded in `.failed` and another file serves the crop, silent files
    never give a crop; every item is a finite stereo crop at peak 0.95."""
    root, exp = corpus
    ds = CodecDataset.from_folder(root, sr=16000, segment=2000, channels=2, seed=0)
    at_header = {"kick_empty.wav", "kick_zero_frames.wav", "kick_text.wav", "kick_noise.flac", "kick_image.xyz"}
    reasons = {s["path"]: s["reason"] for s in ds.skipped}
    assert set(reasons) == at_header and all(exp[n] in reasons[n] for n in at_header), reasons
    assert {Path(f).name for f in ds.files} == set(exp) - at_header  # truncated, NaN, silent, clipped: read lazily
    for i in range(len(ds)):
        y = ds[i]
        assert y.shape == (2, 2000) and torch.isfinite(y).all() and abs(float(y.abs().max()) - 0.95) < 1e-4
    assert set(ds.failed) <= {str(root / "kick_nan.wav")}  # only a crop over its NaN samples fails
    whole = CodecDataset([root / "kick_nan.wav", root / "kick_ogg_32k.ogg"], sr=16000, segment=16000, seed=0)
    assert all(torch.isfinite(whole[i]).all() for i in range(len(whole)))  # crops longer than the file: NaN in each
    assert (
        list(whole.failed) == [str(root / "kick_nan.wav")] and "non-finite" in whole.failed[str(root / "kick_nan.wav")]
    )


def test_speech_paths(corpus, tmp_path):
    """LibriTTS-layout utterances through the melvae mel cache (`speech_mel_shards`): every unreadable file is skipped
    with its reason (silent and clipped ones too: `check_waveform`), every other one has a finite 100-bin log-mel."""
    root, exp = corpus
    lt = tmp_path / "LibriTTS_R"
    for i, name in enumerate(sorted(n for n in exp if n.endswith(".wav"))):
        d = lt / "train-clean-100" / "19" / "198"
        d.mkdir(parents=True, exist_ok=True)
        uid = f"19_198_{i:06d}_000000"
        shutil.copy(root / name, d / f"{uid}.wav")
        (d / f"{uid}.normalized.txt").write_text(name)
    items = read_libritts(lt)
    assert len(items) == sum(n.endswith(".wav") for n in exp)
    name_of = {it["utt_id"]: it["text"] for it in items}  # the text is the corpus file's name
    index = speech_mel_shards(lt, tmp_path / "mels")
    skipped = {name_of[Path(s["file"]).name.removesuffix(".wav")]: s["reason"] for s in index["skipped"]}
    assert set(skipped) == {n for n in name_of.values() if exp[n] is not None}
    for name, why in skipped.items():
        assert exp[name] in why or "truncated" in why, (name, why)
    ds = ShardDataset(tmp_path / "mels", "mel")
    assert sorted(name_of[it["utt_id"]] for it in ds.items) == sorted(set(name_of.values()) - set(skipped))
    for m in ds:
        assert m.shape[1] == 100 and m.shape[0] > 0 and torch.isfinite(m).all()  # (T, 100)


def make_tree(root: Path) -> dict:
    "A folder with one entry of each kind: a valid kick, an empty file, a non-audio file, a dangling symlink, a loop."
    root.mkdir(parents=True)
    sf.write(root / "kick_valid.wav", tone(44100, 0.5), 44100, subtype="PCM_16")
    (root / "kick_empty.wav").write_bytes(b"")
    (root / "kick_notes.bin").write_bytes(bytes(9000))
    (root / "kick_gone.wav").symlink_to(root / "moved" / "kick_gone.wav")
    (root / "kick_loop.wav").symlink_to(root / "kick_loop.wav")
    return {"kick_empty.wav": "empty", "kick_notes.bin": "not an audio extension", "kick_gone.wav": "dangling symlink",
            "kick_loop.wav": "symlink loop"}  # fmt: skip


def test_every_entry_used_or_reported(tmp_path, caplog):
    "scan, aggregation and preprocessing: the valid file is used, every other entry is reported with its reason."
    root = tmp_path / "tree"
    exp = make_tree(root)
    with caplog.at_level("INFO"):
        sc = scan_audio(root)
    assert [r["path"] for r in sc["rows"]] == ["kick_valid.wav"] and sc["entries"] == 5
    reasons = {s["path"]: s["reason"] for s in sc["skipped"]}
    assert set(reasons) == set(exp) and all(exp[n] in reasons[n] for n in exp), reasons
    assert len(sc["rows"]) + len(sc["skipped"]) == sc["entries"]
    assert all(f"{n}: {reasons[n]}" in caplog.text for n in exp)  # and logged

    agg = aggregate_kicks(root, tmp_path / "k")
    reasons = {s["path"]: s["reason"] for s in agg["skipped"]}
    assert agg["kept"] == 1 and agg["kept"] + len(reasons) == agg["entries"] == 5
    assert reasons["kick_gone.wav"].startswith("dangling symlink") and reasons["kick_loop.wav"] == "symlink loop"
    assert "extension" in reasons["kick_notes.bin"] and reasons["kick_empty.wav"].startswith("too small")
    assert set(reasons) == set(exp)

    raw = tmp_path / "k" / "raw"  # the same kinds of entries in a folder given to preprocessing
    shutil.copy(root / "kick_empty.wav", raw / "kick_empty.wav")
    (raw / "kick_gone.wav").symlink_to(root / "moved" / "kick_gone.wav")
    (raw / "kick_loop.wav").symlink_to(raw / "kick_loop.wav")
    (raw / "kick_notes.bin").write_bytes(bytes(9000))
    pre = preprocess_kicks(raw, tmp_path / "k" / "mels")
    reasons = {s["path"]: s["reason"] for s in pre["skipped"]}
    assert pre["processed"] == 1 and pre["processed"] + len(reasons) == pre["entries"] == 5
    assert set(reasons) == set(exp) and all(exp[n] in reasons[n] for n in exp if n != "kick_notes.bin"), reasons
    assert "unsupported format" in reasons["kick_notes.bin"]
