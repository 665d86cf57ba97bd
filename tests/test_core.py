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
