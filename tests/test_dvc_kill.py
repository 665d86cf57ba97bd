"""`dvc repro` killed mid-stage (issue #11): in a throw-away git + DVC project whose one stage writes its output
with `audiolab.core.atomic_write` and sleeps half-way, `dvc repro` is killed (SIGKILL of the whole process group,
as when a job is killed, or SIGINT, as Ctrl-C) while the stage runs. Then no half-written output may exist or be
taken as done (`dvc status` reports the stage changed), and the next `dvc repro` finishes with a complete output
that `dvc status` accepts."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

DVC = shutil.which("dvc", path=str(Path(sys.executable).parent)) or shutil.which("dvc")
pytestmark = pytest.mark.skipif(DVC is None, reason="dvc is not installed")
ENV = {
    **os.environ,
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    "DVC_NO_ANALYTICS": "1",
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@t",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@t",
}
N_LINES = 400

WRITER = '''"""The stage: `result.txt` = N lines tagged with the version in input.txt, then END; sleeps half-way."""
import os, sys, time
from audiolab.core import atomic_write
n, version = int(sys.argv[1]), open("input.txt").read().strip()
with atomic_write("result.txt", "w") as f:
    for i in range(n):
        f.write(f"{version} {i}\\n")
        if i == n // 2:
            f.flush()
            open("half.tmp", "w").write(str(os.getpid()))
            os.replace("half.tmp", "halfway")
            time.sleep(float(os.environ.get("SLOW_S", "0")))
    f.write("END\\n")
'''
DVC_YAML = f"""stages:
  slow:
    cmd: python writer.py {N_LINES}
    deps: [writer.py, input.txt]
    outs: [result.txt]
"""


def run(proj: Path, *args: str, slow: float = 0.0, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        args, cwd=proj, env={**ENV, "SLOW_S": str(slow)}, capture_output=True, text=True, timeout=timeout
    )


def complete(version: str) -> str:
    return "".join(f"{version} {i}\n" for i in range(N_LINES)) + "END\n"


def status(proj: Path) -> str:
    r = run(proj, DVC, "status", "slow")
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture
def proj(tmp_path):
    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"]):
        r = run(tmp_path, *cmd)
        assert r.returncode == 0, r.stderr
    (tmp_path / "writer.py").write_text(WRITER)
    (tmp_path / "dvc.yaml").write_text(DVC_YAML)
    (tmp_path / "input.txt").write_text("v1\n")
    return tmp_path


def kill_mid_stage(proj: Path, sig: int) -> None:
    "Start `dvc repro` in its own process group, wait until the stage is half-way, send `sig` to the group."
    (proj / "halfway").unlink(missing_ok=True)
    # SIGINT back to its default in the child: a test run started in the background of a non-interactive shell
    # inherits SIGINT ignored, and dvc and the stage would inherit that too
    p = subprocess.Popen(
        [DVC, "repro", "slow"],
        cwd=proj,
        env={**ENV, "SLOW_S": "120"},
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        while not (proj / "halfway").exists():
            assert p.poll() is None, "dvc repro ended before the stage got half-way"
            assert time.monotonic() - t0 < 90, "the stage never got half-way"
            time.sleep(0.1)
        stage_pid = int((proj / "halfway").read_text())
        os.killpg(p.pid, sig)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            os.killpg(p.pid, signal.SIGKILL)
            p.wait()
    assert gone(stage_pid), "the stage process outlived the killed dvc repro"


def gone(pid: int, wait_s: float = 15) -> bool:
    "Whether process `pid` has ended (waiting up to `wait_s`); a survivor is killed so it cannot write later."
    t0 = time.monotonic()
    while time.monotonic() - t0 < wait_s:
        try:
            os.kill(pid, 0)
            if Path(f"/proc/{pid}/stat").exists() and Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z":
                return True
        except ProcessLookupError:
            return True
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    return False


def repro_finishes(proj: Path, version: str, check_status: bool = True) -> None:
    r = run(proj, DVC, "repro", "slow")
    assert r.returncode == 0, r.stdout + r.stderr
    assert (proj / "result.txt").read_text() == complete(version)
    if check_status:
        assert "up to date" in status(proj)


# Each case costs 45-100 s on the shared 2-core machine (a dvc command takes ~6 s there): CI runs one case per
# scenario; AUDIOLAB_LONG=1 runs both signals for both scenarios.
LONG = pytest.mark.skipif(not os.environ.get("AUDIOLAB_LONG"), reason="long dvc kill variant: set AUDIOLAB_LONG=1")


@pytest.mark.parametrize("sig", [pytest.param(signal.SIGKILL, marks=LONG), signal.SIGINT], ids=["SIGKILL", "SIGINT"])
def test_killed_first_run(proj, sig):
    "No previous output: after the kill there is no result.txt, the stage is not recorded as done, a rerun completes."
    kill_mid_stage(proj, sig)
    assert not (proj / "result.txt").exists(), "a half-written output was left where the stage's output lives"
    lock = proj / "dvc.lock"
    assert not lock.exists() or "result.txt" not in lock.read_text(), "the killed stage was recorded in dvc.lock"
    assert "up to date" not in status(proj)
    if sig == signal.SIGINT:
        assert not list(proj.glob(".result.txt.*")), "SIGINT: atomic_write left its temp file"
    repro_finishes(proj, "v1")


@pytest.mark.parametrize("sig", [signal.SIGKILL, pytest.param(signal.SIGINT, marks=LONG)], ids=["SIGKILL", "SIGINT"])
def test_killed_rerun_after_change(proj, sig):
    """A complete v1 exists; the v2 run is killed: result.txt is absent or the complete v1, never part of v2;
    dvc status reports the stage changed; the next repro completes v2."""
    repro_finishes(proj, "v1", check_status=False)
    (proj / "input.txt").write_text("v2\n")
    kill_mid_stage(proj, sig)
    out = proj / "result.txt"
    assert not out.exists() or out.read_text() == complete("v1"), "a half-written v2 output is in place"
    assert "changed" in status(proj)
    repro_finishes(proj, "v2")


# ---- a real stage: `codec` under torchrun, SIGTERM mid-run, the rerun resumes from its checkpoint -----------------
CODEC_STEPS, CODEC_EVERY = 120, 10
CODEC_DVC_YAML = """stages:
  codec:
    cmd: python -m torch.distributed.run --standalone --nproc_per_node=1 -m audiolab.train.distributed
      audiolab.recipes.codec:codec_stage --params params.yaml --section codec --profile tiny
    deps: [data/music]
    params: [codec]
    outs: [runs/codec/model]
"""


@pytest.fixture
def codec_proj(tmp_path):
    "A git + DVC project whose one stage is the `codec` training job (tiny profile, short), on 6 synthetic pieces."
    import soundfile as sf
    import torch
    import yaml

    from audiolab.core import load_section

    for cmd in (["git", "init", "-q"], [DVC, "init", "-q"], ["git", "commit", "-q", "-m", "init"]):  # dvclive: a commit
        r = run(tmp_path, *cmd)
        assert r.returncode == 0, r.stderr
    g = torch.Generator().manual_seed(0)
    (tmp_path / "data/music").mkdir(parents=True)
    for i in range(6):  # 1 s of stereo noise-modulated tones at 22.05 kHz
        t = torch.arange(22050) / 22050
        x = torch.sin(2 * torch.pi * (110 + 40 * i) * t) * (0.5 + 0.5 * torch.rand(1, generator=g))
        sf.write(tmp_path / f"data/music/p{i}.flac", torch.stack([x, -0.5 * x], 1).numpy(), 22050)
    sec = load_section("codec", "tiny", Path(__file__).parents[1] / "params.yaml")
    sec.update(max_files=6, save_every=CODEC_EVERY, segment=2048, valid_segments=2)
    sec["train"] = {**sec["train"], "max_steps": CODEC_STEPS}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"codec": {"tiny": sec}}))
    (tmp_path / "dvc.yaml").write_text(CODEC_DVC_YAML)
    return tmp_path


def group_alive(pgid: int) -> bool:
    "Whether process group `pgid` still has a live (non-zombie) member."
    for f in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, _, group = f.read_text().rsplit(") ", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue  # ended while we looked
        if int(group) == pgid and state != "Z":
            return True
    return False


def test_codec_stage_sigterm_resumes(codec_proj):
    "SIGTERM to `dvc repro` mid-training; the rerun resumes from the stage's checkpoint and completes the stage."
    ckpt = codec_proj / "runs/codec/ckpt"
    p = subprocess.Popen(
        [DVC, "repro", "codec"],
        cwd=codec_proj,
        env={**ENV, "OMP_NUM_THREADS": "1"},
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        t0 = time.monotonic()
        while not list(ckpt.glob("step-*")):  # the first periodic checkpoint is written
            assert p.poll() is None, "dvc repro ended before the first checkpoint"
            assert time.monotonic() - t0 < 180, "no checkpoint after 180 s"
            time.sleep(0.2)
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=60)
        t0 = time.monotonic()
        while group_alive(p.pid):  # torchrun and the training process finish the step in flight and save it
            assert time.monotonic() - t0 < 60, "the stage's processes outlived the SIGTERM by 60 s"
            time.sleep(0.2)
    finally:
        if group_alive(p.pid):
            os.killpg(p.pid, signal.SIGKILL)
        p.wait()
    stopped = json.loads((ckpt / "last.json").read_text())["step"]
    assert stopped < CODEC_STEPS, f"the run was not interrupted mid-way: last checkpoint at step {stopped}"
    assert not (codec_proj / "runs/codec/model/model.safetensors").exists()
    assert "up to date" not in run(codec_proj, DVC, "status", "codec").stdout
    r = run(codec_proj, DVC, "repro", "codec", timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    log = r.stdout + r.stderr
    assert f"resumed from runs/codec/ckpt/step-{stopped:08d} (step {stopped})" in log, log[-3000:]
    assert "starting fresh" not in log, log[-3000:]
    assert (codec_proj / "runs/codec/model/model.safetensors").exists()
    assert json.loads((ckpt / "last.json").read_text())["step"] == CODEC_STEPS
    assert "up to date" in run(codec_proj, DVC, "status", "codec").stdout
