"""Faults the trainer must survive or refuse: NaN/Inf losses, crafted pickles, truncated/corrupted and half-written
checkpoints. Everything runs in this process on the toy job of `tests/toy_train.py` (seconds)."""

import json
import math
import re
import shutil
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

sys.path.insert(0, str(Path(__file__).parent))
import toy_train as T
from audiolab.core import CheckpointError
from audiolab.train.callbacks import CheckpointCB
from audiolab.train.checkpoint import CheckpointStore, load_state, read_checkpoint, _sha256
from audiolab.train.learner import Learner, NonFiniteLossError, TrainConfig

STEPS, EVERY = 12, 5


def run(out, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return T.train(T.ToyConfig(out=str(out), steps=STEPS, save_every=EVERY, **kw))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    run(out)
    return out, T.losses(out), T.final_params(out)


# ---- NaN / Inf ------------------------------------------------------------------------------------------------
def test_nan_step_is_skipped_and_logged(tmp_path, reference):
    learn = run(tmp_path, nan_at=7)
    got, ref = T.losses(tmp_path), reference[1]
    assert [got[s] for s in range(1, 7)] == [ref[s] for s in range(1, 7)]  # identical up to the bad step
    assert math.isnan(got[7]) and all(math.isfinite(got[s]) for s in got if s != 7)
    assert [h["step"] for h in learn.history if h.get("nan_skipped")] == [7]
    assert learn.step == STEPS and learn.nan_streak == 0  # training went on
    assert all(torch.isfinite(p).all() for p in T.final_params(tmp_path).values())


def test_persistent_nan_stops_with_clear_error(tmp_path):
    "A real divergence (SGD, a far too large LR, no clipping) must stop with NonFiniteLossError, not train on garbage."
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 4, generator=g)
    dl = DataLoader(TensorDataset(x, x.sum(1, keepdim=True)), batch_size=16, shuffle=True)
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    learn = Learner(
        model,
        dl,
        cfg=TrainConfig(max_steps=300, clip_grad=None, max_nan=3),
        opt=torch.optim.SGD(model.parameters(), lr=2.0),
        loss_fn=nn.functional.mse_loss,
        cbs=[CheckpointCB(tmp_path, every=1)],
    )
    with warnings.catch_warnings(), pytest.raises(NonFiniteLossError, match=r"NaN/Inf for 3 steps in a row") as e:
        warnings.simplefilter("ignore")
        learn.fit()
    first, last = map(int, re.search(r"\(steps (\d+)\.\.(\d+)\)", str(e.value)).groups())
    assert last == learn.step + 1 < 300 and first == last - 2  # the failing step is the one in flight
    assert all(not math.isfinite(h["loss"]) for h in learn.history if h["step"] >= first)
    assert torch.isfinite(learn.model.weight).all()  # skipped updates never wrote NaN weights
    saved = nn.Linear(4, 1)
    read_checkpoint(CheckpointStore(tmp_path).latest(), {"model": saved})
    assert torch.equal(saved.weight, learn.model.weight)  # the last checkpoint holds those finite weights


# ---- hostile and damaged checkpoints ---------------------------------------------------------------------------
class Evil:
    "Unpickling this runs code: it writes `target`."

    def __init__(self, target):
        self.target = str(target)

    def __reduce__(self):
        return (exec, (f"open({self.target!r}, 'w').write('pwned')",))


def reseal(ckpt: Path):
    "Rewrite the manifest so it matches the (tampered) files: only the loader's own checks stand in the way."
    m = json.loads((ckpt / "manifest.json").read_text())
    for f in m["files"]:
        m["files"][f] = {"bytes": (ckpt / f).stat().st_size, "sha256": _sha256(ckpt / f)}
    (ckpt / "manifest.json").write_text(json.dumps(m))


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src / "ckpt", dst / "ckpt")
    return dst


def test_crafted_pickle_is_refused_and_never_runs(tmp_path, reference):
    out = copy_run(reference[0], tmp_path / "run")
    target = tmp_path / "pwned.txt"
    ckpt = CheckpointStore(out / "ckpt").latest()
    state = load_state(ckpt / "state.pt")
    state["payload"] = Evil(target)
    torch.save(state, ckpt / "state.pt")
    reseal(ckpt)
    with pytest.raises(CheckpointError, match="refused to load") as e:
        run(out)  # resuming meets the crafted file
    assert e.value.path == ckpt / "state.pt"
    assert not target.exists()
    with pytest.raises(CheckpointError, match="refused to load"):
        read_checkpoint(ckpt)
    assert not target.exists()


@pytest.mark.parametrize("victim", ["state.pt", "model.safetensors"])
def test_truncated_checkpoint_errors_and_resume_falls_back(tmp_path, reference, victim):
    out = copy_run(reference[0], tmp_path / "run")
    store = CheckpointStore(out / "ckpt")
    newest = store.latest()
    assert newest.name == f"step-{STEPS:08d}" and store.steps() == [10, 12]
    manifest = (newest / "manifest.json").read_text()
    data = (newest / victim).read_bytes()
    (newest / victim).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as e:
        read_checkpoint(newest)
    assert e.value.path == newest / victim
    reseal(newest)  # even with a matching manifest the parser refuses it
    with pytest.raises(CheckpointError, match=f"{victim}: truncated or corrupted"):
        read_checkpoint(newest, {"model": T.ToyNet(0.1), "ema": T.ToyNet(0.1)})
    # with its manifest, the damaged newest checkpoint is skipped: resume from step 10, end exactly like the reference
    (newest / "manifest.json").write_text(manifest)
    assert store.latest().name == "step-00000010"
    run(out)
    assert list(T.losses(out)) == [11, 12] and [T.losses(out)[s] for s in (11, 12)] == [
        reference[1][s] for s in (11, 12)
    ]
    assert all(torch.equal(T.final_params(out)[k], v) for k, v in reference[2].items())


def test_half_written_checkpoint_is_ignored(tmp_path, reference):
    "A writer killed mid-save leaves a hidden temp dir and maybe a stale pointer; neither is taken for a checkpoint."
    out = copy_run(reference[0], tmp_path / "run")
    root = out / "ckpt"
    shutil.rmtree(root / "step-00000012")
    tmp = root / ".step-00000012.abc123.tmp"
    tmp.mkdir()
    (tmp / "model.safetensors").write_bytes(b"\0" * 10)
    (root / "last.json").write_text(json.dumps({"name": "step-00000012", "step": 12}))
    assert CheckpointStore(root).steps() == [10] and CheckpointStore(root).latest().name == "step-00000010"
