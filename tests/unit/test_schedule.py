"""The learning-rate schedule of Eq. 4 and the set of posterior epochs."""

import math

import pytest
import torch

from scripts.schedule import CyclicPosteriorLR, cycle_of, cyclic_posterior_lr, posterior_epochs

PAPER = {"total_epochs": 1200, "num_cycles": 3, "base_lr": 0.01, "restart_lr": 0.1, "exponent": 0.9, "gamma": 0.8}


def eq4(t: int, T: int, M: int, a0: float, ar: float, eps: float, gamma: float, horizon: float) -> float:
    Tc = T // M
    tc = t % Tc
    return ar if tc == 0 else a0 * (1 - min(tc, gamma * Tc) / horizon) ** eps


@pytest.mark.parametrize(
    "epoch, expected",
    [
        (0, 0.1),  # restart
        (1, 0.01 * (1 - 1 / 1200) ** 0.9),
        (319, 0.01 * (1 - 319 / 1200) ** 0.9),
        (320, 0.01 * (1 - 320 / 1200) ** 0.9),  # gamma * Tc: the rate is held from here on
        (321, 0.01 * (1 - 320 / 1200) ** 0.9),
        (399, 0.01 * (1 - 320 / 1200) ** 0.9),  # last epoch of cycle 1
        (400, 0.1),  # restart of cycle 2
        (401, 0.01 * (1 - 1 / 1200) ** 0.9),
        (800, 0.1),
        (1199, 0.01 * (1 - 320 / 1200) ** 0.9),  # last epoch
    ],
)
def test_paper_values_as_printed(epoch, expected):
    assert cyclic_posterior_lr(epoch, **PAPER) == pytest.approx(expected, rel=1e-12)


def test_held_rate_matches_the_design_notes():
    # As printed (denominator T) the rate is held at about 0.0076; with Tc it falls to about 0.0024.
    assert cyclic_posterior_lr(399, **PAPER) == pytest.approx(0.0076, abs=1e-4)
    assert cyclic_posterior_lr(399, **PAPER, denominator="Tc") == pytest.approx(0.0024, abs=1e-4)


@pytest.mark.parametrize("T, M, gamma, denominator", [(12, 3, 0.5, "T"), (30, 2, 0.8, "Tc"), (7, 1, 0.6, "T")])
def test_every_epoch_against_eq4(T, M, gamma, denominator):
    horizon = T if denominator == "T" else T // M
    for t in range(T):
        expected = eq4(t, T, M, 0.01, 0.1, 0.9, gamma, horizon)
        assert cyclic_posterior_lr(t, T, M, gamma=gamma, denominator=denominator) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    "T, M, gamma, expected",
    [
        (1200, 3, 0.8, [list(range(320, 400)), list(range(720, 800)), list(range(1120, 1200))]),
        (12, 3, 0.5, [[2, 3], [6, 7], [10, 11]]),
        (10, 2, 0.7, [[4], [9]]),  # gamma * Tc = 3.5: the first integer epoch at or after it is 4
        (6, 1, 0.0, [[0, 1, 2, 3, 4, 5]]),
        (20, 4, 0.8, [[4], [9], [14], [19]]),
    ],
)
def test_posterior_epochs(T, M, gamma, expected):
    assert posterior_epochs(T, M, gamma) == expected


def test_posterior_epochs_are_where_the_rate_is_constant():
    T, M, gamma = 60, 3, 0.8
    for cycle in posterior_epochs(T, M, gamma):
        rates = {cyclic_posterior_lr(t, T, M, gamma=gamma) for t in cycle}
        assert len(rates) == 1
        assert cyclic_posterior_lr(cycle[0] - 1, T, M, gamma=gamma) > rates.pop()  # still decaying just before


def test_cycle_of():
    assert [cycle_of(t, 12, 3) for t in (0, 3, 4, 7, 8, 11)] == [0, 0, 1, 1, 2, 2]


def test_scheduler_steps_once_per_epoch():
    T, M = 12, 3
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5, momentum=0.99, nesterov=True)
    scheduler = CyclicPosteriorLR(optimizer, total_epochs=T, num_cycles=M, gamma=0.5)
    seen = []
    for _ in range(T):
        seen.append(optimizer.param_groups[0]["lr"])  # the rate the epoch trains with
        optimizer.step()
        scheduler.step()
    assert seen == pytest.approx([cyclic_posterior_lr(t, T, M, gamma=0.5) for t in range(T)])


def test_scheduler_state_round_trip():
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=0.5)
    scheduler = CyclicPosteriorLR(optimizer, total_epochs=12, num_cycles=3, gamma=0.5)
    for _ in range(5):
        optimizer.step()
        scheduler.step()
    restored_opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.5)
    restored = CyclicPosteriorLR(restored_opt, total_epochs=12, num_cycles=3, gamma=0.5)
    restored.load_state_dict(scheduler.state_dict())
    restored_opt.step()
    restored.step()
    assert restored_opt.param_groups[0]["lr"] == pytest.approx(cyclic_posterior_lr(6, 12, 3, gamma=0.5))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_epochs": 10, "num_cycles": 3}, "multiple"),
        ({"total_epochs": 0, "num_cycles": 1}, ">= 1"),
        ({"total_epochs": 9, "num_cycles": 3, "denominator": "cycle"}, "denominator"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        cyclic_posterior_lr(1, **kwargs)


def test_restart_is_finite_and_positive():
    assert all(
        math.isfinite(cyclic_posterior_lr(t, **PAPER)) and cyclic_posterior_lr(t, **PAPER) > 0 for t in range(1200)
    )
