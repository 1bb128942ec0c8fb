"""The simulation's up-front plans (pure): faults and jobs drawn from the seed, options parsed."""

import random

import pytest

from simulations.sim import options as parse
from simulations.sim.faults import plan_faults
from simulations.sim.options import Amount, OptionError, Partition, SimOptions
from simulations.sim.workload import plan_jobs
from simulations.sim.world import SEEDS


def test_fault_plan_spares_the_seeds_and_follows_the_shares():
    options = SimOptions(
        nodes=40,
        seconds=100,
        quiet=10,
        crash=Amount(share=0.25),
        restart=1.0,
        wipe=0.5,
        slow=Amount(count=3),
        partitions=(Partition(60, 20, 0.25),),
    )
    plan = plan_faults(options, random.Random(1))
    assert len(plan.crashes) == 10 and len(plan.slow) == 3
    assert all(c.machine >= SEEDS for c in plan.crashes) and all(i >= SEEDS for i in plan.slow)
    assert all(10 <= c.at_s <= 55 for c in plan.crashes)  # the first half of the fault window
    assert all(c.restart_at_s == pytest.approx(c.at_s + options.restart_after) for c in plan.crashes)
    assert 0 < sum(c.wipe for c in plan.crashes) < 10
    assert len(plan.partitions[0].minority) == 10 and plan.partitions[0].end_s == 80
    assert plan == plan_faults(options, random.Random(1)) != plan_faults(options, random.Random(2))


def test_no_restart_means_crashed_nodes_stay_down():
    plan = plan_faults(SimOptions(nodes=20, seconds=60, crash=Amount(count=4), restart=0.0), random.Random(3))
    assert [c.restart_at_s for c in plan.crashes] == [None] * 4 and not any(c.wipe for c in plan.crashes)


def test_job_plan_stays_inside_its_window_and_uses_the_cpu_choices():
    options = SimOptions(
        nodes=10, seconds=100, quiet=20, jobs=300, job_duration=(2.0, 4.0), job_cpu=(250, 2000)
    )
    plan = plan_jobs(options, random.Random(5))
    assert len(plan) == 300 and [s.at_s for s in plan] == sorted(s.at_s for s in plan)
    assert all(20 <= s.at_s <= 20 + 0.6 * 80 for s in plan)
    assert all(2000 <= s.duration_ms <= 4000 and s.cpu_millicores in (250, 2000) for s in plan)
    assert len({s.nonce for s in plan}) == 300 and 0 < sum(s.exit_code for s in plan) < 30
    ids = {s.spec(b"\x01" * 32).job_id() for s in plan}
    assert len(ids) == 300


@pytest.mark.parametrize(
    "text, expected",
    [
        ("1ms..20ms", (0.001, 0.02)),
        ("5ms", (0.005, 0.005)),
        ("0..1s", (0.0, 1.0)),
    ],
)
def test_latency_forms(text, expected):
    assert parse.latency_range(text) == pytest.approx(expected)


def test_amounts_partitions_and_their_errors():
    assert parse.amount("5%", "--crash").of(1000) == 50 and parse.amount("3", "--crash").of(2) == 2
    assert parse.partition("30s@60s") == Partition(60.0, 30.0, 0.5)
    assert parse.partition("10s@5s/30%") == Partition(5.0, 10.0, 0.3)
    for bad, message in (
        ("0s@5s", "lasts no time"),
        ("10s@5s/0.7", "smaller side"),
        ("10s", "DURATION@START"),
    ):
        with pytest.raises(OptionError, match=message):
            parse.partition(bad)
    with pytest.raises(OptionError, match="neither a percentage"):
        parse.amount("-2", "--crash")
