"""`grad_checkpoint` (SaxGPT, AudioLM, MelVAE) gives the loss and gradients of the plain model, dropout included;
`fsdp_blocks` (those three + LyraCodec) names disjoint submodules that hold the model's layers."""

import pytest
import torch

import audiolab.nn.transformer as tr
from audiolab.data.tokens import PromptTargetCollate, synthetic_codes
from audiolab.models.audiolm import AudioLM, AudioLMConfig
from audiolab.models.codec import LyraCodec, tiny_codec_config
from audiolab.models.melvae import MelVAE, MelVAEConfig
from audiolab.models.saxgpt import SaxGPT, SaxGPTConfig

torch.set_num_threads(1)


def saxgpt(gc: bool):
    cfg = SaxGPTConfig(size="tiny", vocab_size=33, padding_idx=32, max_seq_len=48, dropout=0.2, grad_checkpoint=gc)
    g = torch.Generator().manual_seed(1)
    back, lead = torch.randint(0, 32, (2, 4, 12), generator=g), torch.randint(0, 32, (2, 4, 10), generator=g)
    return SaxGPT(cfg), lambda m: m.training_step((back, lead))["loss"], 2 * 2  # tiny: 2 encoder + 2 decoder layers


def audiolm(gc: bool):
    cfg = AudioLMConfig(n_q=4, bins=16, dim=32, heads=4, layers=2, dropout=0.2, grad_checkpoint=gc)
    b = PromptTargetCollate()(synthetic_codes(3, bins=16, min_frames=10, max_frames=14, seed=1))
    return AudioLM(cfg), lambda m: m.training_step(b, stage=2)["loss"], 2 + 2


def melvae(gc: bool):
    cfg = MelVAEConfig(
        d_model=32, tf_heads=2, tf_layers=2, latent_dim=8, n_residual_blocks=1, enc_channels=4, mel_channels=24,
        unet_dim=32, unet_depth=2, unet_heads=2, drop_p=0.2, unet_dropout_rate=0.2, grad_checkpoint=gc,
    )  # fmt: skip
    mel, length = torch.randn(2, 40, 24, generator=torch.Generator().manual_seed(1)), torch.tensor([40, 29])
    return MelVAE(cfg), lambda m: m.training_step({"mel": mel, "length": length})["loss"], 2 + 2


@pytest.mark.parametrize("family", [saxgpt, audiolm, melvae])
def test_grad_checkpoint_same_loss_and_grads(family, monkeypatch):
    calls = []
    real = tr.checkpoint
    monkeypatch.setattr(tr, "checkpoint", lambda *a, **kw: calls.append(1) or real(*a, **kw))
    results = []
    for gc in (False, True):
        torch.manual_seed(0)
        m, loss_fn, n_blocks = family(gc)
        m.train()
        loss = loss_fn(m)  # RNG (dropout, noise, condition dropout) seeded the same for both
        loss.backward()
        results.append((loss.detach(), {k: p.grad.clone() for k, p in m.named_parameters() if p.grad is not None}))
        if not gc:
            assert not calls, "checkpoint ran with grad_checkpoint=False"
    assert len(calls) >= n_blocks, f"grad_checkpoint=True checkpointed {len(calls)} calls, expected >= {n_blocks}"
    (l0, g0), (l1, g1) = results
    torch.testing.assert_close(l1, l0, rtol=0, atol=1e-6)
    assert g0.keys() == g1.keys() and len(g0) > 10
    for k in g0:
        torch.testing.assert_close(g1[k], g0[k], rtol=1e-5, atol=1e-6, msg=lambda s, k=k: f"{k}: {s}")
    assert len(m.fsdp_blocks()) == n_blocks


@pytest.mark.parametrize("family", [saxgpt, audiolm, melvae, lambda gc: (LyraCodec(tiny_codec_config()), None, 3 + 3)])
def test_fsdp_blocks_are_disjoint_submodules(family):
    m, _, n_blocks = family(False)
    blocks = m.fsdp_blocks()
    assert len(blocks) == n_blocks
    subs = {id(s) for s in m.modules()}
    assert all(id(b) in subs for b in blocks)
    owned = [id(p) for b in blocks for p in b.parameters()]
    assert len(owned) == len(set(owned)), "a parameter sits in two blocks"
    # the blocks hold most of the weights (what sharding them one by one saves)
    frac = sum(p.numel() for b in blocks for p in b.parameters()) / sum(p.numel() for p in m.parameters())
    assert frac > 0.3, frac
