"""A destination's bounded queue: order, GOP-aware dropping."""

from agent.media_queue import MediaMessage, MediaQueue
from agent.tags import Kind


def video(dts: int, key: bool = False, size: int = 100) -> MediaMessage:
    return MediaMessage(9, dts, bytes(size), Kind.KEYFRAME if key else Kind.FRAME)


def audio(dts: int, size: int = 10) -> MediaMessage:
    return MediaMessage(8, dts, bytes(size))


def drain(queue: MediaQueue) -> list[MediaMessage]:
    return queue.take()


def test_fifo():
    queue = MediaQueue(max_bytes=10_000, max_seconds=10)
    packets = [video(0, key=True), audio(10), video(33)]
    for packet in packets:
        queue.put(packet)
    assert queue.take(limit=2) == packets[:2]
    assert queue.queued_bytes == len(packets[2].body)
    assert queue.take() == packets[2:]
    assert queue.take() == []
    assert queue.queued_bytes == 0


def test_put_many_keeps_order_and_bounds():
    queue = MediaQueue(max_bytes=250, max_seconds=100)
    queue.put_many([video(0, key=True), video(33), video(66, key=True), video(99)])
    assert [m.timestamp for m in queue.take()] == [66, 99]
    assert queue.dropped_packets == 2


def test_seconds_bound_drops_whole_gops_from_the_head():
    queue = MediaQueue(max_bytes=10**9, max_seconds=2)
    for dts in range(0, 5000, 500):  # keyframe every second
        queue.put(video(dts, key=dts % 1000 == 0))
        queue.put(audio(dts))
    remaining = drain(queue)
    assert remaining[0].starts_gop
    assert remaining[-1].timestamp - remaining[0].timestamp <= 2000
    assert queue.dropped_packets == 20 - len(remaining)


def test_bytes_bound_drops_whole_gops_from_the_head():
    queue = MediaQueue(max_bytes=1000, max_seconds=100)
    for i in range(20):
        queue.put(video(i * 33, key=i % 5 == 0, size=100))
    assert queue.queued_bytes <= 1000
    remaining = drain(queue)
    assert remaining[0].starts_gop
    assert queue.dropped_bytes == (20 - len(remaining)) * 100


def test_a_gop_larger_than_the_bound_empties_the_queue():
    queue = MediaQueue(max_bytes=250, max_seconds=100)
    queue.put(video(0, key=True))
    queue.put(video(33))
    queue.put(video(66))  # 300 bytes, no later keyframe to resume at
    assert len(queue) == 0


def test_clear_is_not_a_drop():
    queue = MediaQueue(10**6, 100)
    queue.put(video(0, key=True))
    queue.clear()
    assert len(queue) == 0
    assert queue.queued_bytes == 0
    assert queue.dropped_packets == 0


def test_only_video_keyframes_start_a_gop():
    assert video(0, key=True).starts_gop
    assert not video(0).starts_gop
    assert not MediaMessage(9, 0, b"\x17\x00", Kind.SEQUENCE_HEADER).starts_gop
    assert video(0).is_video_frame and not audio(0).is_video_frame
