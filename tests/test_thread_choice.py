"""ThreadChoice (issue 22 item 11): the OpenVINO backend runs each call with its default thread
count or with 1, whichever recent calls measured faster. Driven here by latencies that play
a quiet CPU, a CPU other work arrives on and leaves, and one where both counts are as fast;
the backend's own use of it is in test_openvino_backend.py."""

import pytest

from ssd_edge.common.errors import UsageError
from ssd_edge.runtime.backends.thread_choice import ThreadChoice

QUIET = {2: 0.0075, 1: 0.0125}  # seconds per image measured here: 2 threads are faster
BUSY = {2: 0.020, 1: 0.0128}  # other processes waking up on both cores: 1 thread is faster
EVEN = {2: 0.026, 1: 0.025}  # busy loops on both cores: within the margin


def run(choice: ThreadChoice, latencies: dict, calls: int) -> list[int]:
    """The thread counts `calls` calls ran with, each taking latencies[count]."""
    ran = []
    for _ in range(calls):
        threads = choice.next()
        choice.record(threads, latencies[threads])
        ran.append(threads)
    return ran


def test_quiet_cpu_probes_once_then_stays_with_all_threads():
    choice = ThreadChoice(2)
    ran = run(choice, QUIET, 5000)
    assert choice.current == 2
    assert ran.count(1) == 1 + 6  # the single-thread model's warm-up call and one probe, nothing after


def test_switches_to_one_thread_when_other_work_arrives_and_back_when_it_leaves():
    choice = ThreadChoice(2)
    run(choice, QUIET, 200)
    ran = run(choice, BUSY, 80)
    assert choice.current == 1
    assert ran.index(1) <= 4  # half the window is slower than the best: a probe at once
    assert ran[-10:] == [1] * 10
    after_switch = ran[ran.index(1) + 12:]
    assert after_switch.count(2) == 6  # the switch reset the period to 32: one probe of 2 threads since
    ran = []
    while choice.current == 1:  # on 1 thread it probes every period (now 64: the probe under load kept 1)
        ran += run(choice, QUIET, 1)
    assert len(ran) < 64 + 8 and ran[-12:] == [2, 1] * 6 and ran.count(2) == 6  # back after one probe
    # the switch back starts from the probe's own latencies, nothing measured before it
    assert list(choice._recent[2]) == [QUIET[2]] * 6
    ran = run(choice, QUIET, 300)
    assert set(ran) == {2}


def test_a_probe_runs_the_two_counts_in_turn():
    """Both counts see the same moments of a changing load: other, current, other, ..."""
    choice = ThreadChoice(2)
    ran = run(choice, QUIET, 60)
    first = ran.index(1)
    assert ran[first:first + 1 + 12] == [1] + [1, 2] * 6  # the warm-up call, then 6 of each in turn


def test_a_warm_up_call_does_not_count():
    """The first call of a compiled model is its own warm-up (here 80x slower): not a sample,
    or a one-call probe would be that call alone."""
    choice = ThreadChoice(2, probe_calls=1)
    warm_up = {2: True, 1: True}

    def latency(threads):
        first, warm_up[threads] = warm_up[threads], False
        return 1.0 if first else BUSY[threads]

    for _ in range(60):
        threads = choice.next()
        choice.record(threads, latency(threads))
    assert choice.current == 1


def test_no_switch_within_the_margin_and_probes_back_off():
    choice = ThreadChoice(2, period=32, max_period=256)
    run(choice, QUIET, 100)
    ran = run(choice, EVEN, 6000)
    assert choice.current == 2
    probes = ran.count(1) / 6  # a probe runs 6 calls with 1 thread
    # each probe that keeps the current count doubles the period: 64, 128, 256, 256, ...
    assert 6000 // (256 + 12) <= probes <= 6000 // 256 + 3


@pytest.mark.parametrize("kwargs", [{"many": 1}, {"many": True}, {"many": 2.0},
                                    {"many": 2, "probe_calls": 0}, {"many": 2, "window": 64}])
def test_refuses_what_it_cannot_choose_between(kwargs):
    with pytest.raises(UsageError):
        ThreadChoice(**kwargs)


def test_no_probe_before_one_thread_can_run():
    """The backend compiles for 1 thread in the background: until it says so, every call runs
    with all threads, however slow; then the first probe comes at once."""
    choice = ThreadChoice(2, single_ready=False)
    assert set(run(choice, BUSY, 500)) == {2}
    choice.single_ready = True
    ran = run(choice, BUSY, 20)
    assert choice.current == 1 and ran[0:2] == [2, 1]
