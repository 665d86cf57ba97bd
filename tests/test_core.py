"Atomic writes: what later pipeline stages trust."

import hashlib
import pytest
import torch
from audiolab.core import atomic_path


def _md5(p):
    return hashlib.md5(p.read_bytes()).hexdigest()


def test_atomic_torch_save_is_byte_reproducible(tmp_path):
    "The same tensor saved twice through atomic_path gives the same bytes, so DVC hashes repeat across runs."
    x = torch.arange(12.0).reshape(3, 4)
    a, b = tmp_path / "a" / "m.pt", tmp_path / "b" / "m.pt"
    for p in (a, b):
        with atomic_path(p) as tmp:
            torch.save(x, tmp)
    assert _md5(a) == _md5(b)
    assert torch.equal(torch.load(a), x)
    assert sorted(q.name for q in a.parent.iterdir()) == ["m.pt"]  # no temp folder left


def test_atomic_path_failure_keeps_the_old_file(tmp_path):
    p = tmp_path / "m.pt"
    torch.save(torch.zeros(2), p)
    with pytest.raises(RuntimeError):
        with atomic_path(p) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("crash mid-write")
    assert torch.equal(torch.load(p), torch.zeros(2))
    assert sorted(q.name for q in tmp_path.iterdir()) == ["m.pt"]


def test_inference_dtype_follows_the_machine_and_the_env_override(monkeypatch):
    "`auto` gives bf16 only where the device has native bf16; $AUDIOLAB_PRECISION overrides it; explicit wins."
    from audiolab import core

    monkeypatch.delenv(core.PRECISION_ENV, raising=False)
    monkeypatch.setattr(core, "fast_bf16", lambda device: False)
    assert core.inference_dtype("cpu") == torch.float32
    monkeypatch.setattr(core, "fast_bf16", lambda device: True)
    assert core.inference_dtype("cpu") == torch.bfloat16
    monkeypatch.setenv(core.PRECISION_ENV, "fp32")
    assert core.inference_dtype("cpu") == torch.float32
    monkeypatch.setattr(core, "fast_bf16", lambda device: False)
    monkeypatch.setenv(core.PRECISION_ENV, "BF16")
    assert core.inference_dtype("cpu") == torch.bfloat16
    assert core.inference_dtype("cpu", "fp32") == torch.float32  # an explicit argument beats the environment
    monkeypatch.setenv(core.PRECISION_ENV, "fp8")
    with pytest.raises(core.ConfigError, match="unknown inference precision"):
        core.inference_dtype("cpu")


def test_fast_bf16_reads_the_cpu_flags():
    "On CPU the answer is the /proc/cpuinfo flag list (avx512_bf16 / amx_bf16 / aarch64 bf16), never a guess."
    from audiolab import core

    assert core.fast_bf16("meta") is False
    assert core.cpuinfo_has_bf16("flags\t\t: fpu sse2 avx512f avx512bw\n") is False
    assert core.cpuinfo_has_bf16("flags\t\t: fpu sse2 avx512f amx_bf16 amx_tile\n") is True
    try:
        text = open("/proc/cpuinfo").read()
    except OSError:
        return
    assert core.fast_bf16("cpu") == core.cpuinfo_has_bf16(text)
