"""Every family's `full` config (params.yaml, through the recipe configs the stages use) builds, on the meta device
(no memory, seconds), at the size of the reference implementation it follows.

Exact where the reference publishes an exact figure or where its code is installed to count (LyraCodec's 255,858,050;
the `encodec` package's SEANet for the tokenizer; the `vocos` package for Vocos; `demucs` for HTDemucs), within the
rounding of a rounded figure (SaxGPT medium "~31M", Vocos 13.5 M, HiFi-GAN V1 13.92 M; the kick U-Net's 5.91 M is
5,905,284 counted on the reference's code), and pinned where no size is published (MelCausalVAE, AudioLM/VALL-E, the
kick VAE), with the architecture the reference describes checked instead.

Deviations (figures in the comments): SaxGPT learns its positional tables (2 x 1505 x 384 = 1.16 M over the "~31M");
the separator has 2 mono stems (lead, backing) where HTDemucs has 4 stereo ones; the kick vocoder is the reference's
"HiFi-GAN v1 sized for 6GB VRAM" (256 initial channels, 5 upsamplings: 3.66 M), not V1 itself.
"""

import inspect
import sys
from pathlib import Path

import pytest
import torch

from audiolab.models.audiolm import AudioLM
from audiolab.models.codec import LyraCodec
from audiolab.models.kick import KickVAE, LatentUNet
from audiolab.models.melvae import MelVAE
from audiolab.models.saxgpt import SaxGPT
from audiolab.models.separation import SeparatorNet
from audiolab.models.tokenizer import AudioTokenizer
from audiolab.models.vocoder import HiFiGAN, HiFiGANConfig
from audiolab.recipes.audiolm import AudioLMTrainConfig
from audiolab.recipes.codec import CodecRecipe
from audiolab.recipes.kick import KickConfig
from audiolab.recipes.melvae import MelVAETrainConfig
from audiolab.recipes.saxgpt import SaxGPTTrainConfig
from audiolab.recipes.separation import SeparatorRecipe
from audiolab.recipes.tokenizer import TokenizerRecipe
from audiolab.recipes.vocoder import VocoderRecipe

ROOT = Path(__file__).resolve().parents[1]
PARAMS = ROOT / "params.yaml"
sys.path.insert(0, str(ROOT / "bench"))
from full_profile import KICK_VOCAB, n_params  # noqa: E402


def full(cls, section: str):
    return cls.from_params(section, "full", PARAMS)


def meta(build):
    with torch.device("meta"):
        return build()


def test_codec_is_lyracodec_exactly():
    r = full(CodecRecipe, "codec")
    assert n_params(meta(lambda: LyraCodec(r.model))) == 255_858_050  # "Model has 255,858,050 parameters"
    assert r.model.hop * r.model.channels // r.model.latent_dim == 64  # per latent value: 2048 x 2 ch / 64


def test_saxgpt_medium_about_31m():
    c = full(SaxGPTTrainConfig, "saxgpt").model
    m = meta(lambda: SaxGPT(c))
    assert (c.d_model, c.nhead, c.num_encoder_layers, c.num_decoder_layers, c.dim_feedforward) == (384, 6, 6, 6, 1536)
    assert (c.vocab_size, c.padding_idx, c.max_seq_len) == (2049, 2048, 1505)
    pos = n_params(m.pos_enc) + n_params(m.pos_dec)
    assert pos == 2 * 1505 * 384
    assert n_params(m) - pos == pytest.approx(31e6, rel=0.01)  # "~31M" without the learned positions (31.15 M)
    assert n_params(m) == pytest.approx(31e6, rel=0.05)  # with them: 32.30 M


def test_tokenizer_is_encodec_32khz_seanet():
    from encodec.modules import SEANetDecoder, SEANetEncoder  # the reference's tokenizer code

    c = full(TokenizerRecipe, "tokenizer").model
    tok = meta(lambda: AudioTokenizer(c))
    kw = dict(channels=c.channels, dimension=c.dimension, n_filters=c.n_filters, ratios=list(c.ratios))
    kw.update(n_residual_layers=c.n_residual_layers, lstm=c.lstm, true_skip=c.true_skip, compress=c.compress)
    ref = meta(lambda: n_params(SEANetEncoder(**kw)) + n_params(SEANetDecoder(**kw)))
    assert n_params(tok) == ref == 56_884_674  # the codebooks are EMA buffers, not parameters
    assert (c.n_q, c.bins, c.sample_rate, c.hop_length) == (4, 2048, 32000, 640)  # 4 x 2048 codes at 50 Hz


def test_separator_is_htdemucs():
    from demucs.htdemucs import HTDemucs

    c = full(SeparatorRecipe, "separator").model
    defaults = {k: v.default for k, v in inspect.signature(HTDemucs).parameters.items()}
    assert {k: getattr(c, k) for k in ("channels", "growth", "depth", "nfft", "t_layers", "t_heads")} == {
        k: defaults[k] for k in ("channels", "growth", "depth", "nfft", "t_layers", "t_heads")
    }
    ours = n_params(meta(lambda: SeparatorNet(c)))
    ref = n_params(meta(lambda: HTDemucs(sources=["drums", "bass", "other", "vocals"])))  # 4 stereo stems
    assert (ours, ref) == (26_891_454, 26_899_536)  # 2 mono stems: only the first and last convs differ


def test_vocos_13_5m():
    from vocos.heads import ISTFTHead
    from vocos.models import VocosBackbone

    r = full(VocoderRecipe, "vocoder_speech")
    gen = r.generator()  # CPU: torchaudio's mel filterbank cannot be built on meta (it reads a value)
    m = r.model
    ref = n_params(
        VocosBackbone(
            input_channels=100, dim=m["dim"], intermediate_dim=m["intermediate_dim"], num_layers=m["num_layers"]
        )
    ) + n_params(ISTFTHead(dim=m["dim"], n_fft=1024, hop_length=256))
    assert n_params(gen) == ref == 13_531_650
    assert n_params(gen) == pytest.approx(13.5e6, abs=0.05e6)  # charactr/vocos-mel-24khz: 13.5 M


def test_hifigan_v1_and_the_kick_variant():
    # our HiFiGAN at V1's settings (512 initial channels, x8 x8 x2 x2) on a 100-mel hop-256 preset: V1 is 13.92 M
    # with 80 mels; the input conv (k 7, 512 out) holds 20 x 512 x 7 more weights here, and weight norm adds a gain
    # per output channel (~16 k) the paper's figure leaves out
    v1 = HiFiGAN(
        HiFiGANConfig(
            preset="vocos24k",
            upsample_rates=(8, 8, 2, 2),
            upsample_kernel_sizes=(16, 16, 4, 4),
            upsample_initial_channel=512,
        )
    )
    assert n_params(v1) - 20 * 512 * 7 == pytest.approx(13.92e6, abs=0.02e6)  # 13,936,130
    r = full(VocoderRecipe, "vocoder_kick")
    gen = r.generator()
    c = gen.cfg
    assert (c.upsample_rates, c.upsample_initial_channel) == ((8, 8, 2, 2, 2), 256)  # the reference's kick variant
    assert n_params(gen) == 3_655_554
    assert gen.conv_pre.weight.shape[:2] == (256, 128)  # Conv1d(128 mels, 256, 7)


def test_melvae_reference_table():
    c = full(MelVAETrainConfig, "melvae").model
    ref = dict(
        compress_factor_C=8,
        tf_heads=8,
        tf_layers=4,
        drop_p=0.1,
        latent_dim=64,
        n_residual_blocks=3,
        kl_loss_weight=1e-3,
        kl_loss_warmup_steps=1000,
        unet_dim=512,
        unet_depth=6,
        unet_heads=8,
        unet_dropout_rate=0.0,
        sigma=1e-5,
        mel_channels=100,
    )
    assert {k: getattr(c, k) for k in ref} == ref  # the reference's encoder and decoder tables
    m = meta(lambda: MelVAE(c))
    assert (n_params(m.encoder), n_params(m.decoder)) == (15_389_120, 29_418_084)  # no published size: pinned


def test_audiolm_valle_size():
    c = full(AudioLMTrainConfig, "audiolm").model
    assert (c.dim, c.heads, c.layers, c.n_q) == (1024, 16, 12, 4)  # --decoder-dim 1024 --nhead 16 ... 12 layers
    m = meta(lambda: AudioLM(c))
    d = c.dim
    layer = (4 * d * d + 4 * d) + (2 * d * 4 * d + 4 * d + d) + 2 * 2 * d  # attention, FF (4d), 2 LayerNorms
    assert n_params(m.ar_decoder) == 12 * layer + 2 * d  # + the final LayerNorm: 151.16 M
    assert n_params(m) == 368_384_005  # AR + NAR (AdaLN per stage), no published size: pinned


def test_kick_vae_shapes():
    c = full(KickConfig, "kick")
    vae = meta(lambda: KickVAE(c.vae))
    assert c.vae.channels == (32, 64, 128, 256)
    mu, _ = meta(lambda: vae.encode(torch.zeros(1, 1, 128, 173)))
    assert tuple(mu.shape) == (1, 4, 8, 11)  # "(4, 8, 11) latent tensors"
    assert n_params(vae) == 4_254_633  # no published size: pinned


def test_kick_unet_reference_size():
    c = full(KickConfig, "kick").unet.replace(vocab_size=KICK_VOCAB)
    unet = meta(lambda: LatentUNet(c))
    # KickWithReverb's LatentUNet: 5,905,284 (5.91 M); its keyword encoder is a module of its own there
    assert n_params(unet) - n_params(unet.keywords) == 5_905_284
    assert n_params(unet.keywords) == KICK_VOCAB * c.kw_emb_dim + c.kw_emb_dim + c.kw_emb_dim * c.cond_dim + c.cond_dim
