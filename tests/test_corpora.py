"""Embedded corpora: determinism (same seed -> byte-identical files, every TTS engine and every kick source),
the `python -m audiolab.data.corpora` driver end to end on a miniature profile, and the LibriTTS reader."""

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import soundfile as sf

from audiolab.data.speech import SpeechCfg, make_speech_corpus, read_libritts, voice_bank, synthesize, speech_plan
from audiolab.data.kicks import KicksCfg, make_kick_pack, kick_embedding, pairwise_distance


def tree_bytes(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_speech_deterministic_every_engine(tmp_path):
    # 9 speakers = all 5 flite + 3 festival voices + 1 espeak-ng voice
    cfg = SpeechCfg(n_speakers=9, utts_per_speaker=1, chapters_per_speaker=1, dev_speakers=1, test_speakers=1, seed=3)
    r1 = make_speech_corpus(tmp_path / "a", cfg)
    make_speech_corpus(tmp_path / "b", SpeechCfg(**cfg.to_dict()))
    assert r1["failed"] == [] and r1["engines"] == ["espeak", "festival", "flite"]
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert len([k for k in a if k.endswith(".wav")]) == 9
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    # a different seed changes what is read and by whom
    p3, p4 = speech_plan(cfg), speech_plan(cfg.replace(seed=4))
    assert [(u["voice"], u["text"]) for u in p3] != [(u["voice"], u["text"]) for u in p4]


def test_voices_are_distinct():
    # >= 20 speakers whose renderings of the same sentence all differ (different bytes and different mels)
    voices = voice_bank(20, seed=0)
    xs = [synthesize(v, "Every silver lining has a cloud around it.") for v in voices]
    assert len({x.tobytes() for x in xs}) == 20
    durs = [len(x) / 24000 for x in xs]
    assert max(durs) / min(durs) > 1.2  # rates/engines really differ


def test_kicks_deterministic_and_distinct(tmp_path):
    cfg = KicksCfg(
        soundfonts=("timgm6mb",),
        velocities=(120,),
        recorded=True,
        n_recorded=8,
        n_synth=8,
        n_augment=8,
        n_wet=6,
        seed=5,
    )
    r1 = make_kick_pack(tmp_path / "a", cfg)
    make_kick_pack(tmp_path / "b", KicksCfg(**cfg.to_dict()))
    a, b = tree_bytes(tmp_path / "a"), tree_bytes(tmp_path / "b")
    assert a.keys() == b.keys() and all(a[k] == b[k] for k in a)
    assert set(r1["by_source"]) == {"gm", "recorded", "synth", "augmented", "wet"}
    assert r1["tail_level"]["wet"] > r1["tail_level"]["gm"]  # the rooms carry a tail
    kicks = [p for p in (tmp_path / "a").rglob("*.wav") if "extras" not in p.parts]
    assert len(kicks) == r1["kicks"]
    xs = []
    for p in kicks:
        x, sr = sf.read(p, dtype="float32")
        assert sr == 44100 and x.shape == (88200,) and "kick" in p.stem
        xs.append(x)
    D = pairwise_distance(kick_embedding(xs)).numpy() + np.diag(np.full(len(xs), np.inf))
    assert D.min() >= cfg.min_dist - 1e-3  # distinctness holds on the written (16-bit) files


def test_driver_cli(tmp_path):
    (tmp_path / "params.yaml").write_text("""
profile: tiny
corpora:
  seed: 2
  tiny:
    speech: {n_speakers: 3, utts_per_speaker: 2, chapters_per_speaker: 1, dev_speakers: 1, test_speakers: 1}
    kicks: {soundfonts: [timgm6mb], velocities: [120], recorded: false, n_synth: 4, n_augment: 2, n_wet: 2}
""")
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "audiolab.data.corpora",
            "--params",
            str(tmp_path / "params.yaml"),
            "--out",
            str(tmp_path / "data"),
            "--only",
            "speech,kicks",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    rep = json.loads((tmp_path / "data" / "REPORT.json").read_text())
    assert set(rep["corpora"]) == {"speech", "kicks"} and rep["seed"] == 2
    assert rep["corpora"]["speech"]["utterances"] == 6
    items = read_libritts(tmp_path / "data" / "speech")
    assert len(items) == 6 and len({i["speaker"] for i in items}) == 3
    assert {i["split"] for i in items} == {"train-clean-100", "dev-clean", "test-clean"}
    assert abs(rep["hours"] - rep["corpora"]["speech"]["hours"] - rep["corpora"]["kicks"]["hours"]) < 1e-9
    # the report inside the corpus is deterministic (no wall times), so equal corpora hash equal under DVC
    assert not any(k in r for r in rep["corpora"].values() for k in ("wall_s", "x_realtime")), rep
