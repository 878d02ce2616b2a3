"""The chaos harness's fault schedule: a pure function of the seed (devstack/chaos/schedule.py)."""

from __future__ import annotations

import itertools

import pytest

from devstack.chaos.schedule import (
    PROCESS_CATALOGUE,
    PROCESSOR_CATALOGUE,
    Fault,
    ScheduleSpec,
    baseline_settings,
    build_schedule,
    default_fault_counts,
)


def _spec(seed: int, duration: float = 90.0, process: int = 8, processor: int = 4) -> ScheduleSpec:
    return ScheduleSpec(seed=seed, duration=duration, process_faults=process, processor_faults=processor,
                        processor_timeout=2.0)  # fmt: skip


def _lane(schedule: tuple[Fault, ...], lane: str) -> list[Fault]:
    return [fault for fault in schedule if fault.lane == lane]


def test_a_seed_always_gives_the_same_schedule_and_other_seeds_other_ones() -> None:
    assert build_schedule(_spec(7)) == build_schedule(_spec(7))
    schedules = {build_schedule(_spec(seed)) for seed in range(20)}
    assert len(schedules) == 20


def test_the_schedule_has_the_asked_number_of_faults_per_lane_in_start_order() -> None:
    schedule = build_schedule(_spec(3, process=5, processor=3))
    assert len(_lane(schedule, "process")) == 5
    assert len(_lane(schedule, "processor")) == 3
    assert [f.at for f in schedule] == sorted(f.at for f in schedule)


@pytest.mark.parametrize("seed", range(30))
def test_faults_start_inside_the_workload_and_a_lanes_faults_never_overlap(seed: int) -> None:
    duration = 60.0
    schedule = build_schedule(_spec(seed, duration=duration, process=6, processor=3))
    for lane in ("process", "processor"):
        faults = _lane(schedule, lane)
        for fault in faults:
            assert 0.05 * duration <= fault.at < 0.8 * duration
            assert 1.0 <= fault.hold <= 12.0
        for earlier, later in itertools.pairwise(faults):
            assert earlier.at + earlier.hold <= later.at


def test_process_faults_are_distinct_while_the_catalogue_lasts_then_drawn_again() -> None:
    faults = _lane(build_schedule(_spec(11, process=len(PROCESS_CATALOGUE))), "process")
    assert sorted((f.kind, f.target) for f in faults) == sorted(PROCESS_CATALOGUE)
    more = _lane(build_schedule(_spec(11, duration=300, process=len(PROCESS_CATALOGUE) + 4)), "process")
    assert {(f.kind, f.target) for f in more} == set(PROCESS_CATALOGUE)


def test_twenty_seeds_cover_every_kind_of_fault() -> None:
    seen = set()
    for seed in range(1, 21):
        seen |= {(f.kind, f.target) for f in build_schedule(_spec(seed))}
    assert set(PROCESS_CATALOGUE) <= seen
    assert {(kind, "processor") for kind in PROCESSOR_CATALOGUE} <= seen


def test_processor_faults_go_past_payment_svcs_timeout() -> None:
    timeout_ms = 2000
    for seed in range(40):
        for fault in _lane(build_schedule(_spec(seed, processor=5)), "processor"):
            knobs = dict(fault.settings)
            assert set(knobs) <= set(baseline_settings())  # only knobs the simulator has
            if fault.kind == "latency":
                assert timeout_ms < knobs["latency_ms"] <= timeout_ms + 1500
            elif fault.kind == "hang":
                assert knobs["latency_ms"] >= 4 * timeout_ms
                assert knobs["hang_seconds"] * 1000 == knobs["latency_ms"]
            elif fault.kind == "errors":
                assert 0.3 <= knobs["failure_rate"] <= 0.9
            elif fault.kind == "lost_responses":
                assert 0.2 <= knobs["lost_response_rate"] <= 0.7
            else:
                assert fault.kind == "webhook_drops"
                assert 0.5 <= knobs["webhook_drop_rate"] <= 1.0


def test_no_faults_asked_gives_an_empty_schedule_and_a_workload_must_last() -> None:
    assert build_schedule(_spec(1, process=0, processor=0)) == ()
    with pytest.raises(ValueError, match="more than 0"):
        build_schedule(_spec(1, duration=0))


def test_default_counts_grow_with_the_duration() -> None:
    assert default_fault_counts(30) == (2, 2)
    assert default_fault_counts(90) == (8, 4)
    assert default_fault_counts(120) == (10, 6)


def test_a_faults_label_names_its_knobs() -> None:
    fault = Fault("processor", "errors", "processor", 3.0, 2.0, (("failure_rate", 0.5),))
    assert fault.label == "errors processor (failure_rate=0.5)"
    assert Fault("process", "kill9", "postgres", 1.0, 2.0).label == "kill9 postgres"
