"data.shards streaming preprocessing vs the in-memory paths it replaces: equal outputs, resume, bad files, workers."

import json
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from conftest import make_tiny_tokenizer
from audiolab.audio import load_audio
from audiolab.data.shards import ShardDataset, plan_audio, read_index, shard_name, write_shards
from audiolab.data.speech import read_libritts
from audiolab.data.tokens import SpeechTokens, TokenSource, prepare_tokens, tokenize_items


def reference_tokenize_items(tok, items, min_s=0.0, max_s=math.inf, batch_s=64.0):
    "The in-memory tokenizer that data.shards replaced (every waveform loaded first), kept here as the reference."
    wavs, kept = [], []
    for it in items:
        wav, sr = load_audio(it["path"], sr=tok.sample_rate, mono=True)
        if it.get("duration") is not None and it.get("start") is not None:
            a = int(it["start"] * sr)
            wav = wav[:, a : a + int(it["duration"] * sr)]
        if min_s <= wav.shape[-1] / sr <= max_s:
            wavs.append(wav)
            kept.append(it)
    order = sorted(range(len(wavs)), key=lambda j: wavs[j].shape[-1])
    codes, budget, start = [None] * len(wavs), int(batch_s * tok.sample_rate), 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * wavs[order[end]].shape[-1] <= budget:
            end += 1
        group = order[start:end]
        L = wavs[group[-1]].shape[-1]
        c = tok.encode(torch.stack([F.pad(wavs[j], (0, L - wavs[j].shape[-1])) for j in group]))
        for j, row in zip(group, c):
            codes[j] = row[:, : math.ceil(wavs[j].shape[-1] / tok.hop_length)].clone()
        start = end
    return codes, kept


def speech_tree(root, n_spk=3, per_spk=4, sr=24000, seed=0):
    "A LibriTTS-layout tree: `n_spk` speakers of `per_spk` utterances of 0.3-1.5 s, split train/dev/test by speaker."
    g = np.random.default_rng(seed)
    for s in range(n_spk):
        split = ("train-clean-100", "dev-clean", "test-clean")[s] if n_spk == 3 else "train-clean-100"
        d = Path(root) / split / f"{10 + s}" / "1"
        d.mkdir(parents=True, exist_ok=True)
        for j in range(per_spk):
            n = int(g.uniform(0.3, 1.5) * sr)
            t = np.arange(n) / sr
            wav = 0.3 * np.sin(2 * np.pi * (120 + 30 * j + 50 * s) * t) + 0.02 * g.standard_normal(n)
            sf.write(d / f"{10 + s}_1_{j:06d}_000000.wav", wav, sr)
            (d / f"{10 + s}_1_{j:06d}_000000.normalized.txt").write_text("hi")
    return Path(root)


@pytest.fixture(scope="module")
def tok():
    torch.manual_seed(0)
    return make_tiny_tokenizer(bins=32, init_s=2.0)


def test_sharded_tokens_equal_in_memory(tmp_path, tok):
    items = read_libritts(speech_tree(tmp_path / "c", n_spk=1, per_spk=9))
    ref, kept = reference_tokenize_items(tok, items, 0.4, 2.0, batch_s=3.0)
    batches, skipped = plan_audio(items, tok.sample_rate, 3.0, 0.4, 2.0)
    assert len(skipped) == len(items) - len(kept) and len(batches) > 2
    ix = write_shards(tmp_path / "s", items, SpeechTokens(tok), batches, "k", shard_batches=2, keep=("utt_id",))
    ds = ShardDataset(tmp_path / "s", "codes", torch.long)
    assert [it["utt_id"] for it in ds.items] == [it["utt_id"] for it in kept] and len(ix["shards"]) > 1
    for a, b in zip(ds, ref):
        assert torch.equal(a, b)
    codes, kept2 = tokenize_items(tok, items, 0.4, 2.0, batch_s=3.0)  # the in-memory API, now batch by batch
    assert kept2 == kept and all(torch.equal(a, b) for a, b in zip(codes, ref))


def test_resume_bad_file_and_two_workers(tmp_path, tok):
    root = speech_tree(tmp_path / "c", n_spk=1, per_spk=8)
    spk = root / "train-clean-100" / "10" / "1"
    (spk / "10_1_000098_000000.wav").write_bytes(b"RIFF\x00\x00not audio")  # bad header
    good = spk / "10_1_000001_000000.wav"
    (spk / "10_1_000099_000000.wav").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])  # truncated
    tok.save_pretrained(tmp_path / "tok")
    items = read_libritts(root)
    batches, skipped = plan_audio(items, tok.sample_rate, 2.0)
    kw = dict(key="k", shard_batches=1, keep=("utt_id",), skipped=skipped)
    one = write_shards(tmp_path / "one", items, SpeechTokens(tok), batches, **kw)
    bad = {Path(s["file"]).name: s["reason"] for s in one["skipped"]}
    assert (
        set(bad) == {"10_1_000098_000000.wav", "10_1_000099_000000.wav"}
        and "truncated" in bad["10_1_000099_000000.wav"]
    )
    assert len(one["entries"]) == len(items) - 2  # everything else kept

    class Killed(Exception):
        pass

    class Dies(SpeechTokens):
        def encode(self, wavs, items):
            if any(it["utt_id"] == "10_1_000005_000000" for it in items):
                raise Killed
            return super().encode(wavs, items)

    with pytest.raises(Killed):
        write_shards(tmp_path / "re", items, Dies(tok), batches, **kw)
    done = sorted(p.name for p in (tmp_path / "re").glob("shard-*"))
    assert 0 < len(done) < len(one["shards"])
    write_shards(tmp_path / "re", items, SpeechTokens(tok), batches, **kw)  # resumes
    two = write_shards(tmp_path / "two", items, SpeechTokens(tmp_path / "tok"), batches, workers=2, **kw)
    assert two == one == read_index(tmp_path / "re")
    for k in range(len(one["shards"])):
        b1 = (tmp_path / "one" / shard_name(k)).read_bytes()
        assert b1 == (tmp_path / "re" / shard_name(k)).read_bytes() == (tmp_path / "two" / shard_name(k)).read_bytes()


def test_prepare_tokens_speech_lazy(tmp_path, tok):
    tok.save_pretrained(tmp_path / "tok")
    root = speech_tree(tmp_path / "c")
    src = TokenSource(data_dir=str(root), tokenizer_dir=str(tmp_path / "tok"), min_utt_s=0.4, max_utt_s=2.0)
    toks = prepare_tokens(src, tmp_path / "tokens", n_q=3, bins=0)
    assert toks["bins"] == 32 and isinstance(toks["train"], ShardDataset)
    for s, split in zip(("train", "valid", "test"), ("train-clean-100", "dev-clean", "test-clean")):
        ref, kept = reference_tokenize_items(tok, read_libritts(root, [split]), 0.4, 2.0)
        assert toks["ids"][s] == [it["utt_id"] for it in kept]
        assert all(torch.equal(a, b[:3]) for a, b in zip(toks[s], ref))
        assert len(toks["skipped"][s]) == 4 - len(kept)  # too short or too long: reported
    assert set(toks["speakers"]["test"]) == {"12"}
    again = prepare_tokens(src.replace(tokenize_workers=2), tmp_path / "tokens", n_q=3, bins=0)  # cached: same key
    assert again["ids"] == toks["ids"]


def test_kick_latents_streamed_equal_in_memory(tmp_path):
    from audiolab.audio import save_audio
    from audiolab.data.kicks import aggregate_kicks, load_kick_corpus, preprocess_kicks
    from audiolab.models.kick import KICK_SR, KickVAE, KickVAEConfig, encode_latents, synth_kicks
    from audiolab.recipes.kick import KickConfig, encode_kick_corpus
    from audiolab.train.checkpoint import save_pretrained

    for i, (w, k) in enumerate(zip(*synth_kicks(9, seed=3))):
        save_audio(tmp_path / "src" / f"{'_'.join(k)}_kick_{i:03d}.wav", w, KICK_SR)
    aggregate_kicks(tmp_path / "src", tmp_path / "corpus")
    preprocess_kicks(tmp_path / "corpus" / "raw", tmp_path / "corpus" / "mels")
    mels, kws, names = load_kick_corpus(tmp_path / "corpus")
    torch.manual_seed(0)
    vae = KickVAE(KickVAEConfig(channels=(8, 8, 16, 16))).eval()
    save_pretrained(vae, tmp_path / "run" / "vae_model", vae.cfg)
    (tmp_path / "run" / "split.json").write_text(json.dumps(dict(train=names[:6], valid=names[6:])))
    cfg = KickConfig(corpus_dir=str(tmp_path / "corpus"), out_dir=str(tmp_path / "run"), min_count=1)
    info = encode_kick_corpus(cfg, batch_size=4)
    d = torch.load(tmp_path / "run" / "latents.pt", weights_only=True)
    with torch.no_grad():
        ref = encode_latents(vae, mels, batch_size=4)
    assert info["n"] == 9 and info["skipped"] == 0 and d["names"] == names and d["keywords"] == kws
    assert torch.equal(d["latents"], ref)
    (tmp_path / "corpus" / "mels" / (Path(names[2]).stem + ".pt")).unlink()  # a missing mel: reported, the rest kept
    (tmp_path / "run" / "latent_shards" / "index.json").unlink()
    info = encode_kick_corpus(cfg, batch_size=4)
    assert info["n"] == 8 and info["skipped"] == 1
