"""Contracts of nn.attention / nn.embed / nn.transformer on random small configs (CPU, seconds)."""

import random

import pytest
import torch
import torch.nn.functional as F

from audiolab.core import ConfigError
from audiolab.nn import attention as A
from audiolab.nn.attention import KVCache, MultiHeadAttention, attend, naive_attention
from audiolab.nn.embed import MultiCodebookEmbedding, TimestepEmbedding
from audiolab.nn.transformer import (
    AdaLayerNorm,
    DiTBlock,
    TransformerDecoder,
    TransformerEncoder,
    TransformerEncoderLayer,
)

SEEDS = range(4)


def cfg(seed):
    "A random small config: heads, head dim, depth, lengths, knobs."
    r = random.Random(seed)
    heads = r.choice([1, 2, 4])
    return dict(
        heads=heads,
        dim=heads * r.choice([4, 8]),
        depth=r.randint(1, 3),
        T=r.randint(2, 9),
        S=r.randint(1, 7),
        B=r.randint(1, 3),
        rope=r.random() < 0.5,
        qk_norm=r.random() < 0.5,
        max_len=r.choice([None, 16]),
        act=r.choice(["gelu", "relu", "silu"]),
    )


def randn(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("seed", SEEDS)
def test_decoder_stack_cache_equals_full(seed):
    c = cfg(seed)
    torch.manual_seed(seed)
    dec = TransformerDecoder(
        c["depth"], c["dim"], c["heads"], rope=c["rope"], qk_norm=c["qk_norm"], activation=c["act"], dropout=0.1
    ).eval()
    x, mem = randn(c["B"], c["T"], c["dim"], seed=seed), randn(c["B"], c["S"], c["dim"], seed=seed + 100)
    with torch.no_grad():
        full = dec(x, mem)
        cache = dec.make_cache(c["max_len"])
        steps = [dec(x[:, t : t + 1], mem if t == 0 else None, cache=cache) for t in range(c["T"])]
        # chunked prefill: first half at once, then token by token
        h = c["T"] // 2
        cache2 = dec.make_cache(c["max_len"])
        chunked = [dec(x[:, :h], mem, cache=cache2)] + [
            dec(x[:, t : t + 1], None, cache=cache2) for t in range(h, c["T"])
        ]
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.cat(chunked, 1), full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_causal_encoder_stack_cache_equals_full(seed):
    "Decoder-only LM / streaming causal encoder tail: cached == uncached."
    c = cfg(seed)
    torch.manual_seed(seed)
    enc = TransformerEncoder(c["depth"], c["dim"], c["heads"], causal=True, rope=c["rope"], qk_norm=c["qk_norm"]).eval()
    x = randn(c["B"], c["T"], c["dim"], seed=seed)
    with torch.no_grad():
        full = enc(x)
        cache = enc.make_cache(c["max_len"])
        steps = torch.cat([enc(x[:, t : t + 1], cache=cache) for t in range(c["T"])], 1)
    torch.testing.assert_close(steps, full, atol=1e-5, rtol=0)


@pytest.mark.parametrize("seed", SEEDS)
def test_causal_no_future_leakage(seed):
    c = cfg(seed)
    torch.manual_seed(seed)
    dec = TransformerDecoder(c["depth"], c["dim"], c["heads"], rope=c["rope"]).eval()
    x, mem = randn(c["B"], c["T"], c["dim"], seed=seed), randn(c["B"], c["S"], c["dim"], seed=seed + 1)
    t0 = random.Random(seed).randrange(1, c["T"])
    x2 = x.clone()
    x2[:, t0:] = randn(c["B"], c["T"] - t0, c["dim"], seed=seed + 2)
    with torch.no_grad():
        y, y2 = dec(x, mem), dec(x2, mem)
    torch.testing.assert_close(y[:, :t0], y2[:, :t0], atol=1e-6, rtol=0)
    assert (y[:, t0:] - y2[:, t0:]).abs().max() > 1e-4


@pytest.mark.parametrize("seed", SEEDS)
def test_padding_mask_ignores_padded_keys(seed):
    c = cfg(seed)
    torch.manual_seed(seed)
    enc = TransformerEncoder(c["depth"], c["dim"], c["heads"], qk_norm=c["qk_norm"]).eval()
    B, T = 2, c["T"] + 2
    lens = torch.tensor([T, random.Random(seed).randint(1, T - 1)])
    pad = torch.arange(T)[None] >= lens[:, None]  # (B, T) True = padding
    x = randn(B, T, c["dim"], seed=seed)
    x2 = x.clone()
    x2[pad] = 1e3  # garbage in the padded frames
    with torch.no_grad():
        y, y2 = enc(x, key_padding_mask=pad), enc(x2, key_padding_mask=pad)
    torch.testing.assert_close(y[~pad], y2[~pad], atol=1e-5, rtol=0)
    assert torch.isfinite(y).all()


@pytest.mark.parametrize("seed", SEEDS)
def test_sdpa_matches_naive(seed):
    g = torch.Generator().manual_seed(seed)
    B, H, Tq, Tk, D = 2, 3, random.Random(seed).randint(1, 7), 7, 8
    q, k, v = (
        torch.randn(B, H, Tq, D, generator=g),
        torch.randn(B, H, Tk, D, generator=g),
        torch.randn(B, H, Tk, D, generator=g),
    )
    bool_mask = torch.rand(B, Tq, Tk, generator=g) > 0.4
    float_mask = torch.randn(Tq, Tk, generator=g)
    kpm = torch.rand(B, Tk, generator=g) > 0.6
    for kw in [
        {},
        dict(causal=True),
        dict(attn_mask=bool_mask),
        dict(attn_mask=float_mask),
        dict(causal=True, key_padding_mask=kpm),
        dict(key_padding_mask=kpm, attn_mask=float_mask),
    ]:
        fused = attend(q, k, v, **kw)
        ref = attend(q, k, v, backend="naive", **kw)
        assert torch.isfinite(fused).all()
        torch.testing.assert_close(fused, ref, atol=1e-5, rtol=1e-5)
    # the naive reference itself against the textbook formula
    w = (q @ k.transpose(-1, -2) / D**0.5).softmax(-1)
    torch.testing.assert_close(naive_attention(q, k, v), w @ v)


def test_valle_prefix_mask():
    "VALL-E AR mask: prompt attends to the prompt only, target to the prompt + its own past."
    P, T, D = 4, 5, 16
    allow = torch.zeros(P + T, P + T, dtype=torch.bool)
    allow[:, :P] = True
    allow[P:, P:] = torch.ones(T, T, dtype=torch.bool).tril()
    layer = TransformerEncoderLayer(D, 4).eval()
    x = randn(1, P + T, D)
    x2 = x.clone()
    x2[:, P + 2 :] += 1.0  # change target frames 2..
    with torch.no_grad():
        y, y2 = layer(x, attn_mask=allow), layer(x2, attn_mask=allow)
    torch.testing.assert_close(y[:, : P + 2], y2[:, : P + 2], atol=1e-6, rtol=0)


def test_cpu_training_dropout_keeps_fused_kernel(monkeypatch):
    "dropout_mode='auto' on CPU never hands SDPA a dropout_p > 0 (that forces the unfused math path)."
    seen = []
    sdpa = F.scaled_dot_product_attention

    def spy(*a, **kw):
        seen.append(kw.get("dropout_p", 0.0))
        return sdpa(*a, **kw)

    monkeypatch.setattr(A.F, "scaled_dot_product_attention", spy)
    layer = TransformerEncoderLayer(16, 4, dropout=0.1, causal=True).train()
    x = randn(2, 6, 16)
    y1, y2 = layer(x), layer(x)
    assert seen and all(p == 0.0 for p in seen)
    assert not torch.allclose(y1, y2)  # dropout still acts in training
    layer.attn.dropout_mode = "probs"  # on CPU: dropout on the probabilities in blocked_attention, not SDPA's math path
    seen.clear()
    y3, y4 = layer(x), layer(x)
    assert seen == [] and not torch.allclose(y3, y4)


def test_kv_cache_limits_and_errors():
    c = KVCache(max_len=3)
    k = randn(1, 2, 2, 4)
    c.update(k, k)
    with pytest.raises(ValueError, match="KVCache full"):
        c.update(k, k)
    a = MultiHeadAttention(16, 4)
    with pytest.raises(ValueError, match="cached \\+ new keys"):
        a(randn(1, 3, 16), key_padding_mask=torch.zeros(1, 2, dtype=torch.bool))
    with pytest.raises(ConfigError):
        MultiHeadAttention(16, 4, backend="flash")(randn(1, 3, 16))
    with pytest.raises(ValueError, match="needs `context`"):
        MultiHeadAttention(16, 4, cross=True)(randn(1, 3, 16))


def test_dit_identity_at_init_and_adaln_conditions():
    for seed in SEEDS:
        c = cfg(seed)
        blk = DiTBlock(c["dim"], c["heads"], cond_dim=5, rope=c["rope"], qk_norm=c["qk_norm"])
        x = randn(c["B"], c["T"], c["dim"], seed=seed)
        cond = randn(c["B"], 5, seed=seed + 1)
        assert torch.equal(blk(x, cond), x)
    norm = AdaLayerNorm(8, 3)
    x = randn(2, 4, 8)
    assert (norm(x, randn(2, 3, seed=1)) - norm(x, randn(2, 3, seed=2))).abs().max() > 1e-3
    nar = TransformerEncoder(2, 8, 2, cond_dim=3).eval()
    assert (nar(x, cond=randn(2, 3, seed=1)) - nar(x, cond=randn(2, 3, seed=2))).abs().max() > 1e-3


def test_multicodebook_padding_and_shapes():
    for K, V, D in [(1, 5, 4), (4, 2049, 8), (8, 17, 6)]:
        pad = V - 1
        emb = MultiCodebookEmbedding(K, V, D, padding_idx=pad)
        codes = torch.randint(0, V - 1, (2, K, 6))
        codes[0, :, 3:] = pad
        y = emb(codes)
        assert y.shape == (2, 6, D)
        assert y[0, 3:].abs().max() == 0
        y.sum().backward()
        assert all(t.weight.grad[pad].abs().max() == 0 for t in emb.tables)
        assert MultiCodebookEmbedding(K, V, D, reduce="none")(codes).shape == (2, K, 6, D)
    assert TimestepEmbedding(12)(torch.rand(3)).shape == (3, 12)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_bf16_matches_fp32():
    "On CUDA, bf16 attention (flash-attn when installed, else SDPA's fused kernels) == fp32 within bf16 tolerance."
    dev = torch.device("cuda")
    torch.manual_seed(0)
    for heads, dh in [(4, 16), (8, 64), (2, 128)]:
        dim = heads * dh
        a = MultiHeadAttention(dim, heads, rope=True).to(dev).eval()
        c = MultiHeadAttention(dim, heads, cross=True).to(dev).eval()
        x, mem = torch.randn(3, 65, dim, device=dev), torch.randn(3, 40, dim, device=dev)
        kpm = torch.zeros(3, 40, dtype=torch.bool, device=dev)
        kpm[0, 23:] = True
        kpm[2, 1:] = True
        with torch.no_grad():
            ref_s, ref_c, ref_p = a(x, causal=True), c(x, mem, key_padding_mask=kpm), a(x[:, :40], key_padding_mask=kpm)
            a16, c16 = a.to(torch.bfloat16), c.to(torch.bfloat16)
            xb, mb = x.bfloat16(), mem.bfloat16()
            for be in ("auto", "flash") if A.HAS_FLASH_ATTN else ("auto",):
                a16.backend = c16.backend = be
                torch.testing.assert_close(a16(xb, causal=True).float(), ref_s, atol=3e-2, rtol=3e-2)
                torch.testing.assert_close(c16(xb, mb, key_padding_mask=kpm).float(), ref_c, atol=3e-2, rtol=3e-2)
                torch.testing.assert_close(a16(xb[:, :40], key_padding_mask=kpm).float(), ref_p, atol=3e-2, rtol=3e-2)
            # cached decoding on the GPU in bf16 == full
            cache = KVCache(max_len=65)
            steps = torch.cat([a16(xb[:, t : t + 1], causal=True, cache=cache) for t in range(65)], 1)
            torch.testing.assert_close(steps.float(), a16(xb, causal=True).float(), atol=3e-2, rtol=3e-2)
    # training with dropout on CUDA: 'auto' drops the probabilities inside the fused kernel
    layer = TransformerEncoderLayer(256, 4, dropout=0.1, causal=True).to(dev).train()
    y = layer(torch.randn(2, 128, 256, device=dev, dtype=torch.float32))
    y.sum().backward()
    assert torch.isfinite(layer.attn.qkv_proj.weight.grad).all()


def _fake_flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False):
    "flash_attn_func's documented contract on (B, T, H, D) tensors, written with SDPA (causal bottom-right)."
    assert q.stride(-1) == 1 and dropout_p == 0.0
    qh, kh, vh = (t.transpose(1, 2) for t in (q, k, v))
    m = A.causal_mask(q.shape[1], k.shape[1]) if causal else None
    return F.scaled_dot_product_attention(qh, kh, vh, attn_mask=m, scale=softmax_scale).transpose(1, 2)


def _fake_flash_attn_varlen_func(q, k, v, cu_q, cu_k, max_q, max_k, dropout_p=0.0, softmax_scale=None, causal=False):
    "flash_attn_varlen_func's contract: packed (total, H, D) sequences delimited by int32 cumulative lengths."
    assert cu_q.dtype == cu_k.dtype == torch.int32 and q.dim() == k.dim() == 3
    outs = []
    for b in range(len(cu_q) - 1):
        qb, kb, vb = q[cu_q[b] : cu_q[b + 1]], k[cu_k[b] : cu_k[b + 1]], v[cu_k[b] : cu_k[b + 1]]
        assert qb.shape[0] <= max_q and kb.shape[0] <= max_k
        outs.append(_fake_flash_attn_func(qb[None], kb[None], vb[None], 0.0, softmax_scale, causal)[0])
    return torch.cat(outs)


@pytest.mark.parametrize("seed", SEEDS)
def test_flash_backend_glue(monkeypatch, seed):
    "Layouts, unpadding and cu_seqlens of the flash-attn path, against SDPA, with a reference flash_attn on CPU."
    monkeypatch.setattr(A, "flash_attn_func", _fake_flash_attn_func)
    monkeypatch.setattr(A, "flash_attn_varlen_func", _fake_flash_attn_varlen_func)
    monkeypatch.setattr(A, "HAS_FLASH_ATTN", True)
    monkeypatch.setattr(
        A, "_flash_ok", lambda q, attn_mask, kpm, causal: attn_mask is None and (kpm is None or not causal)
    )
    c = cfg(seed)
    g = torch.Generator().manual_seed(seed)
    B, H, Tq, Tk, D = 3, c["heads"], c["T"], c["T"] + 3, 8
    q, k, v = (
        torch.randn(B, H, Tq, D, generator=g),
        torch.randn(B, H, Tk, D, generator=g),
        torch.randn(B, H, Tk, D, generator=g),
    )
    lens = torch.tensor([Tk, 1, random.Random(seed).randint(1, Tk)])
    kpm = torch.arange(Tk)[None] >= lens[:, None]
    kpm_holes = torch.rand(B, Tk, generator=g) > 0.5  # not only right padding
    kpm_holes[:, 0] = False
    for kw in [{}, dict(causal=True), dict(key_padding_mask=kpm), dict(key_padding_mask=kpm_holes)]:
        torch.testing.assert_close(
            attend(q, k, v, backend="flash", **kw), attend(q, k, v, backend="sdpa", **kw), atol=1e-5, rtol=1e-5
        )
    # a whole decoder stack through the flash path == through SDPA (cross-attention padding goes varlen)
    torch.manual_seed(seed)
    dec = TransformerDecoder(c["depth"], c["dim"], c["heads"], rope=c["rope"]).eval()
    x, mem = randn(B, 5, c["dim"], seed=seed), randn(B, Tk, c["dim"], seed=seed + 1)
    with torch.no_grad():
        ref = dec(x, mem, memory_key_padding_mask=kpm)
        for layer in dec.layers:
            layer.self_attn.backend = layer.cross_attn.backend = "flash"
        torch.testing.assert_close(dec(x, mem, memory_key_padding_mask=kpm), ref, atol=1e-5, rtol=1e-5)
