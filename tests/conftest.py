import pytest
import torch


@pytest.fixture
def one_thread():
    "Tiny ops: one thread avoids OpenMP barrier waits on a loaded 2-core machine (ms per op -> us per op)."
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def make_tiny_tokenizer(bins: int = 64, init_s: float = 0.2, init_amp: float = 0.1, **cfg):
    "A tiny EnCodec tokenizer (4 filters, 16 dims, no LSTM); one training-mode pass on noise k-means-initialises it."
    from audiolab.models.tokenizer import AudioTokenizer, TokenizerConfig

    tok = AudioTokenizer(TokenizerConfig(n_filters=4, dimension=16, bins=bins, lstm=0, kmeans_iters=3, **cfg))
    tok.train()
    tok(init_amp * torch.randn(2, 1, int(init_s * tok.sample_rate)))
    return tok.eval()
