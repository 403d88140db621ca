import numpy as np
import pytest

from thinkctl.embedded.traces import TraceStyle, thought_for
from thinkctl.process.checker import ExactStepChecker, arithmetic_claims_hold
from thinkctl.tasks import TASKS
from thinkctl.tasks.base import Problem


def _slip_lines(thought):
    lines = thought.text.split("\n")
    starts = np.cumsum([0] + [len(line) + 1 for line in lines[:-1]])
    return lines, {int(np.searchsorted(starts, s, side="right") - 1) for s, _ in thought.slips}


@pytest.mark.parametrize("family,levels", [("arith", range(1, 7)), ("modeq", range(1, 8))])
def test_flags_exactly_the_slipped_lines_of_synthetic_thoughts(family, levels):
    """The embedded model's training thoughts mark where a slip was made: the checker must flag those lines and no
    other (checks that catch the slip, repairs and the recomputed chain are right steps)."""
    task = TASKS.get(family)()
    n_slips = 0
    for level in levels:
        for i, p in enumerate(task.sample(40, seed=100 + level, level=level)):
            th = thought_for(family, p, np.random.default_rng(i), TraceStyle(p_slip=0.5, p_check=0.7))
            lines, slipped = _slip_lines(th)
            flagged = set(np.flatnonzero(ExactStepChecker(family).score(p, lines) == 0).tolist())
            assert flagged == slipped, (p.prompt, th.text)
            n_slips += len(slipped)
    assert n_slips > 50  # the property was exercised on many slips


ARITH = Problem(id="arith-2-0", prompt="Evaluate from left to right: 12 + 30 - 5", answer="37", level=2)
MODEQ = Problem(id="modeq-1-0", prompt="Solve 3x + 1 = 2 (mod 5) for x in 0..4.", answer="2", level=1)


@pytest.mark.parametrize("steps,want", [
    (["12+30=42", "42-5=37"], [1, 1]),
    (["12+30=43", "43-5=38"], [0, 1]),                 # a slip, then a right step on the claimed value
    (["12+30=42", "40-5=35"], [1, 0]),                 # right arithmetic on the wrong number
    (["12-30=-18"], [0]),                              # the wrong operation
    (["12+30=43", "Wait, let me check.", "30+12=42 ok"], [0, 1, 0]),    # a verdict that misses the slip
    (["12+30=43", "Wait, let me check.", "30+12=42 no", "so 12+30=42", "42-5=37"], [0, 1, 1, 1, 1]),
    (["12+30=42", "42-5=37", "Wait, let me check.", "30+12=42 ok", "37+5=42 ok"], [1, 1, 1, 1, 1]),
    (["12+30=42", "42-5=37", "Wait, let me check.", "30+12=42 ok", "37+5=41 ok"], [1, 1, 1, 1, 0]),
])
def test_arith_steps(steps, want):
    assert ExactStepChecker("arith").score(ARITH, steps).tolist() == want


@pytest.mark.parametrize("steps,want", [
    (["x=0: 3*0+1=1=1", "x=1: 3*1+1=4=4", "x=2: 3*2+1=7=2 found"], [1, 1, 1]),
    (["x=0: 3*0+1=1=1", "x=1: 3*1+1=4=2 found"], [1, 0]),          # a false find
    (["x=0: 3*0+1=1=1", "x=2: 3*2+1=7=2 found"], [1, 0]),          # x=1 skipped
    (["x=0: 3*0+1=1=1", "x=1: 3*1+1=4=4", "x=2: 3*2+1=7=2"], [1, 1, 0]),   # the solution missed
    (["x=0: 4*0+1=1=1"], [0]),                                     # the wrong equation
    (["x=2: 3*2+1=7=2 found", "Wait, let me check.", "2*3=6, 6+1=7, 7-5=2 ok", "only x=2"], [0, 1, 1, 1]),
    (["Wait, let me check.", "2*3=6, 6+1=7, 7-5=2 no"], [1, 0]),   # the wrong verdict
    (["only x=3"], [0]),
])
def test_modeq_steps(steps, want):
    assert ExactStepChecker("modeq").score(MODEQ, steps).tolist() == want


def test_family_from_the_problem_and_prose():
    mix = Problem(id="mix-arith-2-0-3", prompt=ARITH.prompt, answer="37", level=2, features={"family": "arith"})
    assert ExactStepChecker().score(mix, ["12+30=42", "40-5=35"]).tolist() == [1, 0]
    bare = Problem(id="q", prompt=MODEQ.prompt, answer="")
    assert ExactStepChecker().score(bare, ["x=0: 3*0+1=1=1", "x=1: 3*1+1=4=4 found"]).tolist() == [1, 0]
    bare = Problem(id="q", prompt=ARITH.prompt, answer="")
    assert ExactStepChecker().score(bare, ["12+30=42", "40-5=35"]).tolist() == [1, 0]
    from thinkctl.embedded.gym import INSTRUCT_SUFFIX

    instruct = Problem(id="arith-2-0", prompt=ARITH.prompt + INSTRUCT_SUFFIX, answer="37", level=2)
    assert ExactStepChecker().score(instruct, ["12 + 30 = 42.", "12+30=42", "42-5=37"]).tolist() == [1, 1, 1]
    other = Problem(id="gsm8k-1", prompt="Tom has 3 apples and buys 4 more.", answer="7")
    assert ExactStepChecker().score(other, ["He has 3 + 4 = 7 apples.", "So 7 * 2 = 15."]).tolist() == [1, 0]
    with pytest.raises(ValueError, match="arith"):
        ExactStepChecker("gsm8k")


def test_arithmetic_claims():
    assert arithmetic_claims_hold("no numbers here")
    assert arithmetic_claims_hold("2*3+4 = 10 = 5*2")
    assert not arithmetic_claims_hold("2+3*4=20")                  # precedence: 14
    assert arithmetic_claims_hold("-5*3+20=5")
    assert arithmetic_claims_hold("x=3: at x=3 nothing is claimed")
