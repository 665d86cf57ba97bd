"""Generation speed of the embedded corpora, in x real time (seconds of audio made per wall second).

Speech is also measured per TTS engine, kicks per source; jazz and music as whole corpora.
Writes results/bench/corpora.json.

    python bench/corpora_speed.py [--scale 1.0] [--out results/bench/corpora.json]
"""

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from audiolab.data.jazz import JazzConfig, make_jazz_corpus
from audiolab.data.kicks import (
    KicksCfg,
    add_room,
    augment_kick,
    load_kick,
    make_kick_pack,
    random_kick,
    recorded_kick_files,
    render_gm_kicks,
    synth_kick,
)
from audiolab.data.music import MusicConfig, make_music_corpus
from audiolab.data.speech import SpeechCfg, make_speech_corpus, synthesize, voice_bank


def timed(fn, *a, **kw):
    t = time.perf_counter()
    r = fn(*a, **kw)
    return r, time.perf_counter() - t


def bench_speech(tmp: Path, scale: float) -> dict:
    text = "The real trouble with reality is that there's no background music."
    engines = {}
    for eng in ("espeak", "flite", "festival"):
        v = next(v for v in voice_bank(40, 0) if v.engine == eng)
        audio, wall = 0.0, 0.0
        for _ in range(max(1, int(3 * scale))):
            x, dt = timed(synthesize, v, text)
            audio += len(x) / 24000
            wall += dt
        engines[eng] = dict(
            voice=v.tag, audio_s=round(audio, 2), wall_s=round(wall, 3), x_realtime=round(audio / wall, 1)
        )
    cfg = SpeechCfg(n_speakers=24, utts_per_speaker=max(1, int(2 * scale)), workers=2)
    rep, wall = timed(make_speech_corpus, tmp / "speech", cfg)
    return dict(
        corpus=dict(
            utterances=rep["utterances"],
            audio_s=round(rep["seconds"], 1),
            wall_s=round(wall, 2),
            x_realtime=round(rep["seconds"] / wall, 1),
        ),
        per_engine=engines,
    )


def bench_kicks(tmp: Path, scale: float) -> dict:
    per = {}
    xs, dt = timed(render_gm_kicks, "timgm6mb")
    per["gm_timgm6mb"] = (len(xs) * 2.0, dt)
    files = recorded_kick_files()
    _, dt = timed(lambda: [load_kick(p) for p, _ in files])
    per["recorded"] = (len(files) * 2.0, dt)
    rng = np.random.default_rng(0)
    n = max(10, int(50 * scale))
    ks, dt = timed(lambda: [synth_kick(random_kick(rng)) for _ in range(n)])
    per["synth"] = (n * 2.0, dt)
    _, dt = timed(lambda: [augment_kick(k, rng) for k in ks])
    per["augment"] = (n * 2.0, dt)
    _, dt = timed(lambda: [add_room(k, rng) for k in ks])
    per["wet"] = (n * 2.0, dt)
    cfg = KicksCfg(n_synth=int(150 * scale), n_augment=int(40 * scale), n_wet=int(90 * scale))  # the tiny profile's mix
    rep, wall = timed(make_kick_pack, tmp / "kicks", cfg)
    return dict(
        corpus=dict(
            kicks=rep["kicks"],
            audio_s=rep["seconds"],
            wall_s=round(wall, 2),
            x_realtime=round(rep["seconds"] / wall, 1),
            distinctness=rep["distinctness"],
        ),
        per_source={k: dict(audio_s=a, wall_s=round(w, 3), x_realtime=round(a / w, 1)) for k, (a, w) in per.items()},
    )


def bench_other(tmp: Path, name: str, make, cfg) -> dict:
    "Time one corpus generator `make(folder, cfg)`."
    rep, wall = timed(make, tmp / name, cfg)
    secs = rep.get("seconds") or rep.get("hours", 0) * 3600
    return dict(audio_s=round(secs, 1), wall_s=round(wall, 2), x_realtime=round(secs / wall, 1))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the workload")
    ap.add_argument("--out", default="results/bench/corpora.json")
    a = ap.parse_args()
    res = dict(machine=dict(cpus=os.cpu_count(), platform=platform.platform(), load_avg=os.getloadavg()), scale=a.scale)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        res["speech"] = bench_speech(tmp, a.scale)
        res["kicks"] = bench_kicks(tmp, a.scale)
        jazz = JazzConfig(n_songs=max(1, int(2 * a.scale)), seconds=15.0)
        res["jazz"] = bench_other(tmp, "jazz", make_jazz_corpus, jazz)
        music = MusicConfig(n_synth=max(1, int(2 * a.scale)), n_recorded=max(1, int(2 * a.scale)))
        res["music"] = bench_other(tmp, "music", make_music_corpus, music)
    res["machine"]["load_avg_end"] = os.getloadavg()
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
