"""The summary's rows as params.yaml declares them: two baselines each, a real spec each, wired to real_eval's rows."""

import json
from pathlib import Path

import pytest

from audiolab.eval.report import SAME_BASELINE, baseline_rows, family_counts, load_families, real_rows, summary_metrics
from audiolab.recipes.real import ROWS

ROOT = Path(__file__).resolve().parents[1]
FAMILIES = load_families(ROOT / "params.yaml")
SPEC_KEYS = {"metrics", "metric", "baseline", "own_baseline"}


@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_every_row_has_two_baselines_and_a_real_spec(fam):
    spec = FAMILIES[fam]
    assert SPEC_KEYS <= set(spec), fam
    real = spec["real"]
    if isinstance(real, str):  # the reason there is no real data
        assert real.startswith("no real"), real
        return
    assert set(real) == SPEC_KEYS, fam
    assert (real["own_baseline"] == real["baseline"]) == (spec["own_baseline"] == spec["baseline"]), fam
    if real["metrics"] == "runs/real/metrics.json":  # the real_eval stage's `<row>/<key>`
        rows = {real[k].split("/")[0] for k in ("metric", "baseline", "own_baseline")}
        assert len(rows) == 1 and rows <= set(ROWS), (fam, rows)
        # the same keys as the embedded evaluation (the tokenizer's embedded keys carry their `music/` prefix)
        assert real["metric"].split("/")[-1] == spec["metric"].split("/")[-1], fam


def _write(path: Path, key: str, value: float):
    "Set the '/'-nested `key` of the JSON file `path` (made when absent)."
    d = json.loads(path.read_text()) if path.exists() else {}
    path.parent.mkdir(parents=True, exist_ok=True)
    node = d
    *parents, leaf = key.split("/")
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    path.write_text(json.dumps(d))


def test_summary_of_declared_rows(tmp_path):
    """Fake metrics for every declared row: the model beats the training baseline everywhere, and its own baseline
    only where that is the same number, so on the embedded and the real data exactly the rows whose baseline is
    computed from the evaluated signal count (beating one baseline of two is not enough)."""
    fams = {}
    for fam, spec in FAMILIES.items():
        fams[fam] = dict(spec, metrics=str(tmp_path / spec["metrics"]))
        if isinstance(spec["real"], dict):
            fams[fam]["real"] = dict(spec["real"], metrics=str(tmp_path / "real" / spec["real"]["metrics"]))
        for s in [fams[fam]] + ([fams[fam]["real"]] if isinstance(spec["real"], dict) else []):
            up = 1.0 if spec.get("better", "lower") == "higher" else -1.0
            _write(Path(s["metrics"]), s["metric"], 10.0 + up)  # beats the training baseline ...
            _write(Path(s["metrics"]), s["baseline"], 10.0)
            if s["own_baseline"] != s["baseline"]:
                _write(Path(s["metrics"]), s["own_baseline"], 10.0 + 2 * up)  # ... but not an own one apart
    rows, real = baseline_rows(fams), real_rows(fams)
    same = {f for f, s in FAMILIES.items() if s["own_baseline"] == s["baseline"] and s.get("gate", True)}
    with_real = {f for f, s in FAMILIES.items() if isinstance(s["real"], dict) and s.get("gate", True)}
    gated = {f for f, s in FAMILIES.items() if s.get("gate", True)}
    assert {r["family"] for r in rows if r["beats_both"] and r["gate"]} == same
    assert {r["family"] for r in real if r["beats_both"] and r["gate"]} == same & with_real
    n, nr = family_counts(rows), family_counts(real)
    assert (n["families_beating_baseline"], n["families_beating_both"], n["families_gated"]) == (
        len(gated),
        len(same),
        len(gated),
    )
    assert (nr["families_measured"], nr["families_beating_both"]) == (len(with_real), len(same & with_real))
    assert all(r["note"] for r in rows if r["family"] in same)  # says the baseline is its own
    assert {r["note"] for r in rows if FAMILIES[r["family"]].get("note") is None and r["family"] in same} == {
        SAME_BASELINE
    }
    assert all(r["note"].startswith("no real data") for r in real if isinstance(FAMILIES[r["family"]]["real"], str))
    m = summary_metrics(rows, real)
    assert m["families_beating_both"] == len(same) and m["real/families_beating_both"] == len(same & with_real)
