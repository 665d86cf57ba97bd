"""AudioLM (VALL-E AR + NAR on audio prompts): masks, stage selection, EOS, shapes, KV cache, training."""

import json
import math
import random
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import make_tiny_tokenizer
from audiolab.core import ConfigError, InputError
from audiolab.data.tokens import DurationBatchSampler, PromptTargetCollate, synthetic_codes, tokenize_items
from audiolab.eval.lm import top_k_unigram_accuracy
from audiolab.models.audiolm import (
    AudioLM,
    AudioLMConfig,
    ar_attn_mask,
    ar_inputs_targets,
    cached_ar_logits,
    nar_attn_mask,
    _random_slice,
)
from audiolab.recipes.audiolm import AudioLMTrainConfig, audiolm_tokens, evaluate_audiolm, train_audiolm

torch.set_num_threads(1)  # tiny models: one thread is faster than two on the shared CPU

TINY = AudioLMConfig(n_q=4, bins=16, dim=32, heads=4, layers=2, dropout=0.0)

# VALL-E's tables (P1..P3 | T1..T3), verbatim: ✓ may attend, ✗ may not.
VALLE_AR = """
✓ ✓ ✓ ✗ ✗ ✗
✓ ✓ ✓ ✗ ✗ ✗
✓ ✓ ✓ ✗ ✗ ✗
✓ ✓ ✓ ✓ ✗ ✗
✓ ✓ ✓ ✓ ✓ ✗
✓ ✓ ✓ ✓ ✓ ✓"""
VALLE_NAR = """
✓ ✓ ✓ ✗ ✗ ✗
✓ ✓ ✓ ✗ ✗ ✗
✓ ✓ ✓ ✗ ✗ ✗
✓ ✓ ✓ ✓ ✓ ✓
✓ ✓ ✓ ✓ ✓ ✓
✓ ✓ ✓ ✓ ✓ ✓"""


def table(s):
    return torch.tensor([[c == "✓" for c in r.split()] for r in s.strip().splitlines()])


def batch(B=3, K=4, bins=16, seed=0, lens=None):
    g = torch.Generator().manual_seed(seed)
    codes = [torch.randint(0, bins, (K, n), generator=g) for n in (lens or [20, 13, 9][:B])]
    return PromptTargetCollate()(codes)


def train_cfg(bins: int, max_steps: int, **kw) -> AudioLMTrainConfig:
    "A one-layer d32 stage config: `kw` are the section's top-level keys."
    return AudioLMTrainConfig.from_dict(
        dict(
            model=dict(n_q=4, bins=bins, dim=32, heads=4, layers=1, dropout=0.0),
            train=dict(max_steps=max_steps, valid_every=0, warmup_steps=0, precision="fp32"),
            max_frames=300,
            **kw,
        )
    )


def model(cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return AudioLM(cfg).eval()


def test_masks_match_valle_tables():
    assert torch.equal(ar_attn_mask(3, 3), table(VALLE_AR))
    assert torch.equal(nar_attn_mask(3, 3), table(VALLE_NAR))
    # general sizes: same block structure
    m = ar_attn_mask(4, 5)
    assert not m[:4, 4:].any() and m[:, :4].all() and torch.equal(m[4:, 4:], torch.ones(5, 5, dtype=torch.bool).tril())
    n = nar_attn_mask(4, 5)
    assert not n[:4, 4:].any() and n[4:].all()


def test_prompt_never_sees_target_and_ar_is_causal():
    m, b = model(), batch()
    with torch.no_grad():
        q = b["target"][:, 0]
        ref = m.ar_logits(b["prompt"], None, q, None)
        q2 = q.clone()
        q2[:, 5:] = (q2[:, 5:] + 3) % 16
        assert torch.allclose(m.ar_logits(b["prompt"], None, q2, None)[:, :5], ref[:, :5], atol=1e-5)
        assert not torch.allclose(m.ar_logits(b["prompt"], None, q2, None)[:, 5:], ref[:, 5:], atol=1e-5)
        # NAR: changing a target frame changes outputs everywhere in the target (non-causal)
        t2 = b["target"].clone()
        t2[:, 0, -1] = (t2[:, 0, -1] + 1) % 16
        n1, n2 = (m.nar_logits(b["prompt"], None, t, None, 1) for t in (b["target"], t2))
        assert not torch.allclose(n1[:, 0], n2[:, 0], atol=1e-6)


def test_nar_stage_selection():
    m = AudioLM(TINY)
    b = batch()
    random.seed(0)
    seen = [int(m.training_step(b)["nar_stage"]) for _ in range(30)]
    assert set(seen) == {2, 3, 4}  # quantizers 2..4, one stage per step
    for stage in (1, 2, 3):  # only the chosen stage's head learns
        m.zero_grad()
        m.training_step(b, stage=stage)["loss"].backward()
        got = [h.weight.grad is not None and h.weight.grad.abs().sum() > 0 for h in m.nar_heads]
        assert got == [i == stage - 1 for i in range(3)]
        assert m.ar_head.weight.grad.abs().sum() > 0  # AR always trains
    with pytest.raises(ValueError, match="stage"):
        m.nar_logits(b["prompt"], None, b["target"], None, 4)
    every = AudioLM(TINY.replace(nar_stages_per_step=3))  # every stage each step: every head learns
    out = every.training_step(b)
    assert "nar_stage" not in out
    out["loss"].backward()
    assert all(h.weight.grad.abs().sum() > 0 for h in every.nar_heads)
    with pytest.raises(ConfigError, match="nar_stages_per_step"):
        TINY.replace(nar_stages_per_step=4)


def test_nar_stage_sees_only_coarser_levels():
    m, b = model(), batch()
    t2 = b["target"].clone()
    t2[:, 2:] = (t2[:, 2:] + 5) % 16  # change levels 3, 4
    with torch.no_grad():
        assert torch.allclose(
            m.nar_logits(b["prompt"], None, b["target"], None, 2), m.nar_logits(b["prompt"], None, t2, None, 2)
        )
        assert not torch.allclose(
            m.nar_logits(b["prompt"], None, b["target"], None, 3), m.nar_logits(b["prompt"], None, t2, None, 3)
        )


@pytest.mark.parametrize("nar_rope", [False, True])
def test_nar_logits_do_not_depend_on_batch_padding(nar_rope):
    "Rotary positions follow each prompt's true length: an utterance scores the same alone or padded in a batch."
    m = model(TINY.replace(nar_rope=nar_rope))
    b = batch(lens=[40, 13, 22])
    for stage in (1, 3):
        with torch.no_grad():
            full = m.nar_logits(b["prompt"], b["prompt_lens"], b["target"], b["target_lens"], stage)
        for i in range(3):
            pl, tl = int(b["prompt_lens"][i]), int(b["target_lens"][i])
            with torch.no_grad():
                alone = m.nar_logits(b["prompt"][i : i + 1, :, :pl], None, b["target"][i : i + 1, :, :tl], None, stage)
            torch.testing.assert_close(full[i : i + 1, :tl], alone, atol=1e-5, rtol=1e-4)


def test_eos_targets_and_generation():
    inp, tgt = ar_inputs_targets(torch.tensor([[3, 4, 5], [6, 7, 0]]), torch.tensor([3, 1]), bos=17, eos=16)
    assert inp[:, 0].eq(17).all() and tgt.tolist() == [[3, 4, 5, 16], [6, 16, -100, -100]]
    m = model()
    p = torch.randint(0, 16, (4, 4, 6), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        m.ar_head.bias[TINY.eos] = 1e4  # EOS always wins
        codes, lens = m.inference(p, 10, temperature=0, return_lengths=True)
        assert codes.shape == (4, 4, 0) and lens.tolist() == [0] * 4
        q1, lens = m.generate_ar(p, 10, temperature=0, min_new_tokens=3)  # EOS blocked for 3 steps
        assert lens.tolist() == [3] * 4 and q1.shape == (4, 3)
        # rows that stop at different steps: find an EOS bias that spreads them; batch == each row alone
        for bias in torch.linspace(-2, 6, 33):
            m.ar_head.bias[TINY.eos] = bias
            q1, lens = m.generate_ar(p, 12, temperature=0)
            if len(set(lens.tolist())) > 1 and lens.min() < 12:
                break
        else:
            pytest.fail("no EOS bias made rows stop at different steps")
        assert q1.shape[1] == int(lens.max())
        for i in range(4):
            qi, li = m.generate_ar(p[i : i + 1], 12, temperature=0)
            assert int(li) == int(lens[i]) and torch.equal(qi[0, :li], q1[i, :li])
            assert q1[i, lens[i] :].eq(0).all() and not q1[i, : lens[i]].eq(TINY.eos).any()
        codes = m.generate_nar(p, q1, lens)
        assert codes.shape == (4, 4, q1.shape[1]) and all(codes[i, :, lens[i] :].eq(0).all() for i in range(4))


@pytest.mark.parametrize(
    "n_q,prefix_mode,ratio_range", [(4, 0, None), (4, 1, None), (4, 2, (0.2, 0.6)), (2, 0, None), (3, 1, (0.3, 0.5))]
)
def test_shapes_across_knobs(n_q, prefix_mode, ratio_range):
    cfg = TINY.replace(n_q=n_q, prefix_mode=prefix_mode)
    m = AudioLM(cfg)
    codes = synthetic_codes(5, n_q=n_q, bins=16, min_frames=8, max_frames=30, seed=2)
    b = PromptTargetCollate(ratio_range=ratio_range)(codes)
    out = m.training_step(b)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    v = m.validation_step(b)
    assert {f"nar_acc_q{k}" for k in range(2, n_q + 1)} <= set(v)
    assert m.ar_logits(b["prompt"], b["prompt_lens"], b["target"][:, 0], b["target_lens"]).shape == (
        5,
        b["target"].shape[-1],
        17,
    )
    m.eval()
    c, lens = m.inference(
        b["prompt"], 7, temperature=1.0, top_k=5, top_p=0.9, prompt_lens=b["prompt_lens"], return_lengths=True
    )
    assert c.shape == (5, n_q, int(lens.max())) and int(c.max()) < 16 and lens.max() <= 7


def test_bad_inputs():
    with pytest.raises(ConfigError, match="prefix_mode"):
        AudioLMConfig(prefix_mode=5)
    with pytest.raises(ConfigError, match="n_q"):
        AudioLMConfig(n_q=1)
    with pytest.raises(ConfigError, match="prompt_ratio"):
        PromptTargetCollate(prompt_ratio=1.2)
    m, p = model(), torch.randint(0, 16, (2, 4, 5))
    with pytest.raises(InputError, match="prompt_tokens.*codebooks"):
        m.inference(p[:, :3], 4)
    hi, neg = p.clone(), p.clone()
    hi[0, 1, 2] = 16
    neg[1, 3, 0] = -1
    with pytest.raises(InputError, match=r"prompt_tokens.*\[0, 16\).*16\]"):
        m.inference(hi, 4)
    with pytest.raises(InputError, match=r"\[0, 16\).*\[-1,"):
        m.inference(neg, 4)
    with pytest.raises(InputError, match="integer"):
        m.inference(p.float(), 4)
    with pytest.raises(InputError, match="dims"):
        m.inference(p[0], 4)
    with pytest.raises(InputError, match="too short"):
        m.inference(p[..., :0], 4)
    with pytest.raises(InputError, match="prompt_lens"):
        m.inference(p, 4, prompt_lens=torch.tensor([5, 6]))
    with pytest.raises(InputError, match="max_new_tokens"):
        m.inference(p, -1)
    with pytest.raises(InputError, match="temperature"):
        m.inference(p, 4, temperature=float("nan"))
    with pytest.raises(InputError, match="top_p"):
        m.inference(p, 4, top_p=1.5)
    with pytest.raises(ConfigError, match="longest"):
        DurationBatchSampler([10, 50], 40)


def test_cache_equals_no_cache():
    m = model(seed=3)
    g = torch.Generator().manual_seed(0)
    p = torch.randint(0, 16, (3, 4, 9), generator=g)
    pl = torch.tensor([9, 5, 7])
    q_in = torch.cat([torch.full((3, 1), TINY.bos), torch.randint(0, 16, (3, 15), generator=g)], 1)
    assert torch.allclose(cached_ar_logits(m, p, q_in, pl), m.ar_logits(p, pl, q_in, None), atol=1e-5)
    kw = dict(temperature=0, prompt_lens=pl, min_new_tokens=40)  # a random model would say EOS at once
    a, la = m.generate_ar(p, 40, use_cache=True, **kw)
    b, lb = m.generate_ar(p, 40, use_cache=False, **kw)
    assert torch.equal(a, b) and torch.equal(la, lb) and a.shape[1] == 40 and len(a.unique()) > 3
    # sampling with the same generator seed also matches
    a = m.inference(p, 20, temperature=1.0, top_k=8, generator=torch.Generator().manual_seed(5))
    b = m.inference(p, 20, temperature=1.0, top_k=8, use_cache=False, generator=torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_prefix_mode_2_slices_are_contiguous():
    torch.manual_seed(0)
    p = torch.arange(40).view(1, 1, 40).expand(4, 2, 40).clone()
    lens = torch.tensor([40, 30, 10, 2])
    s, n = _random_slice(p, lens, 0.5)
    for i in range(4):
        assert lens[i] / 2 <= n[i] <= lens[i]
        row = s[i, 0, : n[i]]
        assert torch.equal(row, torch.arange(int(row[0]), int(row[0]) + int(n[i]))) and row[-1] < lens[i]


def test_duration_batches():
    lens = [random.Random(i).randint(10, 100) for i in range(100)]
    bs = list(DurationBatchSampler(lens, 300, seed=1))
    assert sorted(i for b in bs for i in b) == list(range(100))
    assert all(max(lens[i] for i in b) * len(b) <= 300 for b in bs)
    assert sum(len(b) for b in bs) / len(bs) > 3  # buckets of similar lengths pack several per batch


@pytest.mark.parametrize("nar_rope", [False, True])
def test_loss_falls_on_one_batch(nar_rope):
    torch.manual_seed(0)
    random.seed(0)
    m = AudioLM(TINY.replace(nar_rope=nar_rope))
    b = PromptTargetCollate()(synthetic_codes(6, bins=16, min_frames=20, max_frames=30, seed=1))
    opt = torch.optim.AdamW(m.parameters(), 3e-3)
    losses = []
    for i in range(30):
        out = m.training_step(b, stage=1 + i % 3)
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        losses.append(out["loss"].item())
    assert losses[-1] < 0.6 * losses[0], losses


def test_unigram_accuracy_and_train_entry(tmp_path):
    assert top_k_unigram_accuracy([torch.tensor([[1, 1, 2, 3]])], [torch.tensor([[1, 1, 1]])]) == {"q1": 1.0}
    cfg = train_cfg(
        bins=16,
        source="synthetic",
        synthetic_n=40,
        synthetic_frames=(10, 30),
        out_dir=str(tmp_path / "run"),
        max_steps=6,
    )
    metrics = train_audiolm(cfg)
    assert {"valid/ar_acc", "valid/nar_acc", "valid/loss"} <= set(metrics)
    m = AudioLM.from_pretrained(tmp_path / "run" / "model").eval()
    assert (tmp_path / "run" / "tokens" / "tokens.json").exists()
    toks = audiolm_tokens(cfg)  # the token shards the training wrote, read lazily
    res = evaluate_audiolm(m, toks["train"], toks["test"])
    assert 0 <= res["ar_acc"] <= 1 and res["unigram_ar_acc"] > 0 and "nar_vs_unigram" in res
    assert res["ar_acc"] <= res["ar_acc_top10"] and res["unigram_acc_q2"] <= res["unigram_acc_top10_q2"]
    assert {"nar_top10_vs_unigram", "nar_acc_top10_q4", "unigram_nar_acc_top10"} <= set(res)


# ------------------------------------------------------------------------------------------ real speech tokens
def tiny_tokenizer(tmp_path):
    "A tiny 32 kHz / hop-640 tokenizer, saved like runs/tokenizer/model."
    torch.manual_seed(0)
    tok = make_tiny_tokenizer(bins=32, init_s=2.0)
    tok.save_pretrained(tmp_path / "tok")
    return tok


def speech_corpus(root, speakers: dict, seconds=(0.6, 1.3, 0.9)):
    "LibriTTS layout at 24 kHz: `{split: [speaker ids]}`, one chapter, one wav per length in `seconds`."
    g = np.random.default_rng(0)
    for split, spks in speakers.items():
        for spk in spks:
            d = Path(root) / split / spk / "100"
            d.mkdir(parents=True)
            for j, s in enumerate(seconds):
                t = np.arange(int(s * 24000)) / 24000
                sf.write(
                    d / f"{spk}_100_{j:06d}_000000.wav",
                    0.3 * np.sin(2 * np.pi * (150 + 40 * j) * t) + 0.01 * g.standard_normal(t.size),
                    24000,
                )
                (d / f"{spk}_100_{j:06d}_000000.normalized.txt").write_text("hi")


def test_tokenize_items_batched_resampled(tmp_path):
    tok = tiny_tokenizer(tmp_path)
    speech_corpus(tmp_path / "c", {"train-clean-100": ["11"]}, seconds=(0.6, 1.3, 0.9, 0.2))
    from audiolab.data.speech import read_libritts

    items = read_libritts(tmp_path / "c")
    codes, kept = tokenize_items(tok, items, min_s=0.5, max_s=2.0, batch_s=2.0)  # batches of 2 padded utterances
    assert [it["utt_id"] for it in kept] == [it["utt_id"] for it in items if not it["utt_id"].endswith("3_000000")]
    for c, it in zip(codes, kept):
        n = sf.info(it["path"]).frames * 32000 // 24000  # resampled 24 -> 32 kHz
        assert c.shape == (4, math.ceil(n / 640)) and c.dtype == torch.long and 0 <= int(c.min()) and int(c.max()) < 32
        alone = tokenize_items(tok, [it])[0][0]  # no padding from a batch mate
        assert alone.shape == c.shape and (alone == c).float().mean() > 0.8
    sub = tokenize_items(tok, [dict(kept[1], start=0.25, duration=0.64)])[0][0]  # a lhotse cut inside a recording
    assert sub.shape == (4, math.ceil(0.64 * 32000 / 640))


def test_audiolm_tokens_speech_and_train(tmp_path):
    tiny_tokenizer(tmp_path)
    speech_corpus(tmp_path / "c", {"train-clean-100": ["11", "12"], "dev-clean": ["21"], "test-clean": ["31"]})
    cfg = train_cfg(
        bins=1024,
        source="speech",
        data_dir=str(tmp_path / "c"),
        tokenizer_dir=str(tmp_path / "tok"),
        min_utt_s=0.5,
        out_dir=str(tmp_path / "run"),
        max_steps=3,
    )
    toks = audiolm_tokens(cfg)
    assert toks["bins"] == 32 and [len(toks[s]) for s in ("train", "valid", "test")] == [6, 3, 3]
    assert set(toks["speakers"]["train"]) == {"11", "12"} and set(toks["speakers"]["test"]) == {"31"}
    assert all(c.shape[0] == 4 and int(c.max()) < 32 for c in toks["train"])
    assert (tmp_path / "run" / "tokens" / "tokens.json").exists() and audiolm_tokens(cfg)["ids"] == toks[
        "ids"
    ]  # cached
    make_tiny_tokenizer(bins=16, init_s=1.0).save_pretrained(tmp_path / "tok16")
    assert (
        audiolm_tokens(cfg.replace(tokenizer_dir=str(tmp_path / "tok16")))["bins"] == 16
    )  # a new tokenizer re-tokenizes
    assert audiolm_tokens(cfg)["bins"] == 32
    train_audiolm(cfg)
    m = AudioLM.from_pretrained(tmp_path / "run" / "model")
    assert m.cfg.bins == 32  # the tokenizer's codebook size
    for name, pause in (("again", 0), ("paused", 4)):  # the same run again, and with longer pauses (PauseAugment)
        shutil.copytree(tmp_path / "run" / "tokens", tmp_path / name / "tokens")  # the same cached tokens
        train_audiolm(cfg.replace(max_pause=pause, out_dir=str(tmp_path / name)))
    run, again, paused = (
        AudioLM.from_pretrained(tmp_path / d / "model").state_dict() for d in ("run", "again", "paused")
    )
    assert all(torch.equal(run[k], again[k]) for k in run)
    assert not all(torch.equal(run[k], paused[k]) for k in run)  # the pauses changed what it trained on
    with pytest.raises(ConfigError, match="n_q"):
        audiolm_tokens(cfg.replace(model=cfg.model.replace(n_q=5), out_dir=str(tmp_path / "r2")))
    with pytest.raises(Exception, match="no trained speech tokenizer"):
        audiolm_tokens(cfg.replace(tokenizer_dir=str(tmp_path / "none"), out_dir=str(tmp_path / "r3")))


def test_bench_identical_tokens(tmp_path):
    sys.path.insert(0, str(Path(__file__).parents[1] / "bench"))
    import audiolm_speed

    res = audiolm_speed.main(
        [
            "--dim",
            "32",
            "--layers",
            "1",
            "--heads",
            "4",
            "--prompt-s",
            "0.2",
            "--new-s",
            "0.4",
            "--full-nocache",
            "--out",
            str(tmp_path / "a.json"),
        ]
    )
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["identical_tokens_temperature0"] is True and saved["identical_checked_frames"] == 20
    assert saved["machine"]["cpu_count"] >= 1 and res["new_frames"] == 20
