"""LosiaSchedule against the formulas of the algorithm contract, for several (G, T, warmup)."""

from __future__ import annotations

import pytest

from losia_factory.core import LosiaSchedule
from tests.core.reference import hand_rewarm

CASES = [(1, 1, 0), (1, 4, 3), (3, 2, 0), (4, 5, 7), (5, 3, 20), (2, 10, 4)]


@pytest.mark.parametrize("groups,slot,warmup", CASES)
def test_async_against_formulas(groups, slot, warmup):
    sched = LosiaSchedule(groups, slot, warmup)
    for s in range(4 * groups * slot + 3):
        owner = (s // slot) % groups
        assert sched.scoring_group(s) == owner
        assert sched.scoring_groups(s) == (owner,)
        for g in range(groups):
            assert sched.is_scoring(s, g) == (g == owner)
            assert sched.reselects_after(s, g) == (g == owner and (s + 1) % slot == 0)
            assert sched.rewarm_factor(s, g) == pytest.approx(hand_rewarm(s, g, groups, slot, warmup))


@pytest.mark.parametrize("groups,slot,warmup", CASES)
def test_rewarm_follows_reselections(groups, slot, warmup):
    """Rewarm from the definition: r = steps since the latest reselection of the group."""
    sched = LosiaSchedule(groups, slot, warmup)
    last = {g: None for g in range(groups)}
    for s in range(4 * groups * slot):
        for g in range(groups):
            r = None if last[g] is None else s - last[g] - 1
            expected = r / slot if (r is not None and r < slot and s >= warmup) else 1.0
            assert sched.rewarm_factor(s, g) == pytest.approx(expected), (s, g)
        for g in range(groups):
            if sched.reselects_after(s, g):
                last[g] = s


def test_first_rewarm_step_has_zero_lr():
    sched = LosiaSchedule(num_groups=3, time_slot=4, warmup_steps=0)
    assert sched.reselects_after(3, 0)
    assert [sched.rewarm_factor(s, 0) for s in range(3, 9)] == [1.0, 0.0, 0.25, 0.5, 0.75, 1.0]
    assert sched.rewarm_factor(4, 1) == 1.0


@pytest.mark.parametrize("mode", ["async", "sync", "once"])
def test_without_rewarm_the_factor_is_always_one_and_reselection_is_unchanged(mode):
    with_rewarm, without = LosiaSchedule(3, 4, 2, mode), LosiaSchedule(3, 4, 2, mode, rewarm=False)
    steps = range(5 * 3 * 4)
    assert any(with_rewarm.rewarm_factor(s, g) < 1.0 for s in steps for g in range(3))
    assert all(without.rewarm_factor(s, g) == 1.0 for s in steps for g in range(3))
    assert [without.reselects_after(s, g) for s in steps for g in range(3)] == [
        with_rewarm.reselects_after(s, g) for s in steps for g in range(3)
    ]


def test_no_rewarm_during_warmup():
    sched = LosiaSchedule(2, 4, warmup_steps=10)
    assert sched.reselects_after(3, 0)
    assert all(sched.rewarm_factor(s, 0) == 1.0 for s in range(4, 8))
    assert sched.reselects_after(7, 1)
    assert [sched.rewarm_factor(s, 1) for s in (8, 9, 10, 11)] == [1.0, 1.0, 0.5, 0.75]


def test_sync_once_fixed():
    sync = LosiaSchedule(3, 2, 0, mode="sync")
    assert sync.scoring_groups(0) == (0, 1, 2) and sync.scoring_groups(2) == () and sync.scoring_groups(6) == (0, 1, 2)
    assert all(sync.reselects_after(1, g) for g in range(3)) and not sync.reselects_after(0, 0)
    assert [sync.rewarm_factor(s, 2) for s in (2, 3, 4)] == [0.0, 0.5, 1.0]
    with pytest.raises(ValueError, match="scoring_groups"):
        sync.scoring_group(0)
    once = LosiaSchedule(3, 2, 0, mode="once")
    assert [once.scoring_group(s) for s in range(8)] == [0, 0, 1, 1, 2, 2, None, None]
    assert [s for s in range(40) for g in range(3) if once.reselects_after(s, g)] == [1, 3, 5]
    assert once.rewarm_factor(8, 0) == 1.0
    fixed = LosiaSchedule(3, 2, 0, mode="fixed")
    assert all(fixed.scoring_group(s) is None and fixed.rewarm_factor(s, 1) == 1.0 for s in range(20))


@pytest.mark.parametrize(
    "kwargs,field",
    [
        (dict(num_groups=0, time_slot=1), "num_groups"),
        (dict(num_groups=1, time_slot=0), "time_slot"),
        (dict(num_groups=1, time_slot=1, warmup_steps=-1), "warmup_steps"),
        (dict(num_groups=1, time_slot=1, mode="random"), "mode"),
    ],
)
def test_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=field):
        LosiaSchedule(**kwargs)


def test_bad_step_or_group():
    sched = LosiaSchedule(2, 2)
    with pytest.raises(ValueError, match="step"):
        sched.rewarm_factor(-1, 0)
    with pytest.raises(ValueError, match="group"):
        sched.rewarm_factor(0, 2)
