"""Held-out mel L1 of a vocoder against its training budget, and the budget at which it crosses Griffin-Lim.

    python bench/vocoder_budget.py [--section vocoder_speech|vocoder_kick ...] [--profile tiny]
                                   [--mode anneal checkpoints] [--steps 250,500,1000,2000,4000]
                                   [--set KEY=VALUE ...] [--minutes M] [--data-dir SECTION=DIR ...] [--threads 1]
                                   [--tag T] [--out results/bench/vocoder_budget.json] [--refit]

Each section of `params.yaml` (default: both vocoders) is trained with `recipes.vocoder.train_vocoder` (the stage's
recipe at `--profile`; `--set` overrides its keys: `model.dim=64`, `train.lr=0.01`, `kind=vocos`, ...) and the
generator's held-out copy-synthesis is scored with `recipes.vocoder.evaluate_vocoder` (mel L1 of the vocoded vs the
file, and Griffin-Lim with `griffin_lim_iters` iterations on the same mel) at each budget of `--steps`, two ways:
- `checkpoints`: ONE run of the largest budget at a constant learning rate after the warm-up, scored at each budget.
  Cheap (the largest budget's steps), but a point is the model after s steps at that rate, not a run annealed to s.
- `anneal`: one run per budget with the profile's schedule (the tiny profile's cosine decay to `max_steps = s`), scored
  at its end: what a stage with `max_steps = s` gives. It costs the sum of the budgets, about twice the largest.

The fit, per mode (`recipes.vocoder.budget_curve`): L(s) = a * s^-b + c by least squares, and the s where it equals
Griffin-Lim's mel L1; none when the curve does not fall (b <= 0) or its floor c is not below Griffin-Lim: the fit then
says that this recipe never crosses. A log-linear fit of the last three points (L = p + q ln s) gives a
shorter-sighted second estimate. `--out` gets, per section, every point (with its training seconds), both fits,
`machine()` and the process's matmul yardstick (`eval.bench.yardsticks`) before and after; sections and modes already
in `--out` from earlier runs are kept unless rerun.
"""

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from audiolab.audio import get_preset, load_audio
from audiolab.core import load_section, save_json, seed_everything
from audiolab.eval.bench import machine, yardsticks
from audiolab.recipes.vocoder import VocoderRecipe, budget_curve, evaluate_vocoder, train_vocoder, vocoder_data
from audiolab.train.learner import Callback


class BudgetEval(Callback):
    "At each step of `budgets`: held-out mel L1 of the generator vs Griffin-Lim, and the training seconds so far."

    order = 50

    def __init__(self, budgets: list[int], valid: list[torch.Tensor], gl_iters: int, minutes: float | None):
        self.budgets, self.valid, self.gl_iters, self.minutes = set(budgets), valid, gl_iters, minutes
        self.points, self.train_s, self.t0 = [], 0.0, None

    def before_fit(self, learn):
        self.t0 = time.perf_counter()

    def after_batch(self, learn):
        if learn.step not in self.budgets:
            return
        self.train_s += time.perf_counter() - self.t0
        task = copy.deepcopy(learn.eval_model).cpu().eval()  # scored on the CPU wherever it trains
        res, _, _ = evaluate_vocoder(task, self.valid, self.gl_iters)
        p = dict(steps=learn.step, mel_l1=res["mel_l1"], griffinlim_mel_l1=res["griffinlim_mel_l1"])
        self.points.append(
            {
                **p,
                "train_s": round(self.train_s, 1),
                "loss": float(learn.logs.get("loss", learn.logs.get("gen/loss", math.nan))),
            }
        )
        print(json.dumps(self.points[-1]), flush=True)
        if self.minutes and self.train_s > 60 * self.minutes:
            learn.request_stop(f"time budget {self.minutes} min")
        self.t0 = time.perf_counter()


def analyse(points: list[dict], full_max_steps: int) -> dict:
    "Griffin-Lim's mean mel L1, the first budget below it, and `budget_curve`'s fits (>= 3 points)."
    gl = float(np.mean([p["griffinlim_mel_l1"] for p in points]))
    out = dict(griffinlim_mel_l1=gl, beats_griffinlim_at=next((p["steps"] for p in points if p["mel_l1"] < gl), None))
    if len(points) >= 3:
        out |= budget_curve([p["steps"] for p in points], [p["mel_l1"] for p in points], gl)
        x = out["power_law"]["crossing_steps"]
        out["power_law"]["full_budget_enough"] = None if x is None else x <= full_max_steps
    return out


def override(cfg: dict, sets: list[str]) -> dict:
    "Apply KEY=VALUE (dotted keys into nested dicts, YAML values) to a section dict."
    cfg = json.loads(json.dumps(cfg))
    for kv in sets:
        key, val = kv.split("=", 1)
        *path, last = key.split(".")
        d = cfg
        for k in path:
            d = d.setdefault(k, {})
        d[last] = yaml.safe_load(val)
    return cfg


def run_budgets(r: VocoderRecipe, budgets: list[int], valid: list, minutes: float | None) -> tuple[list, int]:
    "Train `r` for the largest budget, scoring at each budget: (points, generator parameters)."
    seed_everything(r.seed)
    train, _ = vocoder_data(r)
    gen = r.generator()
    cb = BudgetEval(budgets, valid, r.griffin_lim_iters, minutes)
    train_vocoder(r.replace(train=r.train.replace(max_steps=budgets[-1])), gen, train, cbs=[cb])
    return cb.points, sum(q.numel() for q in gen.parameters())


def bench_section(args, section: str) -> dict:
    cfg = load_section(section, args.profile, args.params)
    full_max = load_section(section, "full", args.params)["train"]["max_steps"]
    if section in args.data_dir:
        cfg["data_dir"] = args.data_dir[section]
    budgets = sorted(int(x) for x in args.steps.split(","))
    r = VocoderRecipe.from_dict(override(cfg, ["num_workers=0", *args.set]), f"{args.params}:{section}")
    torch.set_num_threads(args.threads)
    _, valid_files = vocoder_data(r, section)
    valid = [load_audio(f, sr=get_preset(r.preset).sr, mono=True)[0][None] for f in valid_files]  # (1, 1, T) each
    out = dict(overrides=args.set, recipe=r.to_dict(), valid_files=len(valid), full_max_steps=full_max)
    t0 = time.perf_counter()
    for mode in args.mode:
        if mode == "checkpoints":
            const = r.replace(train=r.train.replace(schedule="constant"))
            points, out["params"] = run_budgets(const, budgets, valid, args.minutes)
        else:  # one annealed run per budget
            points, spent = [], 0.0
            for s in budgets:
                if args.minutes and spent > 60 * args.minutes:
                    break
                p, out["params"] = run_budgets(r, [s], valid, None)
                points += p
                spent += p[-1]["train_s"]
        out[mode] = dict(points=points, **analyse(points, full_max))
    out["wall_s"] = round(time.perf_counter() - t0, 1)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--section", nargs="+", default=["vocoder_speech", "vocoder_kick"])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--mode", nargs="+", choices=["anneal", "checkpoints"], default=["anneal", "checkpoints"])
    ap.add_argument("--steps", default="250,500,1000,2000,4000", help="budgets (steps) to evaluate at")
    ap.add_argument("--set", nargs="*", default=[], help="KEY=VALUE overrides of the section (dotted, YAML values)")
    ap.add_argument("--data-dir", nargs="*", default=[], help="SECTION=DIR: another data_dir (e.g. a prep elsewhere)")
    ap.add_argument("--minutes", type=float, default=None, help="per mode: no budget begun after this many minutes")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--tag", default="", help="store the sections as SECTION@TAG (variants side by side in --out)")
    ap.add_argument("--out", default="results/bench/vocoder_budget.json")
    ap.add_argument("--refit", action="store_true", help="only refit the points already in --out (no training)")
    args = ap.parse_args()
    args.data_dir = dict(kv.split("=", 1) for kv in args.data_dir)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    if args.refit:
        res = json.loads(out.read_text())
        for sec in res["sections"].values():
            for m in args.mode:
                if m in sec:
                    sec[m] = dict(points=sec[m]["points"], **analyse(sec[m]["points"], sec["full_max_steps"]))
    else:
        new = {}
        for s in args.section:
            env = dict(machine=machine(), yardstick=yardsticks(), omp_num_threads=os.environ.get("OMP_NUM_THREADS"))
            new[f"{s}@{args.tag}" if args.tag else s] = (
                env | bench_section(args, s) | dict(yardstick_after=yardsticks())
            )
        res = json.loads(out.read_text()) if out.exists() else dict(sections={})  # other runs may have written
        for k, v in new.items():
            res["sections"][k] = res["sections"].get(k, {}) | v
    out.parent.mkdir(parents=True, exist_ok=True)
    save_json(out, res)
    for s in [f"{s}@{args.tag}" if args.tag else s for s in args.section]:
        for m in [m for m in args.mode if m in res["sections"].get(s, {})]:
            v = res["sections"][s][m]
            print(s, m, json.dumps({k: v.get(k) for k in ("griffinlim_mel_l1", "power_law", "log_linear_last3")}))


if __name__ == "__main__":
    main()
