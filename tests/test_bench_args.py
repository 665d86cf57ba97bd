"The bench stage's settings only pass flags their scripts accept (`eval.bench.supported` would drop the others)."

import functools
from pathlib import Path

import pytest

from audiolab.eval.bench import REFERENCE_ARGS, SMALL, script_flags

BENCH = Path(__file__).resolve().parents[1] / "bench"
flags_of = functools.cache(lambda name: script_flags(BENCH / f"{name}.py"))  # one `--help` per script


@pytest.mark.parametrize("name,args", [*REFERENCE_ARGS.items(), *SMALL.items()])
def test_every_stage_flag_is_a_script_flag(name, args):
    flags = flags_of(name)
    assert flags, f"{name}.py --help failed"
    assert {a for a in args if a.startswith("--")} <= flags, sorted({a for a in args if a.startswith("--")} - flags)
