"""How soon the supervisor restarts a worker that died (docs/agent.md, "Stopping,
dying, logs"): at once, unless it keeps dying within 10 s of its start: then 1 s, 2 s,
4 s ... up to 30 s; a worker that ran 10 s or more starts the count again."""

from agent.supervisor import restart_delay


def delays(uptimes: list[float]) -> list[float]:
    quick, answer = 0, []
    for uptime in uptimes:
        quick, delay = restart_delay(quick, uptime)
        answer.append(delay)
    return answer


def test_a_death_after_a_long_run_restarts_at_once_then_young_deaths_back_off():
    # the tester's sequence: died after 773 s, 1 s, 1 s, 0 s of uptime
    assert delays([773, 1, 1, 0]) == [0, 1, 2, 4]


def test_the_first_death_young_waits_1_s():
    assert delays([0.5]) == [1]
    assert delays([9.9]) == [1]
    assert delays([10]) == [0]


def test_the_delay_doubles_up_to_30_s():
    assert delays([1] * 8) == [1, 2, 4, 8, 16, 30, 30, 30]


def test_a_worker_that_ran_10_s_starts_the_count_again():
    assert delays([1, 1, 1, 60, 1, 1]) == [1, 2, 4, 0, 1, 2]
