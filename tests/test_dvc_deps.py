"""dvc.yaml deps against the import graph (`scripts/dvc_deps.py`): the real pipeline lists every module its stages
import, and a stage that imports a module its deps do not list fails the check, naming the module."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "dvc_deps.py"
spec = importlib.util.spec_from_file_location("dvc_deps", SCRIPT)
dvc_deps = importlib.util.module_from_spec(spec)
sys.modules["dvc_deps"] = dvc_deps  # dataclasses look the module up by name
spec.loader.exec_module(dvc_deps)


def run(*args, root=ROOT):
    return subprocess.run([sys.executable, str(SCRIPT), *args, "--root", str(root)], capture_output=True, text=True)


def test_real_pipeline_deps_cover_its_imports():
    r = run("--check")
    assert r.returncode == 0, r.stdout + r.stderr


def notebook(*cells: str) -> str:
    return json.dumps(
        {"cells": [{"cell_type": "code", "source": c, "metadata": {}, "outputs": []} for c in cells], "nbformat": 4}
    )


DVC = """\
# a fake pipeline
stages:
  train:                     # the stage under test
    cmd: papermill nbs/pipelines/train.ipynb runs/train.ipynb -p profile ${profile}
    deps: [nbs/pipelines/train.ipynb, audiolab/models/fam.py, data]
    params: [profile]
    outs: [runs/train.ipynb]
  other:
    cmd: python -m audiolab.tools.run --out x
    deps:
      - audiolab/tools/run.py   # the entry module
      - audiolab/gone.py
      - data/raw              # raw corpus
    outs:
      - x
  bench:
    cmd: python scripts/run_all.py
    deps: [bench]
"""


@pytest.fixture
def fake(tmp_path):
    "A tiny repo: the notebook imports models.fam, which imports nn.block (relative) and, inside a function, core."
    files = {
        "audiolab/__init__.py": '__version__ = "0.1"\n',
        "audiolab/core.py": "X = 1\n",
        "audiolab/nn/__init__.py": "",
        "audiolab/nn/block.py": "import torch\n",
        "audiolab/models/fam.py": "from ..nn.block import torch\ndef f():\n    from audiolab.core import X\n",
        "audiolab/recipes/fam.py": "from audiolab.models.fam import f\n",
        "audiolab/tools/run.py": "import importlib\nm = importlib.import_module('audiolab.core')\n",
        "nbs/pipelines/train.ipynb": notebook(
            "import json\nfrom audiolab.models.fam import f", "!{sys.executable} -m audiolab.recipes.fam --x 1"
        ),
        "scripts/run_all.py": "import subprocess\n",
        "bench/speed.py": "import _common\n",  # a script the `bench` folder dep holds, importing its sibling
        "bench/_common.py": "from audiolab.nn import block\n",
        "dvc.yaml": DVC,
    }
    for rel, text in files.items():
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(text)
    (tmp_path / "data" / "raw").mkdir(parents=True)
    return tmp_path


def test_check_fails_naming_the_missing_module(fake):
    r = run("--check", root=fake)
    assert r.returncode == 1
    out = r.stdout.splitlines()
    assert "train: deps miss audiolab/nn/block.py" in out  # imported by an imported module (relative import)
    assert "train: deps miss audiolab/core.py" in out  # a function-local import
    assert "train: deps miss audiolab/recipes/fam.py" in out  # `-m audiolab.recipes.fam` in a `!` line
    assert "other: deps miss audiolab/core.py" in out  # importlib.import_module("audiolab.core")
    assert "bench: deps miss audiolab/nn/block.py" in out  # bench/speed.py -> bench/_common.py -> nn.block
    assert "bench: deps miss scripts/run_all.py" in out  # the script the command runs
    assert "audiolab/gone.py" in r.stderr  # a dep that no longer exists
    assert not any("__init__" in line for line in out)  # a package __init__ that only sets __version__


def test_write_fixes_the_deps_and_keeps_everything_else(fake):
    before = (fake / "dvc.yaml").read_text()
    r = run("--write", root=fake)
    assert r.returncode == 0, r.stdout + r.stderr
    assert run("--check", root=fake).returncode == 0
    after = (fake / "dvc.yaml").read_text()
    stages = yaml.safe_load(after)["stages"]
    train = stages["train"]["deps"]
    assert train[0] == "nbs/pipelines/train.ipynb" and train[-1] == "data"  # the order and non-code deps kept
    assert {"audiolab/core.py", "audiolab/nn", "audiolab/recipes"} <= set(train)  # folders: every module imported
    assert stages["other"]["deps"] == ["audiolab/tools/run.py", "audiolab/core.py", "data/raw"]  # gone.py dropped
    assert stages["bench"]["deps"] == ["scripts/run_all.py", "audiolab/nn", "bench"]  # entry, package, the rest
    assert "- audiolab/tools/run.py   # the entry module" in after and "- data/raw              # raw corpus" in after
    kept = [ln for ln in before.splitlines() if "deps" not in ln and "audiolab/" not in ln]
    assert [ln for ln in after.splitlines() if "deps" not in ln and "audiolab/" not in ln] == kept  # only deps changed
    assert run("--write", root=fake).stdout.strip().endswith("deps already complete")  # idempotent


def test_flow_lists_wrap_at_120_columns():
    items = [f"audiolab/models/module_{i}.py" for i in range(12)]
    lines = dvc_deps._flow_lines("    ", items, "# note")
    assert all(len(ln) <= 120 for ln in lines[:-1]) and lines[-1].endswith("]  # note")
    assert yaml.safe_load("\n".join(lines)) == {"deps": items}
