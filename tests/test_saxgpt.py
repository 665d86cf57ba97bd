"SaxGPT contracts across modules: delay pattern, masks, KV cache == no cache, shapes for every size/knob, training."

import subprocess
import sys
import textwrap

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

from audiolab.core import ConfigError
from audiolab.data.saxpipe import CodeWindows, save_split, write_code_items
from audiolab.eval.lm import unigram_lm_baseline
from audiolab.models.saxgpt import SIZES, SaxGPT, SaxGPTConfig, delay, delay_valid, undelay
from audiolab.recipes.saxgpt import evaluate_tf
from audiolab.train.learner import Learner, TrainConfig

torch.set_num_threads(1)
PAD = 32


def tiny(**kw) -> SaxGPT:
    torch.manual_seed(kw.pop("seed", 0))
    return SaxGPT(SaxGPTConfig(**{**dict(size="tiny", vocab_size=PAD + 1, padding_idx=PAD, max_seq_len=48), **kw}))


@pytest.mark.parametrize("K,T", [(1, 1), (4, 7), (8, 3), (4, 0)])
def test_delay_round_trip(K, T):
    codes = torch.randint(0, PAD, (3, K, T))
    d = delay(codes, PAD)
    assert d.shape == (3, K, T + K + 1)
    assert torch.equal(undelay(d), codes)
    assert torch.equal(d != PAD, delay_valid(K, T).expand_as(d))  # codes only inside the pattern
    for k in range(K):  # codebook k starts at t = k + 1
        assert (d[:, k, : k + 1] == PAD).all() and (T == 0 or torch.equal(d[:, k, k + 1], codes[:, k, 0]))


def test_causal_and_padding_masks():
    m = tiny(dropout=0.0).eval()
    back, lead = torch.randint(0, PAD, (2, 4, 10)), torch.randint(0, PAD, (2, 4, 9))
    cols = delay(lead, PAD)[..., :-1]
    with torch.no_grad():
        y = m(back, cols)
        for t in (1, 5, cols.shape[-1] - 1):  # future columns cannot leak
            c2 = cols.clone()
            c2[..., t:] = (c2[..., t:] + 3) % PAD
            y2 = m(back, c2)
            torch.testing.assert_close(y[..., :t, :], y2[..., :t, :], atol=1e-5, rtol=0)
            assert (y[..., t:, :] - y2[..., t:, :]).abs().max() > 1e-4
        # backing padding: a padded batch row gives what the unpadded row gives alone
        short = back[:1, :, :6]
        padded = torch.cat([torch.nn.functional.pad(short, (0, 4), value=PAD), back[1:]])
        torch.testing.assert_close(m(padded, cols)[:1], m(short, cols[:1]), atol=1e-5, rtol=0)
        # lead padding (a window past the end of its song) adds nothing to the loss: = loss of the shorter lead
        lead_p = lead.clone()
        lead_p[..., 6:] = PAD
        torch.testing.assert_close(
            m.step_loss((back, lead_p))["loss"], m.step_loss((back, lead[..., :6]))["loss"], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize(
    "kw", [dict(), dict(share_embeddings=False, nhead=4), dict(scale_embeddings=False, activation="gelu")]
)
def test_kv_cache_equals_no_cache(kw):
    m = tiny(**kw)
    back = torch.randint(0, PAD, (2, 4, 14))
    back[0, :, 11:] = PAD
    prompt = torch.randint(0, PAD, (2, 4, 4))
    for gkw in (dict(), dict(prompt=prompt), dict(n_frames=9)):
        a, la = m.generate(back, temperature=0, return_logits=True, **gkw)
        b, lb = m.generate(back, temperature=0, use_cache=False, return_logits=True, **gkw)
        assert torch.equal(a, b)
        torch.testing.assert_close(la, lb, atol=1e-4, rtol=1e-4)
    # sliding windows: the same tokens with and without cache
    long_back = torch.randint(0, PAD, (1, 4, 60))
    assert torch.equal(
        m.generate_long(long_back, window=24, hop=10, temperature=0),
        m.generate_long(long_back, window=24, hop=10, temperature=0, use_cache=False),
    )


@pytest.mark.parametrize("size", list(SIZES))
def test_shapes_every_size(size):
    "Forward shapes of every size (on the meta device: no memory, no compute)."
    with torch.device("meta"):
        m = SaxGPT(SaxGPTConfig(size=size))
        back, cols = torch.zeros(2, 4, 1500, dtype=torch.long), torch.zeros(2, 4, 1504, dtype=torch.long)
        assert m(back, cols).shape == (2, 4, 1504, 2048)
    c = m.cfg
    assert c.d_model % c.nhead == 0 and c.d_model // c.nhead in (32, 64)


def test_knobs_and_errors():
    m = tiny(num_codebooks=2, nhead=1, num_decoder_layers=1)
    back, lead = torch.randint(0, PAD, (1, 2, 5)), torch.randint(0, PAD, (1, 2, 5))
    assert m(back, delay(lead, PAD)[..., :-1]).shape == (1, 2, 7, PAD)
    assert m.generate(back, temperature=0.8, top_k=4, top_p=0.9).shape == (1, 2, 5)
    with pytest.raises(ConfigError, match="unknown SaxGPT size"):
        SaxGPTConfig(size="giant")
    with pytest.raises(ConfigError, match="last index"):
        SaxGPTConfig(vocab_size=10, padding_idx=0)
    with pytest.raises(ValueError, match="backing codes: expected size 2 at dim 1"):
        m(back[:, :1], lead)
    with pytest.raises(ValueError, match="use generate_long"):
        m.generate(back, n_frames=100)


def test_loss_falls_and_beats_unigram_on_structured_tokens():
    "One batch: the loss falls; and on tokens with structure the model's TF accuracy beats the unigram baseline."
    g = torch.Generator().manual_seed(0)
    # lead = backing shifted by one code (learnable from the encoder), first codebook drives the others
    back = torch.randint(0, PAD, (4, 4, 16), generator=g)
    lead = (back + 1) % PAD
    m = tiny(dropout=0.0)
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = m.training_step((back, lead))["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.3 * losses[0], losses[::10]
    wins = CodeWindows(
        [dict(song_id="s", clip="s__orig", backing=back[i], lead=lead[i]) for i in range(4)], 16, 16, PAD
    )
    acc = evaluate_tf(m, wins)["acc"]
    base = unigram_lm_baseline(lead, lead, PAD, PAD)["acc"]
    assert acc >= 2 * base, (acc, base)


def test_bf16_mixed_precision_step_matches_fp32():
    """The train step under bf16 autocast (`TrainConfig.precision: bf16`, the reference-size benchmark's bf16 row),
    dropout on the attention probabilities included, gives the fp32 loss and gradients within bf16 rounding."""
    g = torch.Generator().manual_seed(0)
    batch = tuple(torch.randint(0, PAD, (2, 4, 40), generator=g) for _ in range(2))

    def loss_and_grads(dtype):
        m = tiny(dropout=0.1, dropout_mode="probs", max_seq_len=64).train()
        torch.manual_seed(1)  # the same dropout masks in both runs
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == torch.bfloat16):
            loss = m.training_step(batch)["loss"]
        loss.backward()
        return loss.float(), torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None])

    (l32, g32), (l16, g16) = loss_and_grads(torch.float32), loss_and_grads(torch.bfloat16)
    assert abs(l16 - l32) / l32 < 0.01, (l16, l32)
    assert torch.nn.functional.cosine_similarity(g16, g32, dim=0) > 0.99
    assert (g16 - g32).norm() / g32.norm() < 0.1


def test_train_entry_point_from_params(tmp_path):
    "The torchrun entry point reads the `saxgpt` section with its profile and writes a loadable model."
    items = [
        dict(
            song_id=f"s{i}",
            clip=f"s{i}__orig",
            backing=torch.randint(0, PAD, (4, 24), dtype=torch.int16),
            lead=torch.randint(0, PAD, (4, 24), dtype=torch.int16),
        )
        for i in range(2)
    ]
    ix = write_code_items(tmp_path / "codes", items)
    for split in ("train", "val"):
        save_split(tmp_path / f"{split}.json", tmp_path / "codes", ix["key"], ["s0__orig", "s1__orig"], [], 12, 6, PAD)
    (tmp_path / "params.yaml").write_text(
        textwrap.dedent(f"""
        saxgpt:
          data_dir: {tmp_path}
          out_dir: {tmp_path}/run
          tiny:
            batch_size: 2
            model: {{size: tiny, vocab_size: {PAD + 1}, padding_idx: {PAD}, max_seq_len: 48}}
            train: {{max_steps: 2, grad_accum: 1, warmup_steps: 0, valid_every: 0}}
          full:
            model: {{size: medium, vocab_size: {PAD + 1}, padding_idx: {PAD}, max_seq_len: 48}}
            train: {{max_steps: 100000}}
    """)
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "audiolab.train.distributed",
            "audiolab.recipes.saxgpt:train_saxgpt",
            "--params",
            str(tmp_path / "params.yaml"),
            "--section",
            "saxgpt",
            "--profile",
            "tiny",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        env={"OMP_NUM_THREADS": "1", **__import__("os").environ},
    )
    assert r.returncode == 0, r.stderr[-3000:]
    m = SaxGPT.from_pretrained(tmp_path / "run" / "model")
    assert m.cfg.size == "tiny" and m.cfg.vocab_size == PAD + 1
    assert m.generate(items[0]["backing"][None, :, :8].long(), temperature=0).shape == (1, 4, 8)


def test_bad_codes_are_refused_with_a_clear_error():
    from audiolab.core import InputError

    m = tiny(dropout=0.0).eval()
    ok = torch.randint(0, PAD, (1, 4, 6))
    hi, neg = ok.clone(), ok.clone()
    hi[0, 1, 2] = PAD + 1
    neg[0, 0, 0] = -1
    for bad, words in (
        (hi, r"\[0, 33\)"),
        (neg, r"\[0, 33\)"),
        (ok.float(), "integer"),
        (ok[0], "dims"),
        (ok[:, :3], "expected size 4 at dim 1"),
        (ok[..., :0], "too short"),
    ):
        with pytest.raises(InputError, match=words):
            m.generate(bad)
        with pytest.raises(InputError, match=words):
            m(bad, delay(ok, PAD)[..., :-1])
    with pytest.raises(InputError, match="prompt"):
        m.generate(ok, prompt=hi[..., :3])
    padded = ok.clone()
    padded[..., 4:] = PAD  # padding frames are legal input
    assert m.generate(padded, temperature=0).shape == (1, 4, 6)


def test_scheduled_sampling_follows_optimizer_steps():
    "The sampling probability of step n is the same with `grad_accum` 1 and 2 (its clock counts optimizer steps)."
    g = torch.Generator().manual_seed(0)
    back, lead = torch.randint(0, PAD, (2, 8, 4, 12), generator=g)
    probs = {}
    for accum in (1, 2):
        m = tiny(dropout=0.0)
        m.ss = dict(max_prob=0.5, start=0, ramp=4)
        tc = TrainConfig(max_steps=5, grad_accum=accum, lr=1e-4, seed=0, valid_every=1)
        valid = DataLoader(TensorDataset(back[:2], lead[:2]), batch_size=2)  # validation calls must not count
        learn = Learner(m, DataLoader(TensorDataset(back, lead), batch_size=2, shuffle=True), valid, cfg=tc).fit()
        assert int(m.train_calls) == 5
        probs[accum] = [h["ss_prob"] for h in learn.history]
    want = [0.5 * min(1.0, (n + 1) / 4) for n in range(5)]
    assert probs[1] == pytest.approx(want) and probs[2] == pytest.approx(want), probs
