"""Any seed numpy accepts works: derived seeds are folded into the range torch accepts, and small ones are unchanged."""

import pytest

from thinkctl.cli import main
from thinkctl.controller.seeding import batch_index, sample_seed, wave_index
from thinkctl.seeds import SEED_SPACE, torch_seed
from thinkctl.traces import TraceStore


def test_small_seeds_are_unchanged_and_large_ones_fit():
    assert sample_seed(0, batch_index(wave_index(0, 0), 0)) == 7919
    assert sample_seed(7, 3) == 7 * 1_000_003 + 3
    huge = sample_seed(10 ** 30, 5)
    assert 0 <= huge < SEED_SPACE and huge == (10 ** 30 * 1_000_003 + 5) % SEED_SPACE
    assert torch_seed(SEED_SPACE - 1) == SEED_SPACE - 1 and torch_seed(SEED_SPACE) == 0


@pytest.mark.parametrize("seed", [500_000_000, 2 ** 62])
def test_collect_with_a_large_seed(tmp_path, seed):
    out = tmp_path / "store"
    assert main(["collect", "--task", "arith", "--level", "1", "--seed", str(seed), "--n", "2", "--samples", "2",
                 "--every", "16", "--out", str(out), "--no-progress"]) == 0
    assert len(TraceStore(out).samples()) == 4
