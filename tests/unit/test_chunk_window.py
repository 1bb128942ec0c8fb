"""The fetch window (daemon/jobs/chunk_window.py): a bounded number of chunks asked for, replies
in any order written in order, replies that do not fit their request refused."""

import pytest

from daemon.jobs.chunk_window import ChunkError, ChunkWindow


def test_asks_up_to_the_window_and_writes_only_the_prefix():
    window = ChunkWindow(start=0, size=10, chunk=3, window=2)
    assert window.to_ask() == [(0, 3), (3, 3)]
    assert window.to_ask() == []  # full
    window.received(3, b"def")
    assert window.to_write() == []  # 0..3 is still missing
    assert window.to_ask() == []  # a held chunk counts against the window too
    window.received(0, b"abc")
    assert window.to_write() == [b"abc", b"def"] and window.written == 6
    assert window.to_ask() == [(6, 3), (9, 1)]  # the last chunk is short
    window.received(9, b"j")
    window.received(6, b"ghi")
    assert window.to_write() == [b"ghi", b"j"]
    assert window.complete and window.to_ask() == []


def test_starts_where_a_partial_file_stops():
    window = ChunkWindow(start=7, size=10, chunk=4, window=8)
    assert window.to_ask() == [(7, 3)]
    assert ChunkWindow(start=10, size=10, chunk=4, window=8).complete


def test_a_short_reply_is_kept_and_its_rest_asked_again():
    window = ChunkWindow(start=0, size=10, chunk=4, window=2)
    assert window.to_ask() == [(0, 4), (4, 4)]
    window.received(0, b"ab")  # a holder that serves smaller chunks
    assert window.to_write() == [b"ab"]
    assert window.to_ask() == [(2, 2)]
    window.received(4, b"efgh")
    window.received(2, b"cd")
    assert window.to_write() == [b"cd", b"efgh"]
    assert window.to_ask() == [(8, 2)]


def test_replies_that_do_not_fit_are_refused():
    window = ChunkWindow(start=0, size=10, chunk=4, window=2)
    window.to_ask()
    with pytest.raises(ChunkError, match="not asked for"):
        window.received(2, b"xxxx")
    with pytest.raises(ChunkError, match="asked for 4"):
        window.received(0, b"xxxxx")  # more than asked
    with pytest.raises(ChunkError, match="asked for 4"):
        window.received(4, b"")  # nothing, before the end
    with pytest.raises(ValueError):
        ChunkWindow(start=11, size=10, chunk=4, window=2)
