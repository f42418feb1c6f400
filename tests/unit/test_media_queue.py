"""A destination's bounded queue: GOP-aware dropping, end of stream, keyframe resume."""

from agent.media_queue import MediaMessage, MediaQueue


def video(dts: int, key: bool = False, size: int = 100) -> MediaMessage:
    return MediaMessage(9, dts, bytes(size), key)


def audio(dts: int, size: int = 10) -> MediaMessage:
    return MediaMessage(8, dts, bytes(size))


def drain(queue: MediaQueue) -> list[MediaMessage]:
    return queue.take()


def test_fifo_then_end_of_stream():
    queue = MediaQueue(max_bytes=10_000, max_seconds=10)
    packets = [video(0, key=True), audio(10), video(33)]
    for packet in packets:
        queue.put(packet)
    queue.end()
    assert queue.ended
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
    queue.end()
    remaining = drain(queue)
    assert remaining[0].starts_gop
    assert remaining[-1].timestamp - remaining[0].timestamp <= 2000
    assert queue.dropped_packets == 20 - len(remaining)


def test_bytes_bound_drops_whole_gops_from_the_head():
    queue = MediaQueue(max_bytes=1000, max_seconds=100)
    for i in range(20):
        queue.put(video(i * 33, key=i % 5 == 0, size=100))
    assert queue.queued_bytes <= 1000
    queue.end()
    remaining = drain(queue)
    assert remaining[0].starts_gop
    assert queue.dropped_bytes == (20 - len(remaining)) * 100


def test_a_gop_larger_than_the_bound_empties_the_queue():
    queue = MediaQueue(max_bytes=250, max_seconds=100)
    queue.put(video(0, key=True))
    queue.put(video(33))
    queue.put(video(66))  # 300 bytes, no later keyframe to resume at
    assert len(queue) == 0


def test_skip_to_latest_keyframe():
    queue = MediaQueue(10**6, 100)
    for i in range(10):
        queue.put(video(i * 100, key=i in (0, 4, 7)))
    queue.skip_to_latest_keyframe()
    queue.end()
    assert [p.timestamp for p in drain(queue)] == [700, 800, 900]


def test_skip_without_a_keyframe_drops_everything():
    queue = MediaQueue(10**6, 100)
    queue.put(video(0))
    queue.put(audio(5))
    queue.skip_to_latest_keyframe()
    assert len(queue) == 0
