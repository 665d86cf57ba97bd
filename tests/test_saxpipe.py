"SaxGPT data pipeline end to end on a toy corpus: model separation, keep_* switches, bad files, windows vs splits."

import math
import warnings

import pytest
import torch

from audiolab.audio import audio_info, save_audio, load_audio
from audiolab.core import ConfigError
from audiolab.data.shards import ShardDataset
from audiolab.data.saxpipe import (
    SaxPipeConfig,
    CodeWindows,
    run_ingest,
    run_separate,
    run_select,
    run_augment,
    run_tokenize,
    run_datasets,
    reset,
    rms_windows,
    augment_pair,
    window_starts,
    split_songs,
)
from audiolab.models.separation import SeparatorConfig, SeparatorNet
from conftest import make_tiny_tokenizer

warnings.filterwarnings("ignore", message=".*weight_norm.*")
SR = 16000


def tone(f, secs, amp=0.3):
    t = torch.arange(int(secs * SR)) / SR
    return amp * torch.sin(2 * math.pi * f * t)[None]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("src")
    for i in range(3):
        d = root / f"song{i}"
        d.mkdir()
        lead = tone(300 + 40 * i, 2.0)
        lead[..., : SR // 2] = 0  # lead silent for the first 0.5 s
        backing = tone(100 + 10 * i, 2.0, 0.2)
        for k, w in (("lead", lead), ("backing", backing), ("mix", lead + backing)):
            save_audio(d / f"{k}.wav", w, SR, subtype="FLOAT")
    (root / "empty.wav").write_bytes(b"")  # bad file
    return root


def cfg_for(tmp_path, corpus, **kw):
    return SaxPipeConfig(
        **{
            **dict(
                root=str(tmp_path / "run"),
                source=str(corpus),
                sample_rate=SR,
                rms_threshold=0.02,
                min_window_s=1.0,
                rms_frame_s=0.2,
                rms_stride_s=0.05,
                semitone_steps=(2,),
                tempo_ratios=(0.8,),
                n_fft=512,
                hop_length=128,
                seq_len=6,
                stride=2,
                val=0.2,
                test=0.2,
                padding_idx=64,
            ),
            **kw,
        }
    )


def tiny_tokenizer():
    torch.manual_seed(0)
    return make_tiny_tokenizer(init_amp=0.3, sample_rate=SR, ratios=(8, 5, 4, 2))


def test_pipeline_with_model_separation_and_discarded_intermediates(tmp_path, corpus):
    net = SeparatorNet(
        SeparatorConfig(sample_rate=SR, channels=8, depth=2, nfft=256, t_layers=1, t_heads=2, segment_s=1.0)
    )
    net.save_pretrained(tmp_path / "sep")
    keep = dict(keep_dl=False, keep_stems=False, keep_clips=False, keep_aug_clips=False)
    cfg = cfg_for(tmp_path, corpus, separation="model", separator=str(tmp_path / "sep"), rms_threshold=0.0, **keep)
    r1 = run_ingest(cfg)
    assert r1["n_songs"] == 3 and [s["file"].endswith("empty.wav") for s in r1["skipped"]] == [True]
    r2 = run_separate(cfg)
    assert r2["n_songs"] == 3 and r2["discarded_ingest"] and not cfg.dir("1_ingest").exists()
    info = audio_info(cfg.dir("2_stems") / "lead" / "song0.wav")
    assert info.sr == SR and info.channels == 1 and info.frames == 2 * SR  # stems keep rate and length
    r3 = run_select(cfg)
    assert r3["n_clips"] == 3 and r3["discarded_stems"]  # threshold 0: whole song is one window
    r4 = run_augment(cfg)
    assert r4["n_aug_clips"] == 9 and r4["discarded_clips"]
    r5 = run_tokenize(cfg, tiny_tokenizer())
    assert r5["n_items"] == 9 and r5["discarded_aug_clips"]
    r6 = run_datasets(cfg)
    assert sum(r6["split"].values()) == 3 and "discarded_codes" not in r6
    assert (cfg.dir("6_codes") / "index.json").exists()  # the code shards stay: the windows read them
    assert sorted(p.name for p in cfg.dir("7_datasets").iterdir()) == [
        "split.json",
        "test.json",
        "train.json",
        "val.json",
    ]
    assert sorted(p.name for p in cfg.dir("reports").iterdir()) == sorted(
        f"{s}.json" for s in ("ingest", "separate", "select", "augment", "tokenize", "datasets")
    )


def test_oracle_pipeline_windows_cover_songs_without_crossing_splits(tmp_path, corpus):
    cfg = cfg_for(tmp_path, corpus, separation="oracle")
    for step in (run_ingest, run_separate, run_select, run_augment):
        step(cfg)
    aug = load_audio(cfg.dir("5_aug_clips") / "song0__c00__t0.8" / "lead.wav")
    orig = load_audio(cfg.dir("5_aug_clips") / "song0__c00__orig" / "lead.wav")
    assert aug[1] == orig[1] == SR and aug[0].shape[-1] == round(orig[0].shape[-1] / 0.8)  # tempo: L / ratio, same rate
    run_tokenize(cfg, tiny_tokenizer())
    run_datasets(cfg)
    sets = {k: CodeWindows.load(cfg.dir("7_datasets") / f"{k}.json") for k in ("train", "val", "test")}
    songs = {k: s.songs() for k, s in sets.items()}
    assert set.union(*songs.values()) == {f"song{i}" for i in range(3)} and sum(map(len, songs.values())) == 3
    for name, ds in sets.items():
        for i, it in enumerate(ds.items):  # each item (clip copy) fully covered
            T = it["lead"].shape[-1]
            cov = torch.zeros(T, dtype=torch.bool)
            for j, (ii, s) in enumerate(ds.index):
                if ii != i:
                    continue
                b, ld = ds[j]
                assert b.shape == ld.shape == (4, 6)
                valid = min(6, T - s)
                assert (ld[:, valid:] == 64).all() and (ld[:, :valid] < 64).all()  # padding only at the end
                assert torch.equal(ld[:, :valid], it["lead"][:, s : s + valid].long())
                cov[s : s + 6] = True
            assert cov.all()
            assert ds.song_ids[i] in songs[name]  # no window crosses splits


def test_rms_windows_known_regions():
    sig = torch.cat([tone(200, 2.0), torch.zeros(1, SR), tone(200, 1.5), torch.zeros(1, SR // 2), tone(200, 0.4)], -1)
    w = rms_windows(sig, SR, threshold=0.05, min_window_s=1.0, frame_s=0.1, stride_s=0.02)
    assert len(w) == 2
    for (s, e), (s0, e0) in zip(w, [(0.0, 2.0), (3.0, 4.5)]):
        assert abs(s - s0) <= 0.07 + 1e-9 and abs(e - e0) <= 0.07 + 1e-9  # half a frame + a stride


def test_augmentation_keeps_length_rate_alignment():
    lead, backing = tone(440, 1.0), tone(110, 1.0)
    for tag, ld, b in augment_pair(lead, backing, SR, (-2, 3), (0.9, 1.2), 1024, 256):
        r = float(tag[1:]) if tag.startswith("t") else 1.0
        assert ld.shape == b.shape == (1, round(SR / r)), tag


def test_window_and_split_errors():
    with pytest.raises(ConfigError):
        window_starts(10, 5, 6)
    with pytest.raises(ConfigError):
        split_songs({"a": 1}, 0.5, 0.5)


def test_auto_separation_uses_exact_stems_else_the_separator(tmp_path, corpus):
    "separation='auto': song folders with lead/backing stems are read as they are; a loose mix goes through the model."
    src = tmp_path / "src"
    src.mkdir()
    for d in corpus.iterdir():
        if d.is_dir():
            (src / d.name).symlink_to(d, target_is_directory=True)
    save_audio(src / "loose.wav", tone(500, 2.0) + tone(120, 2.0, 0.2), SR, subtype="FLOAT")  # no stems: needs a model
    cfg = cfg_for(tmp_path, src, separation="auto")
    run_ingest(cfg)
    with pytest.raises(ConfigError, match="separator"):
        run_separate(cfg)  # one song needs the missing model
    net = SeparatorNet(
        SeparatorConfig(sample_rate=SR, channels=8, depth=2, nfft=256, t_layers=1, t_heads=2, segment_s=1.0)
    )
    net.save_pretrained(tmp_path / "sep")
    rep = run_separate(cfg.replace(separator=str(tmp_path / "sep")))
    assert rep["songs_by_mode"] == {"model": 1, "oracle": 3} and not rep["skipped"]
    exact, _ = load_audio(corpus / "song1" / "lead.wav")
    got, _ = load_audio(cfg.dir("2_stems") / "lead" / "song1.wav")
    assert torch.allclose(
        got / got.abs().max(), exact / exact.abs().max(), atol=1e-4
    )  # oracle: the exact stem, rescaled
    assert audio_info(cfg.dir("2_stems") / "backing" / "loose.wav").frames == 2 * SR


def test_batched_tokenization_equals_one_wave_at_a_time(tmp_path, corpus):
    "Encoding a clip's equal-length waves as one batch gives the codes of encoding each wave alone."
    cfg = cfg_for(tmp_path, corpus, separation="oracle", tokenize_batch=8)
    for step in (run_ingest, run_separate, run_select, run_augment):
        step(cfg)
    tok = tiny_tokenizer()
    rep = run_tokenize(cfg, tok)
    assert rep["n_items"] == 9 and rep["audio_seconds"] > 0 and not rep["skipped"]
    codes = ShardDataset(cfg.dir("6_codes"))
    for name in ("song2__c00__orig", "song2__c00__p+2", "song2__c00__t0.8"):
        i = [it["clip"] for it in codes.items].index(name)
        item = codes[i]
        assert codes.items[i]["song_id"] == "song2" and item["lead"].dtype == torch.int16
        for k in ("lead", "backing"):
            wav, _ = load_audio(cfg.dir("5_aug_clips") / name / f"{k}.wav")
            with torch.inference_mode():
                alone = tok.encode_long(wav[None], cfg.chunk_len_s)[0]
            assert torch.equal(item[k].long(), alone[:, : item[k].shape[-1]]), (name, k)


def test_two_tokenize_workers_write_the_codes_of_one(tmp_path, corpus):
    "tokenize_workers=2 spawned processes share the code shards and write the records of one process; the windows too."
    cfg = cfg_for(tmp_path, corpus, separation="oracle", tokenize_batch=2)  # 9 batches: shards of 8 and 1
    for step in (run_ingest, run_separate, run_select, run_augment):
        step(cfg)
    tok = tiny_tokenizer()
    one = run_tokenize(cfg, tok)
    ref = ShardDataset(cfg.dir("6_codes"))
    recs = [ref[i] for i in range(len(ref))]
    reset(cfg, "6_codes")
    two = run_tokenize(cfg.replace(tokenize_workers=2), tok)
    got = ShardDataset(cfg.dir("6_codes"))
    assert len(got.shards) == 2 and one["n_items"] == two["n_items"] == len(got) == 9
    assert got.items == ref.items and got.key == ref.key
    for i, r in enumerate(recs):
        assert all(torch.equal(got[i][k], r[k]) for k in ("lead", "backing")), got.items[i]
