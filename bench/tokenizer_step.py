"""Training-step cost of the shared tokenizer's loss recipes, at the tiny profile's size (or `--profile full`).

Three recipes on one random batch of the profile's crops (batch_size x segment_s), VQ bypassed, random weights:
- `weighted`: the losses summed with their weights (l1 + mel), one backward;
- `balanced`: EnCodec's `LossBalancer` over the same losses (one extra gradient per loss at the decoder's output);
- `balanced_gan`: EnCodec's full recipe, the discriminator phase then the generator phase (l1, mel, adv, fm balanced),
  with the profile's MS-STFT discriminator.
Reports the median seconds per optimizer step of each and its ratio to `weighted`, with the in-process matmul
yardstick (`eval.bench.machine`). Writes results/bench/tokenizer_step.json (or `--out`).

    python bench/tokenizer_step.py [--profile tiny] [--steps 6] [--threads 2]
"""

import argparse
import statistics
import time
import warnings
from pathlib import Path

import torch

from audiolab.core import save_json
from audiolab.eval.bench import machine
from audiolab.models.tokenizer import AudioTokenizer
from audiolab.nn.disc import MultiResolutionSTFTDiscriminator
from audiolab.nn.losses import LossBalancer
from audiolab.recipes.tokenizer import TokenizerRecipe


def step_seconds(r: TokenizerRecipe, recipe: str, steps: int) -> float:
    "Median seconds of one training step (forward + backward of every phase) of `recipe`."
    m = r.model  # EnCodec's weights where the profile leaves a term out
    cfg = m.replace(w_l1=m.w_l1 or 0.1, w_mel=m.w_mel or 1.0, w_stft=0.0, w_adv=m.w_adv or 3.0, w_fm=m.w_fm or 3.0)
    tok = AudioTokenizer(cfg).train()
    tok.vq_bypass = True  # the warm-up's path: the quantizer costs the same in every recipe
    adversarial = recipe == "balanced_gan"
    if adversarial:
        tok.disc = MultiResolutionSTFTDiscriminator(r.disc_n_ffts, filters=r.disc_filters)
    if recipe != "weighted":
        tok.balancer = LossBalancer(tok.loss_weights(adversarial))
    x = 0.1 * torch.randn(r.batch_size, 1, int(r.segment_s * cfg.sample_rate))  # (B, 1, L)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for phase in ("disc", "gen") if adversarial else (None,):
            tok.zero_grad(set_to_none=True)
            tok.training_step(x, phase)["loss"].backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])  # the first step allocates


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--profile", default="tiny")
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default="results/bench/tokenizer_step.json")
    a = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*weight_norm.*")
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    r = TokenizerRecipe.from_params("tokenizer", a.profile, "params.yaml")
    res = dict(
        profile=a.profile,
        batch=r.batch_size,
        segment_s=r.segment_s,
        disc_n_ffts=list(r.disc_n_ffts),
        disc_filters=r.disc_filters,
        threads=a.threads,
        machine=machine(),
    )
    sec = {k: step_seconds(r, k, a.steps) for k in ("weighted", "balanced", "balanced_gan")}
    res["seconds_per_step"] = {k: round(v, 4) for k, v in sec.items()}
    res["ratio_to_weighted"] = {k: round(v / sec["weighted"], 2) for k, v in sec.items()}
    print(res["seconds_per_step"], res["ratio_to_weighted"])
    save_json(Path(a.out), res)


if __name__ == "__main__":
    main()
