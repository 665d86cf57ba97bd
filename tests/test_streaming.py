"""Streaming == offline for the causal conv blocks of `audiolab.nn.conv`, on random configs and random chunkings,
and no dependence on the future (checked through gradients)."""

import math

import pytest
import torch
from torch import nn

from audiolab.models.melvae import down_stage
from audiolab.nn.conv import (
    CausalConv1d,
    CausalConvTranspose1d,
    DecoderBlock,
    EncoderBlock,
    ResidualUnit,
    Snake,
    StreamSequential,
    StreamingState,
    random_chunks,
    step_sequential,
    stream,
)


pytestmark = pytest.mark.usefixtures("one_thread")


class CausalStack(nn.Module):
    "A causal encoder -> decoder built only from streaming blocks (the shape of a streaming codec)."

    def __init__(self, dims, strides, weight_norm):
        super().__init__()
        enc = [CausalConv1d(1, dims[0], 7, weight_norm=weight_norm)]
        enc += [EncoderBlock(a, b, s, causal=True, weight_norm=weight_norm) for a, b, s in zip(dims, dims[1:], strides)]
        dec = [
            DecoderBlock(b, a, s, causal=True, weight_norm=weight_norm)
            for a, b, s in reversed(list(zip(dims, dims[1:], strides)))
        ]
        dec += [Snake(dims[0]), CausalConv1d(dims[0], 1, 7)]
        self.enc, self.dec = nn.Sequential(*enc), nn.Sequential(*dec)
        self.hop = math.prod(strides)

    def forward(self, x):
        return self.dec(self.enc(x))

    def step(self, x, state=None):
        state = state if state is not None else StreamingState()
        z, state["enc"] = step_sequential(self.enc, x, state.get("enc"))
        y, state["dec"] = step_sequential(self.dec, z, state.get("dec"))
        return y, state


def random_config(seed):
    g = torch.Generator().manual_seed(seed)
    n = int(torch.randint(1, 4, (1,), generator=g))
    strides = [int(s) for s in torch.randint(1, 5, (n,), generator=g)]
    dims = [int(d) for d in torch.randint(2, 7, (n + 1,), generator=g)]
    return dims, strides, bool(seed % 2), g


@pytest.mark.parametrize("seed", range(6))
def test_stack_streaming_equals_offline(seed):
    torch.manual_seed(seed)
    dims, strides, wn, g = random_config(seed)
    m = CausalStack(dims, strides, wn).eval()
    T = m.hop * int(torch.randint(3, 9, (1,), generator=g)) + int(torch.randint(0, m.hop, (1,), generator=g))
    x = torch.randn(2, 1, T)
    with torch.no_grad():
        y = m(x)
        for _ in range(3):  # several random chunkings, zero-length chunks included
            ys = stream(m, x, random_chunks(T, 2 * m.hop + 3, g))
            assert ys.shape == y.shape == (2, 1, math.ceil(T / m.hop) * m.hop)
            torch.testing.assert_close(ys, y, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("seed", range(4))
def test_single_layers_chunk_by_chunk(seed):
    "Leaf layers at 1e-6, sample-by-sample included (the hardest chunking)."
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    k, s, d = (
        int(v)
        for v in (
            torch.randint(2, 8, (1,), generator=g),
            torch.randint(1, 3, (1,), generator=g),
            torch.randint(1, 4, (1,), generator=g),
        )
    )
    conv = CausalConv1d(3, 4, k, stride=s, dilation=d)
    tconv = CausalConvTranspose1d(3, 4, 2 * s + 1, s)
    x = torch.randn(2, 3, 29)
    with torch.no_grad():
        for layer in (conv, tconv, ResidualUnit(3, d, causal=True)):
            torch.testing.assert_close(stream(layer, x, [1] * 29), layer(x), atol=1e-6, rtol=1e-6)
            torch.testing.assert_close(stream(layer, x, random_chunks(29, 10, g)), layer(x), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("seed", range(3))
def test_no_future_leakage_by_gradient(seed):
    "Output sample t of a causal codec depends on x[u] only for u <= (t // hop) * hop: d y[t] / d x[u] == 0 beyond."
    torch.manual_seed(seed)
    dims, strides, wn, _ = random_config(seed)
    m = CausalStack(dims, strides, wn)
    T = 3 * m.hop + 1
    x = torch.randn(1, 1, T, requires_grad=True)
    y = m(x)
    for t in (0, m.hop - 1, m.hop, 2 * m.hop + 1):
        (gx,) = torch.autograd.grad(y[0, 0, t], x, retain_graph=True)
        last_visible = (t // m.hop) * m.hop
        assert gx[0, 0, last_visible + 1 :].abs().max().item() == 0
        assert gx[0, 0, : last_visible + 1].abs().sum() > 0  # and it does depend on the past


def test_non_causal_blocks_refuse_to_stream():
    with pytest.raises(TypeError, match="only a causal"):
        EncoderBlock(2, 2, 2).step(torch.randn(1, 2, 4))
    with pytest.raises(TypeError, match="cannot stream"):
        step_sequential(nn.Sequential(ResidualUnit(2), nn.Conv1d(2, 2, 3)), torch.randn(1, 2, 4), None)


def test_stream_sequential_is_the_one_protocol():
    "`nn.conv.StreamSequential` streams its children in order: 1-D codec blocks and MelCausalVAE's 2-D front end."
    torch.manual_seed(0)
    seq = StreamSequential(
        CausalConv1d(2, 4, 5), Snake(4), EncoderBlock(4, 8, 2, causal=True), ResidualUnit(8, 3, causal=True)
    )
    stage = down_stage(3, 6, n_blocks=2, kernel_size=3)  # (B, c, F, T): time is the last axis
    x1, x2 = torch.randn(2, 2, 64), torch.randn(2, 3, 10, 64)
    with torch.no_grad():
        y1, y2 = seq(x1), stage(x2)
        for seed in range(3):
            g = torch.Generator().manual_seed(seed)
            torch.testing.assert_close(stream(seq, x1, random_chunks(64, 9, g)), y1, atol=1e-5, rtol=1e-5)
            even = [2 * n for n in random_chunks(32, 4, g) if n]  # the 2-D stage takes non-empty frame pairs
            torch.testing.assert_close(stream(stage, x2, even), y2, atol=1e-5, rtol=1e-5)
        assert isinstance(stage.step(x2[..., :4])[1], StreamingState)
