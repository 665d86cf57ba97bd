"""The `audiolab` command line and the Python entry points under it, on tiny models built here and saved where the
pipeline writes them: every verb reads audio at any rate / channel count and writes what it promises; bad inputs
(a file that is not audio, a missing model folder, a folder of the wrong model, a bad rate) end with a clear error."""

import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors import safe_open

from conftest import make_tiny_tokenizer
from audiolab.cli import DEFAULTS, main
from audiolab.hub import describe, load, model_type
from audiolab.models.audiolm import AudioLM, AudioLMConfig
from audiolab.models.codec import LyraCodec, tiny_codec_config
from audiolab.models.kick import KeywordVocab, KickLDM, KickVAE, KickVAEConfig, LatentUNet, LatentUNetConfig
from audiolab.models.melvae import MelVAE, MelVAEConfig, mel_to_audio
from audiolab.models.saxgpt import SaxGPT, SaxGPTConfig
from audiolab.models.separation import SeparatorConfig, SeparatorNet
from audiolab.models.tokenizer import save_hf_encodec
from audiolab.models.vocoder import HiFiGAN, HiFiGANConfig, VocosConfig, VocosVocoder, save_vocos_dir

torch.set_num_threads(1)
BINS = 16


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    "A working directory holding a tiny model at every path `dvc repro` writes one, and two input files."
    root = tmp_path_factory.mktemp("lab")
    torch.manual_seed(0)
    tok = make_tiny_tokenizer(bins=BINS)
    tok.save_pretrained(root / DEFAULTS["tokenizer"])
    sax = SaxGPTConfig(size="tiny", vocab_size=BINS + 1, padding_idx=BINS, max_seq_len=24)  # 19-frame windows
    SaxGPT(sax).save_pretrained(root / DEFAULTS["saxgpt"])
    AudioLM(AudioLMConfig(n_q=4, bins=BINS, dim=32, heads=4, layers=1)).save_pretrained(root / DEFAULTS["audiolm"])
    mv = dict(d_model=32, tf_heads=2, tf_layers=1, latent_dim=8, n_residual_blocks=1, enc_channels=4, unet_dim=32)
    MelVAE(MelVAEConfig(**mv, unet_depth=1, unet_heads=2, compress_factor_C=4, num_steps=2)).save_pretrained(
        root / DEFAULTS["melvae"]
    )
    VocosVocoder(VocosConfig(dim=16, intermediate_dim=32, num_layers=1)).save_pretrained(root / DEFAULTS["vocoder"])
    LyraCodec(tiny_codec_config()).save_pretrained(root / DEFAULTS["codec"])
    sep = dict(channels=8, depth=3, nfft=1024, t_layers=1, t_heads=2, segment_s=1.0)
    SeparatorNet(SeparatorConfig(**sep)).save_pretrained(root / DEFAULTS["separator"])
    vocab = KeywordVocab(["deep", "punchy", "long"])
    unet = LatentUNetConfig(channels=(16, 32), cond_dim=32, time_freq_dim=16, kw_emb_dim=8, vocab_size=len(vocab))
    KickLDM(KickVAE(KickVAEConfig(channels=(8, 8, 16, 16))), LatentUNet(unet), vocab).save_pretrained(
        root / DEFAULTS["kick"]
    )
    HiFiGAN(HiFiGANConfig(upsample_initial_channel=32)).save_pretrained(root / DEFAULTS["kick_vocoder"])
    t = np.arange(int(0.8 * 22050)) / 22050
    st = np.stack([0.3 * np.sin(2 * np.pi * 220 * t), 0.2 * np.sin(2 * np.pi * 330 * t)], 1)  # 0.8 s stereo
    sf.write(root / "in.wav", st.astype(np.float32), 22050)
    (root / "text.wav").write_text("not audio")
    return root


def run(lab, monkeypatch, *argv) -> int:
    monkeypatch.chdir(lab)
    return main(list(argv))


def read(path):
    x, sr = sf.read(path, always_2d=True)
    assert np.isfinite(x).all() and x.shape[0] > 0
    return x, sr


def test_every_folder_has_its_model_type_and_loads_in_eval_mode(lab):
    want = dict(tokenizer="tokenizer", saxgpt="saxgpt", audiolm="audiolm", melvae="melvae", vocoder="vocos",
                codec="lyra_codec", separator="separator", kick="kick_ldm", kick_vocoder="hifigan")  # fmt: skip
    for key, kind in want.items():
        p = lab / DEFAULTS[key]
        assert model_type(p) == kind
        if (p / "config.json").is_file():
            meta = json.loads((p / "config.json").read_text())
            assert meta["model_type"] == kind and meta["audiolab_version"]
        m = load(p)
        assert not m.training and all(not s.training for s in m.modules()), key
    assert load(lab / DEFAULTS["codec"]).sample_rate == 44100
    assert (
        load(lab / DEFAULTS["kick"]).sample_rate == 44100 and load(lab / DEFAULTS["kick_vocoder"]).sample_rate == 44100
    )
    assert (
        load(lab / DEFAULTS["vocoder"]).sample_rate == 24000 and load(lab / DEFAULTS["tokenizer"]).sample_rate == 32000
    )
    assert AudioLM.inference is AudioLM.generate


def test_older_folder_without_model_type(lab, tmp_path):
    "A folder written before `model_type` existed: the type comes from the weights' class; unknown -> clear error."
    src = lab / DEFAULTS["saxgpt"]
    old = tmp_path / "old"
    old.mkdir()
    cfg = json.loads((src / "config.json").read_text())
    (old / "config.json").write_text(
        json.dumps({k: v for k, v in cfg.items() if k not in ("model_type", "audiolab_version")})
    )
    (old / "model.safetensors").write_bytes((src / "model.safetensors").read_bytes())
    assert model_type(old) == "saxgpt" and isinstance(load(old), SaxGPT)
    (old / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt5"}))
    with pytest.raises(ValueError, match="unknown model_type 'gpt5'"):
        load(old)


def test_info(lab, monkeypatch, capsys):
    assert run(lab, monkeypatch, "info", DEFAULTS["codec"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["model_type"] == "lyra_codec" and info["sample_rate"] == 44100
    assert info["parameters"] == sum(p.numel() for p in load(lab / DEFAULTS["codec"]).parameters())
    assert describe(lab / DEFAULTS["kick"])["parameters"] > 0  # nested vae/ + unet/


def test_kick(lab, monkeypatch):
    assert run(lab, monkeypatch, "kick", "deep punchy", "-n", "2", "-o", "k1", "--steps", "2") == 0
    assert run(lab, monkeypatch, "kick", "deep punchy", "-n", "2", "-o", "k2", "--steps", "2", "--sr", "16000") == 0
    (a, sr), (b, sr2) = read(lab / "k1/kick_000.wav"), read(lab / "k2/kick_000.wav")
    assert sr == 44100 and a.shape == (88200, 1) and sr2 == 16000 and b.shape == (32000, 1)
    assert sorted(p.name for p in (lab / "k1").iterdir()) == ["kick_000.wav", "kick_001.wav"]


def test_solo_and_mix(lab, monkeypatch):
    "0.8 s of 22.05 kHz stereo backing -> lead at the same rate and channels (40 frames: 3 SaxGPT windows)."
    assert run(lab, monkeypatch, "solo", "in.wav", "-o", "lead.wav") == 0
    assert run(lab, monkeypatch, "solo", "in.wav", "-o", "mix.wav", "--mix") == 0
    (lead, sr), (mix, _), (back, _) = read(lab / "lead.wav"), read(lab / "mix.wav"), read(lab / "in.wav")
    assert sr == 22050 and lead.shape == back.shape and mix.shape == back.shape  # the backing's rate, channels, length
    n = min(len(mix), len(lead))
    # the mix is backing + the same lead (same seed), scaled only if it clips
    resid = mix[:n] - lead[:n]
    assert np.corrcoef(resid[:, 0], back[:n, 0])[0, 1] > 0.99 or np.abs(mix).max() <= 1.0


def test_continue(lab, monkeypatch):
    assert (
        run(lab, monkeypatch, "continue", "in.wav", "--seconds", "0.4", "--prompt-seconds", "0.3", "-o", "c.wav") == 0
    )
    x, sr = read(lab / "c.wav")
    assert sr == 22050 and x.shape[1] == 2
    assert 0.3 * sr - 1 <= len(x) <= (0.3 + 0.4 + 0.03) * sr  # prompt + at most `seconds` (EOS may stop early)


def test_reconstruct_with_the_projects_vocos(lab, monkeypatch, caplog):
    assert run(lab, monkeypatch, "reconstruct", "in.wav", "-o", "r.wav", "--steps", "2") == 0
    x, sr = read(lab / "r.wav")
    assert sr == 22050 and x.shape[1] == 2 and abs(len(x) - 0.8 * sr) <= 256 * 22050 / 24000 + 1
    with caplog.at_level(logging.WARNING, logger="audiolab"):
        assert run(lab, monkeypatch, "reconstruct", "in.wav", "-o", "r2.wav", "--steps", "2", "--vocoder", "nope") == 0
    assert "Griffin-Lim" in caplog.text
    # Python: MelVAE + the project's VocosVocoder (it has no `.decode`) through mel_to_audio
    voc = load(lab / DEFAULTS["vocoder"])
    assert mel_to_audio(torch.randn(1, 10, 100), voc).shape == (1, 9 * 256)


def test_codec_round_trip(lab, monkeypatch):
    assert run(lab, monkeypatch, "codec", "encode", "in.wav", "-o", "z.safetensors") == 0
    with safe_open(str(lab / "z.safetensors"), "pt") as f:
        z, meta = f.get_tensor("latent"), f.metadata()
    # joint stereo, latent 8, hop 32 at 44.1 kHz; the input's rate and channels ride along for decode
    assert z.shape == (8, -(-int(0.8 * 44100) // 32)) and meta["sample_rate"] == "22050" and meta["channels"] == "2"
    assert run(lab, monkeypatch, "codec", "decode", "z.safetensors", "-o", "y.wav") == 0
    (y, sr), (x, _) = read(lab / "y.wav"), read(lab / "in.wav")
    assert sr == 22050 and y.shape[1] == 2 and abs(len(y) - len(x)) <= 1


def test_tokenize_round_trip(lab, monkeypatch):
    assert run(lab, monkeypatch, "tokenize", "in.wav", "-o", "codes.safetensors") == 0
    with safe_open(str(lab / "codes.safetensors"), "pt") as f:
        codes = f.get_tensor("codes")
    assert codes.shape == (4, 40) and 0 <= int(codes.min()) and int(codes.max()) < BINS  # 0.8 s at 50 Hz
    assert run(lab, monkeypatch, "tokenize", "codes.safetensors", "-o", "t.wav") == 0
    y, sr = read(lab / "t.wav")
    assert sr == 22050 and y.shape == (int(0.8 * 22050), 2)
    assert run(lab, monkeypatch, "codec", "decode", "codes.safetensors", "-o", "bad.wav") == 1  # not latents


def test_separate_and_vocode(lab, monkeypatch):
    assert run(lab, monkeypatch, "separate", "in.wav", "-o", "stems") == 0
    for name in ("lead", "backing"):
        s, sr = read(lab / "stems" / f"{name}.wav")
        assert sr == 22050 and s.shape == (int(0.8 * 22050), 2)
    assert run(lab, monkeypatch, "vocode", "in.wav", "-o", "v.wav", "--sr", "24000") == 0
    v, sr = read(lab / "v.wav")
    assert sr == 24000 and v.shape[1] == 2 and abs(len(v) - 0.8 * 24000) <= 256


def test_train_dry_run(lab, monkeypatch, capsys):
    args = ("train", "saxgpt", "--set", "train.max_steps=3", "model.dropout=0.0", "--nproc", "2", "--dry-run")
    assert run(lab, monkeypatch, *args) == 0
    cmd = capsys.readouterr().out
    assert "torch.distributed.run" in cmd and "--nproc_per_node=2" in cmd
    assert "audiolab.recipes.saxgpt:train_saxgpt" in cmd and "--section saxgpt" in cmd and "train.max_steps=3" in cmd
    assert run(lab, monkeypatch, "train", "nonsense") == 1


def test_bad_inputs_give_clear_errors(lab, monkeypatch, caplog):
    with caplog.at_level(logging.ERROR, logger="audiolab"):
        assert run(lab, monkeypatch, "solo", "text.wav") == 1
        assert "text.wav" in caplog.text  # names the file
        caplog.clear()
        assert run(lab, monkeypatch, "solo", "in.wav", "--model", "runs/nothing") == 1
        assert "runs/nothing: no such model folder" in caplog.text
        caplog.clear()
        assert run(lab, monkeypatch, "solo", "in.wav", "--model", DEFAULTS["codec"]) == 1
        assert "holds a lyra_codec model; `audiolab solo` needs saxgpt" in caplog.text
        caplog.clear()
        assert run(lab, monkeypatch, "tokenize", "missing.wav", "-o", "x.safetensors") == 1
        assert "missing.wav" in caplog.text
    with pytest.raises(SystemExit) as e:
        run(lab, monkeypatch, "vocode", "in.wav", "--sr", "-44100")
    assert e.value.code == 2  # argparse: "'-44100': expected a whole number > 0"


def test_console_script_help():
    "The installed `audiolab` script (settings.ini console_scripts) answers --help with every verb."
    exe = Path(sys.executable).with_name("audiolab")
    if not exe.exists():
        pytest.skip(f"{exe} not installed: run `pip install --no-deps --no-build-isolation -e .` once")
    out = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120, check=True).stdout
    for verb in ("kick", "solo", "continue", "reconstruct", "codec", "tokenize", "separate", "vocode", "info", "train"):
        assert verb in out


def test_python_entry_points_refuse_what_does_not_fit(lab):
    tok = load(lab / DEFAULTS["tokenizer"])
    wav = torch.randn(2, 8000)
    with pytest.raises(ValueError, match="tokenizer .* does not fit SaxGPT"):
        SaxGPT(SaxGPTConfig(size="tiny", vocab_size=33, padding_idx=32)).generate_audio(tok, wav, 16000)
    with pytest.raises(ValueError, match="tokenizer .* does not fit AudioLM"):
        AudioLM(AudioLMConfig(n_q=4, bins=32, dim=32, heads=4, layers=1)).generate_audio(tok, wav, 16000)
    with pytest.raises(ValueError, match=r"expected 2 dims \(C, L\)"):
        load(lab / DEFAULTS["saxgpt"]).generate_audio(tok, wav[0], 16000)
    with pytest.raises(ValueError, match="prompt_s and seconds must be > 0"):
        load(lab / DEFAULTS["audiolm"]).generate_audio(tok, wav, 16000, seconds=0)


def test_load_other_layouts(lab, tmp_path):
    "A hub-layout Vocos (config.yaml + pytorch_model.bin) and a Hugging Face EnCodec folder open through `load` too."
    voc = load(lab / DEFAULTS["vocoder"])
    save_vocos_dir(voc, tmp_path / "vocos_hub")
    assert model_type(tmp_path / "vocos_hub") == "vocos_hub"
    mel = torch.randn(1, 100, 6)
    assert torch.equal(load(tmp_path / "vocos_hub")(mel), voc(mel))
    tok = load(lab / DEFAULTS["tokenizer"])
    save_hf_encodec(tok, tmp_path / "hf")
    assert model_type(tmp_path / "hf") == "encodec_hf"
    x = 0.1 * torch.randn(1, 1, 3200)
    assert torch.equal(load(tmp_path / "hf").encode(x), tok.encode(x))
