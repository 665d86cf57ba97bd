"Tokenizer contracts across knobs: shapes/frame rate, code range, k-means init, chunked == whole, checkpoint formats."
import math, warnings

import pytest
import torch

from audiolab.core import CheckpointError
from audiolab.models.tokenizer import (AudioTokenizer, TokenizerConfig, load_encodec_checkpoint, load_hf_encodec,
                                       save_hf_encodec, _embed_long, infer_config)

pytestmark = [pytest.mark.filterwarnings("ignore:.*weight_norm"), pytest.mark.filterwarnings("ignore:.*not initialised")]

def tiny(**kw):
    return TokenizerConfig(**{**dict(n_filters=4, dimension=16, bins=64, lstm=0, kmeans_iters=3), **kw})

def trained(cfg, seed=0, n=3200):
    torch.manual_seed(seed)
    tok = AudioTokenizer(cfg)
    tok.train()(0.3 * torch.randn(2, cfg.channels, n))        # first training batch: k-means init
    return tok.eval()

@pytest.mark.parametrize("kw", [dict(), dict(lstm=1, true_skip=False), dict(causal=True), dict(channels=2),
                                dict(ratios=(4, 4, 2), sample_rate=16000)])
def test_shapes_frame_rate_and_range(kw):
    cfg = tiny(**kw); tok = trained(cfg)
    L = int(0.13 * cfg.sample_rate) + 7                        # not a multiple of the hop
    x = 0.3 * torch.randn(2, cfg.channels, L)
    codes = tok.encode(x)
    assert codes.shape == (2, cfg.n_q, math.ceil(L / cfg.hop_length)) and codes.dtype == torch.int64
    assert 0 <= codes.min() and codes.max() < cfg.bins
    assert tok.frame_rate == cfg.sample_rate / math.prod(cfg.ratios)
    assert tok.decode(codes).shape == (2, cfg.channels, codes.shape[-1] * cfg.hop_length)

def test_seed_setting_is_50hz_4x2048():
    cfg = TokenizerConfig(n_filters=4)
    assert (cfg.sample_rate, cfg.hop_length, cfg.frame_rate, cfg.n_q, cfg.bins) == (32000, 640, 50.0, 4, 2048)
    tok = AudioTokenizer(cfg).eval()
    assert tok.encode(torch.zeros(1, 1, 64000)).shape == (1, 4, 100)

def test_kmeans_init_makes_codes_vary():
    tok = AudioTokenizer(tiny(bins=16)).eval()
    x = 0.3 * torch.randn(1, 1, 32000)                         # 50 frames > 16 codes: residuals stay non-zero
    assert not tok.is_initialized and tok.encode(x).unique().tolist() == [0]
    tok.train()(x); tok.eval()
    assert tok.is_initialized
    c = tok.encode(x)
    assert all(c[0, k].unique().numel() > 1 for k in range(4))  # every codebook is used, not a constant

def test_chunked_equals_whole_without_state_and_close_with_lstm():
    x = 0.3 * torch.randn(1, 1, 640 * 30 + 33)
    conv = trained(tiny())
    torch.testing.assert_close(_embed_long(conv, x, 0.1, 0.3), conv.embed(x), atol=1e-4, rtol=1e-4)
    rec = trained(tiny(lstm=2))
    z, zc = rec.embed(x), _embed_long(rec, x, 0.1, 0.3)
    rel = (zc - z).norm() / z.norm()
    assert rel < 0.05, rel                                     # truncated LSTM state: close, not identical
    agree = (rec.encode_long(x, 0.1, 0.3) == rec.encode(x)).float().mean()
    assert agree > 0.8, agree
    assert (_embed_long(rec, x, 0.1, 0.0) - z).norm() / z.norm() > rel   # context is what makes chunks agree

def test_hf_loader_reads_parametrization_names(tmp_path):
    src = trained(tiny(lstm=1))
    save_hf_encodec(src, tmp_path)
    from safetensors.torch import load_file, save_file
    sd = load_file(str(tmp_path / "model.safetensors"))
    new = {k.replace(".weight_g", ".parametrizations.weight.original0").replace(".weight_v", ".parametrizations.weight.original1"): v
           for k, v in sd.items()}                              # transformers >= 4.40 naming of weight norm
    save_file(new, str(tmp_path / "model.safetensors"))
    x = 0.3 * torch.randn(1, 1, 3200)
    assert torch.equal(load_hf_encodec(tmp_path).encode(x), src.encode(x))

def test_checkpoint_errors(tmp_path):
    src = trained(tiny())
    sd = {k: v for k, v in src.state_dict().items() if not k.startswith("quantizer")}
    torch.save(sd, tmp_path / "partial.th")
    with pytest.raises(CheckpointError, match="not an EnCodec state dict"): load_encodec_checkpoint(tmp_path / "partial.th")
    save_hf_encodec(src, tmp_path / "hf")
    (tmp_path / "hf" / "config.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="not valid JSON"): load_hf_encodec(tmp_path / "hf")

def test_infer_config_recovers_architecture():
    cfg = tiny(n_filters=6, dimension=24, ratios=(5, 4, 2), lstm=2, true_skip=False, n_q=3, bins=32, compress=3)
    got = infer_config(AudioTokenizer(cfg).state_dict())
    for k in ("n_filters", "dimension", "ratios", "lstm", "true_skip", "n_q", "bins", "compress", "channels"):
        assert getattr(got, k) == getattr(cfg, k), k
