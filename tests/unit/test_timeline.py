"""The broadcast's timeline: tables of switches, wraps and jitter, then properties."""

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.timeline import MASK, Timeline, serial_delta

A, V, D = 8, 9, 18


def placed(timeline: Timeline, messages, now: float = 0.0) -> list[int]:
    return [timeline.place(type_id, ts, now) for type_id, ts in messages]


def test_serial_delta_reads_a_wrap_as_a_step_forward():
    assert serial_delta(5, MASK - 4) == 10
    assert serial_delta(MASK - 4, 5) == -10
    assert serial_delta(1000, 400) == 600


def test_the_first_source_keeps_its_timestamps():
    timeline = Timeline()
    messages = [(D, 0), (V, 0), (A, 0), (A, 23), (V, 33), (V, 66), (A, 46)]
    assert placed(timeline, messages) == [0, 0, 0, 23, 33, 66, 46]
    assert timeline.last_output == 66
    assert timeline.switches == 0


def test_a_new_source_starts_one_step_after_the_last_message_sent():
    timeline = Timeline(step_ms=33)
    placed(timeline, [(V, 5000), (A, 5010), (V, 5033)])
    timeline.switch()
    # The returning publisher starts its clock anywhere: here at 0, audio ahead.
    assert placed(timeline, [(V, 0), (A, 3), (V, 33), (A, 26)]) == [5066, 5069, 5099, 5092]


def test_a_switch_at_a_keyframe_timestamp_anchors_there_and_clamps_earlier_headers():
    timeline = Timeline(step_ms=40)
    placed(timeline, [(V, 100), (A, 120)])
    # A standby backup: its sequence headers carry 0, its buffered keyframe 9000.
    timeline.switch(at=9000)
    out = placed(timeline, [(V, 0), (A, 0), (V, 9000), (A, 9010), (V, 9040)])
    assert out == [100, 120, 160, 170, 200]


def test_audio_behind_video_after_a_switch_never_goes_back():
    timeline = Timeline(step_ms=20)
    placed(timeline, [(A, 980), (V, 1000)])
    timeline.switch(at=500)
    # The new source's audio lags its keyframe by 30 ms: held at audio's last timestamp.
    assert placed(timeline, [(V, 500), (A, 470), (A, 491), (A, 512)]) == [1020, 990, 1011, 1032]


def test_switch_step_is_bounded():
    with pytest.raises(ValueError, match="0 to 1000 ms"):
        Timeline(step_ms=1001)
    with pytest.raises(ValueError, match="0 to 1000 ms"):
        Timeline().switch(step_ms=-1)


def test_a_source_wrapping_its_32_bit_clock_is_continuous():
    timeline = Timeline(step_ms=1)
    start = MASK - 50
    out = placed(timeline, [(V, start), (V, start + 33), (V, (start + 66) & MASK)])
    assert out == [start, start + 33, (start + 66) & MASK]  # unchanged, wrapped as sent
    assert timeline.last_output == start + 66  # unwrapped inside


def test_the_broadcast_wraps_where_a_long_publish_would():
    timeline = Timeline(step_ms=33)
    placed(timeline, [(V, MASK - 10)])
    timeline.switch()
    assert placed(timeline, [(V, 0), (V, 33)]) == [22, 55]  # MASK - 10 + 33 wraps to 22


def test_a_new_source_placed_across_the_wrap_from_its_own_wrapped_clock():
    timeline = Timeline(step_ms=10)
    placed(timeline, [(V, 1000)])
    timeline.switch(at=MASK - 5)
    assert placed(timeline, [(V, MASK - 5), (V, 4), (A, 14)]) == [1010, 1020, 1030]


def test_a_clock_stepping_back_far_within_a_source_is_a_new_clock():
    timeline = Timeline(step_ms=33, max_step_back_ms=1000)
    placed(timeline, [(V, 60_000), (V, 60_033)])
    # Small jitter back is clamped; a restart at 0 continues after the last message.
    assert placed(timeline, [(V, 60_020), (V, 0), (V, 33)]) == [60_033, 60_066, 60_099]
    assert timeline.switches == 1


def test_tracks_interleaved_far_apart_are_no_restart():
    timeline = Timeline(step_ms=33, max_step_back_ms=1000)
    # Audio first for 1.5 s (a GStreamer start), then video from 0, then audio goes on.
    out = placed(timeline, [(A, 0), (A, 1500), (V, 0), (V, 1600), (A, 1523), (V, 1633)])
    assert out == [0, 1500, 0, 1600, 1523, 1633]
    assert timeline.switches == 0


def test_data_stamped_far_back_is_clamped_and_restarts_nothing():
    timeline = Timeline(step_ms=33, max_step_back_ms=1000)
    out = placed(timeline, [(D, 0), (V, 60_000), (D, 60_000), (D, 0), (V, 60_033)])
    assert out == [0, 60_000, 60_000, 60_000, 60_033]
    assert timeline.switches == 0


def test_a_jump_forward_is_the_publishers_and_passes_through():
    timeline = Timeline()
    assert placed(timeline, [(V, 0), (V, 33), (V, 600_000)]) == [0, 33, 600_000]


def test_the_clock_is_recorded_for_pacing_the_slate():
    timeline = Timeline()
    assert timeline.last_at is None
    timeline.place(V, 0, now=12.5)
    timeline.place(A, 10, now=12.75)
    assert timeline.last_at == 12.75


def test_several_switches_in_a_row_each_continue():
    timeline = Timeline(step_ms=33)
    placed(timeline, [(V, 0), (V, 33)])
    for expected_first in (66, 132, 198):
        timeline.switch()  # publisher -> slate -> publisher -> backup
        assert placed(timeline, [(V, 7777), (V, 7810)]) == [expected_first, expected_first + 33]


def test_a_switch_before_anything_was_sent_keeps_the_sources_clock():
    timeline = Timeline()
    timeline.switch(at=500)
    assert placed(timeline, [(V, 500), (A, 510)]) == [500, 510]


# --- properties ------------------------------------------------------------------------

track = st.sampled_from([A, V, D])
# A source: its clock's start (anywhere in 32 bits), then steps between messages with
# jitter (a little back, mostly forward, sometimes a long way forward).
step = st.one_of(st.integers(-40, 120), st.integers(120, 5000))
start = st.one_of(st.integers(0, MASK), st.integers(MASK - 20_000, MASK))  # near the wrap too
source = st.tuples(start, st.lists(st.tuples(track, step), min_size=1, max_size=40))


def switched(min_sources: int):
    """Sources played one after another, each with the step its switch asks for."""
    return st.lists(source, min_size=min_sources, max_size=6).flatmap(
        lambda sources: st.tuples(
            st.just(sources),
            st.lists(st.integers(0, 1000), min_size=len(sources), max_size=len(sources)),
        )
    )


def play(sources, steps) -> list[tuple[int, int, int]]:
    """Feed the sources through one timeline: per message (source index, type, output
    timestamp unwrapped onto one number line)."""
    timeline, out = Timeline(), []
    for index, ((start, messages), switch_step) in enumerate(zip(sources, steps, strict=True)):
        if index:
            timeline.switch(step_ms=switch_step)
        ts = start
        for type_id, delta in messages:
            ts = (ts + delta) & MASK
            out.append((index, type_id, timeline.place(type_id, ts, now=0.0)))
    line = unwrapped([ts for _, _, ts in out])
    return [(index, type_id, t) for (index, type_id, _), t in zip(out, line, strict=True)]


def unwrapped(emitted: list[int]) -> list[int]:
    """The emitted 32-bit timestamps as one rising number line (serial arithmetic)."""
    line = [emitted[0]]
    for previous, current in itertools.pairwise(emitted):
        line.append(line[-1] + serial_delta(current, previous))
    return line


@settings(max_examples=300)
@given(switched(1))
def test_output_never_steps_back_on_any_track(broadcast):
    out = play(*broadcast)
    for type_id in (A, V, D):
        mine = [t for _, kind, t in out if kind == type_id]
        assert mine == sorted(mine)


@settings(max_examples=300)
@given(switched(2))
def test_a_switch_leaves_no_hole_over_one_second(broadcast):
    _, steps = broadcast
    out = play(*broadcast)
    for i in range(1, len(out)):
        if out[i][0] != out[i - 1][0]:  # the first message of a new source
            gap = out[i][2] - max(t for _, _, t in out[:i])
            assert gap == steps[out[i][0]]
            assert 0 <= gap <= 1000


@given(source)
def test_a_steady_source_keeps_its_spacing_after_any_switch(src):
    start, messages = src
    steady = [(V, abs(delta) % 100) for _, delta in messages]  # never back
    timeline = Timeline(step_ms=33)
    timeline.place(V, 123, now=0.0)
    timeline.switch()
    emitted = feed_one(timeline, start, steady)
    assert [b - a for a, b in itertools.pairwise(emitted)] == [d for _, d in steady[1:]]


@given(source)
def test_the_first_steady_source_is_unchanged(src):
    start, messages = src
    steady = [(kind, abs(delta)) for kind, delta in messages]
    timeline = Timeline()
    ts, sent = start, []
    for _kind, delta in steady:
        ts = (ts + delta) & MASK
        sent.append(ts)
    assert [timeline.place(kind, t, 0.0) for (kind, _), t in zip(steady, sent, strict=True)] == sent


def feed_one(timeline: Timeline, start: int, messages) -> list[int]:
    line, ts = [], start
    for type_id, delta in messages:
        ts = (ts + delta) & MASK
        line.append(timeline.place(type_id, ts, 0.0))
    return unwrapped(line)
