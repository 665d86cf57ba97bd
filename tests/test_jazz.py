"""Jazz multitrack and stereo music corpora: exact stems, determinism, MIDI structure, chord timeline, layout."""

import json
from pathlib import Path

import mido
import numpy as np
import pytest
import soundfile as sf

from audiolab.core import ConfigError
from audiolab.data.jazz import (
    NOTE_NAMES,
    QUALITIES,
    SOUNDFONTS,
    JazzConfig,
    chord_scale,
    chord_tones,
    form_chords,
    make_jazz_corpus,
)
from audiolab.data.music import MusicConfig, make_music_corpus

FAST_SF = tuple(p for p in SOUNDFONTS if "MuseScore" not in p)  # the .sf3 costs ~2 s per render to open
pytestmark = pytest.mark.skipif(not any(Path(p).exists() for p in FAST_SF), reason="no GM soundfont installed")
CFG = JazzConfig(n_songs=3, seconds=5.0, soundfonts=FAST_SF, workers=2, seed=7)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp("jazz")
    rep = make_jazz_corpus(d, CFG)
    return d, rep


def songs(d):
    return sorted(p for p in Path(d).iterdir() if p.is_dir())


def parse_symbol(sym):
    "'Dbm7b5' -> (1, 'm7b5'): longest note-name prefix, the rest is the quality ('' = major triad)."
    root = max((n for n in NOTE_NAMES if sym.startswith(n)), key=len)
    q = sym[len(root) :] or "maj"
    assert q in QUALITIES, sym
    return NOTE_NAMES.index(root), q


def notes_of(mid, channel):
    "(onset seconds, onset tick, pitch) of every note-on of `channel` in a type-1 file with one tempo."
    tempo = next(m.tempo for tr in mid.tracks for m in tr if m.type == "set_tempo")
    out = []
    for tr in mid.tracks:
        tick = 0
        for m in tr:
            tick += m.time
            if m.type == "note_on" and m.velocity > 0 and m.channel == channel:
                out.append((mido.tick2second(tick, mid.ticks_per_beat, tempo), tick, m.note))
    return out


def chord_at_time(chords, t):
    for c in chords:
        if c["time_s"] - 1e-4 <= t < c["time_s"] + c["duration_s"] - 1e-4:
            return parse_symbol(c["chord"])
    return parse_symbol(chords[-1]["chord"])


def test_report_and_layout(corpus):
    d, rep = corpus
    assert rep["n_songs"] == 3 and rep["skipped"] == []
    assert sum(rep["lead_instruments"].values()) == 3
    for sd in songs(d):
        assert {p.name for p in sd.iterdir()} == {
            "mix.wav",
            "lead.wav",
            "backing.wav",
            "song.mid",
            "lead.mid",
            "backing.mid",
            "chords.json",
            "meta.json",
        }
        meta = json.loads((sd / "meta.json").read_text())
        for k in (
            "key",
            "tempo_bpm",
            "swing",
            "form",
            "lead_instrument",
            "soundfont",
            "lead_gain",
            "soundfont_licence",
        ):
            assert k in meta, k


def test_exact_stems(corpus):
    "The acceptance criterion: max |mix - (lead + backing)| <= 1e-6 on the saved files, over the corpus."
    d, _ = corpus
    worst = 0.0
    for sd in songs(d):
        meta = json.loads((sd / "meta.json").read_text())
        (mix, sr), (lead, _), (back, _) = (
            sf.read(sd / f"{k}.wav", dtype="float32") for k in ("mix", "lead", "backing")
        )
        assert sr == 32000 and sf.info(sd / "mix.wav").subtype == "FLOAT"
        assert mix.shape == lead.shape == back.shape and mix.shape[0] == round(meta["seconds"] * sr)
        assert np.abs(lead).max() > 1e-2 and np.abs(back).max() > 1e-2  # both stems really sound
        assert np.abs(mix).max() == pytest.approx(0.9, abs=1e-4)  # the mix is peak-normalised
        worst = max(worst, float(np.abs(mix - (lead + back)).max()))
    assert worst <= 1e-6


def test_deterministic(corpus, tmp_path):
    "Same seed -> byte-identical files; song i does not depend on how many songs are generated."
    d, _ = corpus
    make_jazz_corpus(tmp_path, CFG.replace(n_songs=2))
    for sd in songs(tmp_path):
        for f in sorted(sd.iterdir()):
            assert f.read_bytes() == (d / sd.name / f.name).read_bytes(), f
    other = tmp_path / "other"
    make_jazz_corpus(other, CFG.replace(n_songs=1, seed=8))
    assert (other / "jazz_00000" / "song.mid").read_bytes() != (d / "jazz_00000" / "song.mid").read_bytes()


def chans(mf) -> set:
    "MIDI channels with note-on events."
    return {m.channel for tr in mf.tracks for m in tr if m.type == "note_on"}


def test_midi_structure(corpus):
    d, _ = corpus
    in_scale = []
    for sd in songs(d):
        chords = json.loads((sd / "chords.json").read_text())
        song, lead, back = (mido.MidiFile(sd / f"{k}.mid") for k in ("song", "lead", "backing"))
        assert chans(lead) == {0} and chans(back) == {1, 2, 9} and chans(song) == {0, 1, 2, 9}
        drum_tracks = [tr for tr in back.tracks if any(m.type == "note_on" and m.channel == 9 for m in tr)]
        assert len(drum_tracks) == 1 and all(m.channel == 9 for m in drum_tracks[0] if m.type == "note_on")
        drums = {n for _, _, n in notes_of(back, 9)}
        assert {36, 44, 51} <= drums  # kick, hi-hat pedal, ride
        # bass: chord tone on beat 1 of every bar
        bar = 4 * song.ticks_per_beat
        ones = [(t, p) for t, tick, p in notes_of(song, 1) if tick % bar == 0]
        assert len(ones) >= len({c["bar"] for c in chords})
        assert all(p % 12 in chord_tones(*chord_at_time(chords, t)) for t, p in ones)
        # lead: mostly within the chord scale of the chord sounding at its onset
        ln = notes_of(lead, 0)
        assert len(ln) >= 5
        hits = [p % 12 in chord_scale(*chord_at_time(chords, t)) for t, _, p in ln]
        assert np.mean(hits) >= 0.75
        in_scale += hits
    assert np.mean(in_scale) >= 0.9  # chromatic approach tones are the exception


def test_chords_match_midi(corpus):
    d, _ = corpus
    for sd in songs(d):
        meta = json.loads((sd / "meta.json").read_text())
        chords = json.loads((sd / "chords.json").read_text())
        assert chords[0]["time_s"] == 0
        for a, b in zip(chords, chords[1:]):
            assert a["time_s"] + a["duration_s"] == pytest.approx(b["time_s"], abs=1e-5)
        end = chords[-1]["time_s"] + chords[-1]["duration_s"]
        assert end == pytest.approx(meta["music_seconds"], abs=1e-5) and end >= CFG.seconds
        spb = mido.bpm2tempo(meta["tempo_bpm"]) / 1e6
        assert end == pytest.approx(meta["n_bars"] * 4 * spb, abs=1e-5)
        midi_len = mido.MidiFile(sd / "song.mid").length
        assert midi_len == pytest.approx(meta["seconds"], abs=2e-3)  # wav length == MIDI length
        assert 0 <= midi_len - end <= CFG.tail_s + spb + 1e-6  # only the release tail after the last chord
        for k in ("lead", "backing"):
            assert mido.MidiFile(sd / f"{k}.mid").length == pytest.approx(midi_len, abs=1e-9)
        assert all(t < end for t, _, _ in notes_of(mido.MidiFile(sd / "song.mid"), 0))


def test_bad_config(tmp_path):
    with pytest.raises(ConfigError, match="none of the soundfonts"):
        make_jazz_corpus(tmp_path, JazzConfig(soundfonts=("/no/such.sf2",)))
    with pytest.raises(ConfigError, match="unknown form"):
        form_chords("polka", 0, 4)
    with pytest.raises(ConfigError, match="unknown keys"):
        JazzConfig.from_dict({"n_song": 3})
    with pytest.raises(ConfigError, match="channels"):
        make_jazz_corpus(tmp_path, JazzConfig(channels=3, soundfonts=FAST_SF))


def test_music_corpus(tmp_path):
    "Stereo 44.1 kHz synth + recorded clips, licences in the sidecars, deterministic."
    cfg = MusicConfig(n_synth=2, synth_seconds=3.0, n_recorded=2, clip_seconds=3.0, soundfonts=FAST_SF, seed=3)
    a, b = tmp_path / "a", tmp_path / "b"
    rep = make_music_corpus(a, cfg)
    make_music_corpus(b, cfg)
    assert rep["n_synth"] == 2
    flacs = sorted(a.rglob("*.flac"))
    assert len(flacs) == rep["n_synth"] + rep["n_recorded"]
    for f in flacs:
        x, sr = sf.read(f, dtype="float32")
        assert sr == 44100 and x.shape == (3 * 44100, 2)
        assert np.abs(x[:, 0] - x[:, 1]).mean() > 1e-4  # real stereo
        meta = json.loads(f.with_suffix(".json").read_text())
        assert meta["source_package"] != "unknown" and meta["licence"]
        assert f.read_bytes() == (b / f.relative_to(a)).read_bytes()  # deterministic, byte for byte
        assert f.with_suffix(".json").read_text() == (b / f.relative_to(a)).with_suffix(".json").read_text()


def test_bad_soundfont_is_skipped_and_reported(tmp_path):
    "A corrupt soundfont: the song is skipped with its reason, no half-written song directory is left."
    bad = tmp_path / "broken.sf2"
    bad.write_bytes(b"RIFF\x00\x00\x00\x00sfbk garbage")
    rep = make_jazz_corpus(tmp_path / "out", JazzConfig(n_songs=1, seconds=2.0, soundfonts=(str(bad),)))
    assert rep["n_songs"] == 0 and len(rep["skipped"]) == 1
    assert rep["skipped"][0]["id"] == "jazz_00000" and rep["skipped"][0]["reason"]
    assert not (tmp_path / "out" / "jazz_00000").exists()


def test_stereo_stems_exact(tmp_path):
    "channels=2 keeps FluidSynth's stereo; the mix is still exactly the stem sum."
    rep = make_jazz_corpus(tmp_path, JazzConfig(n_songs=1, seconds=2.0, channels=2, soundfonts=FAST_SF[-1:], seed=1))
    assert rep["n_songs"] == 1
    mix, lead, back = (
        sf.read(tmp_path / "jazz_00000" / f"{k}.wav", dtype="float32")[0] for k in ("mix", "lead", "backing")
    )
    assert mix.shape[1] == 2 and np.abs(mix[:, 0] - mix[:, 1]).max() > 1e-4
    assert np.abs(mix - (lead + back)).max() <= 1e-6
