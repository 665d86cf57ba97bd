"""The vocoder, tokenizer and separator stages read their training crops lazily (`data.datasets.CodecDataset`): the
batches do not depend on the DataLoader workers or on a mid-epoch resumption, a song's stems stay aligned, and bad
files are reported, not fatal."""

import os

import numpy as np
import pytest
import soundfile as sf
import torch
from torch.utils.data import DataLoader

from audiolab.models.separation import SeparatorConfig
from audiolab.models.tokenizer import TokenizerConfig
from audiolab.recipes.separation import SeparatorRecipe, separator_data
from audiolab.recipes.tokenizer import TokenizerRecipe, tokenizer_data
from audiolab.recipes.vocoder import VocoderRecipe, vocoder_data
from audiolab.train.learner import resumable_loader

SR = 8000  # the tokenizer's and the separator's rate here (the vocoder's preset is 24 kHz)


def _wav(path, x, sr=SR):
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, np.asarray(x, dtype=np.float32), sr, subtype="FLOAT")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Songs k = 0..3 (3 s): lead sample n = (k + n / 1e5) / 8, backing = lead + 1 / 8; a song with a corrupt lead;
    LibriTTS-layout speech (24 kHz noise) with a corrupt utterance."""
    root = tmp_path_factory.mktemp("lazy_data")
    n = np.arange(3 * SR)
    for k in range(4):
        lead = (k + n / 1e5) / 8
        for stem, x in (("lead", lead), ("backing", lead + 1 / 8), ("mix", 2 * lead + 1 / 8)):
            _wav(root / "jazz" / f"song{k}" / f"{stem}.wav", x)
    _wav(root / "jazz" / "song4" / "mix.wav", np.zeros(SR))
    _wav(root / "jazz" / "song4" / "backing.wav", np.zeros(SR))
    (root / "jazz" / "song4" / "lead.wav").write_bytes(b"RIFF....WAVEjunk")
    rng = np.random.default_rng(0)
    for split, count in (("train-clean-100", 6), ("dev-clean", 2)):
        for i in range(count):
            _wav(
                root / "speech" / split / "19" / "198" / f"19_198_{i:06d}.wav", 0.1 * rng.standard_normal(24000), 24000
            )
    (root / "speech" / "train-clean-100" / "19" / "198" / "19_198_bad.wav").write_bytes(b"RIFF....WAVEjunk")
    return root


def _vocoder(root):
    r = VocoderRecipe(
        data_dir=str(root / "speech"), train_glob="train-clean-100/**/*.wav", valid_glob="dev-clean/**/*.wav"
    )
    return vocoder_data(r.replace(segment=2048))[0]


def _tokenizer(root):
    r = TokenizerRecipe(model=TokenizerConfig(sample_rate=SR), jazz_dir=str(root / "jazz"), segment_s=0.1)
    return tokenizer_data(r.replace(speech_dir=str(root / "speech")))["train"]


def _separator(root):
    r = SeparatorRecipe(corpus=str(root / "jazz"), model=SeparatorConfig(sample_rate=SR, segment_s=0.1))
    return separator_data(r)[0]


STAGES = {"vocoder": _vocoder, "tokenizer": _tokenizer, "separator": _separator}


def _batches(ds, workers: int, start: int = 0, epoch: int = 1) -> list[torch.Tensor]:
    "The batches of `epoch` as the `Learner` draws them (shuffled, `set_epoch`), from batch `start` on."
    dl = resumable_loader(DataLoader(ds, batch_size=4, shuffle=True, num_workers=workers), seed=0)
    dl.sampler.set_epoch(epoch)
    ds.set_epoch(epoch)
    dl.sampler.start = 4 * start  # the Learner's mid-epoch resumption
    return [b if isinstance(b, torch.Tensor) else torch.stack(b, 1) for b in dl]


@pytest.mark.parametrize("stage", list(STAGES))
def test_batches_same_for_any_workers_and_a_resumed_epoch(corpus, stage):
    ds = STAGES[stage](corpus)
    b0 = _batches(ds, 0)
    assert len(b0) >= 4 and all(torch.isfinite(b).all() for b in b0)
    assert torch.equal(torch.cat(b0), torch.cat(_batches(ds, 2)))
    resumed = STAGES[stage](corpus)  # a new process: the dataset rebuilt from the files
    assert torch.equal(torch.cat(b0[2:]), torch.cat(_batches(resumed, 2, start=2)))
    assert not torch.equal(torch.cat(b0), torch.cat(_batches(ds, 0, epoch=2)))  # another epoch, other crops


def test_stems_stay_aligned(corpus):
    "Every (lead, backing) crop, through 2 workers: backing - lead = 1/8, and both at the song's same offsets."
    ds = _separator(corpus)
    assert 1 <= len(ds.files) < 4  # the others held out
    for b in _batches(ds, 2):  # (B, 2, 1, L)
        lead, backing = b[:, 0, 0].double(), b[:, 1, 0].double()
        torch.testing.assert_close(backing - lead, torch.full_like(lead, 1 / 8), atol=1e-6, rtol=0)
        k = (8 * lead[:, :1]).floor()  # the song
        n = (8 * lead - k) * 1e5  # the sample index of each sample
        torch.testing.assert_close(n - n[:, :1], torch.arange(lead.shape[1]).double().expand_as(n), atol=0.05, rtol=0)


def test_bad_files_reported(corpus, tmp_path):
    "Unreadable headers are in `.skipped`; a file that fails on reading is in `.failed` and others serve its crops."
    assert [s["path"].endswith("19_198_bad.wav") for s in _vocoder(corpus).skipped] == [True]
    assert [s["path"].endswith("lead.wav") for s in _separator(corpus).skipped] == [True]
    assert sorted(os.path.basename(s["path"]) for s in _tokenizer(corpus).skipped) == ["19_198_bad.wav", "lead.wav"]
    x = 0.1 * np.random.default_rng(1).standard_normal(24000)
    _wav(tmp_path / "train" / "good.wav", x, 24000)
    x[::100] = np.nan
    _wav(tmp_path / "train" / "nan.wav", x, 24000)
    _wav(tmp_path / "valid" / "v.wav", x[:100] * 0, 24000)
    r = VocoderRecipe(data_dir=str(tmp_path), train_glob="train/*.wav", valid_glob="valid/*.wav", segment=2048)
    ds = vocoder_data(r)[0]
    crops = torch.stack([ds[i] for i in range(len(ds))])
    assert torch.isfinite(crops).all() and list(ds.failed) == [str(tmp_path / "train" / "nan.wav")]
    assert "non-finite" in ds.failed[str(tmp_path / "train" / "nan.wav")]


def test_signature_follows_the_files(corpus):
    "The stages' resume signatures hash `stamp()`: a file's new date (or size) changes it."
    ds = _separator(corpus)
    before = ds.stamp()
    p = corpus / "jazz" / "song0" / "lead.wav"
    st = p.stat()
    os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    try:
        assert _separator(corpus).stamp() != before and len(before) == 2 * len(ds.files)
    finally:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
