"Separator contracts: input checks, stems keep the caller's shape/rate, SDR and the mixture-as-estimate baseline."

import math

import pytest
import torch

from audiolab.core import InputError
from audiolab.eval.metrics import sdr
from audiolab.models.separation import Separator, SeparatorConfig, SeparatorNet
from audiolab.recipes.separation import evaluate_separator

pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(scope="module")
def sep():
    torch.manual_seed(0)
    return Separator(
        SeparatorNet(
            SeparatorConfig(sample_rate=16000, channels=8, depth=2, nfft=256, t_layers=1, t_heads=2, segment_s=0.5)
        )
    )


@pytest.mark.parametrize(
    "wav,sr,match",
    [
        (torch.zeros(1, 1), 16000, "too short"),
        (torch.zeros(1, 0), 16000, "too short"),
        (torch.full((1, 800), float("nan")), 16000, "non-finite"),
        (torch.zeros(800), 16000, "dims"),
        (torch.zeros(1, 800), 0, "sr"),
    ],
)
def test_separate_rejects_bad_input(sep, wav, sr, match):
    with pytest.raises(InputError, match=match):
        sep.separate(wav, sr)


@pytest.mark.parametrize("C,sr,L", [(1, 16000, 4000), (2, 16000, 3001), (1, 8000, 2000)])
def test_stems_keep_shape_and_rate(sep, C, sr, L):
    out = sep.lead_backing(0.1 * torch.randn(C, L), sr)
    assert set(out) == {"lead", "backing"} and all(v.shape == (C, L) and torch.isfinite(v).all() for v in out.values())


class _Oracle:
    "A separator that knows the stems (scale `g` on the lead): evaluate_separator's metrics must follow."

    def __init__(self, songs, g=1.0):
        self.songs, self.g = songs, g

    def lead_backing(self, mix, sr, shifts=0):
        s = next(s for s in self.songs if torch.equal(s["lead"] + s["backing"], mix))
        return dict(lead=self.g * s["lead"], backing=s["backing"])


def test_evaluate_separator_sdr_and_mixture_baseline():
    g = torch.Generator().manual_seed(0)
    songs = [
        dict(lead=0.1 * torch.randn(1, 4000, generator=g), backing=0.2 * torch.randn(1, 4000, generator=g))
        for _ in range(2)
    ]
    ev = evaluate_separator(_Oracle(songs, g=0.9), songs, 16000)
    assert ev["sdr_lead"] == pytest.approx(20.0, abs=0.01) and ev["sdr_backing"] > 60  # 10 log10(1 / 0.1**2) = 20 dB
    # the mixture as the lead estimate: SDR = 10 log10(|lead|^2 / |backing|^2), about 20 log10(0.1 / 0.2)
    assert ev["mix_sdr_lead"] == pytest.approx(20 * math.log10(0.5), abs=0.5) and ev["n_songs"] == 2
    assert sdr(songs[0]["lead"], songs[0]["lead"]).item() > 60
