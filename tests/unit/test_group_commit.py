"""GroupCommit (daemon/jobs/group_commit.py): concurrent writers share fsyncs, and nobody returns
before an fsync that started after its own call has finished."""

import os
import threading

import pytest
import trio

from daemon.jobs.group_commit import GroupCommit, file_syncer


class SlowSync:
    """Records when each sync starts and ends (by a counter), blocking a little like a disk."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.started: list[int] = []
        self.finished: list[int] = []
        self.clock = 0
        self.fail_next = False

    def tick(self) -> int:
        with self.lock:
            self.clock += 1
            return self.clock

    def __call__(self) -> None:
        self.started.append(self.tick())
        threading.Event().wait(0.02)
        if self.fail_next:
            self.fail_next = False
            raise OSError(5, "Input/output error")
        self.finished.append(self.tick())


async def test_many_concurrent_writers_share_few_fsyncs_and_each_waits_for_one_after_its_call():
    sync = SlowSync()
    group = GroupCommit(sync)
    returned: list[tuple[int, int]] = []  # (clock when called, clock when returned)

    async def writer(delay: float) -> None:
        await trio.sleep(delay)
        called = sync.tick()
        await group.durable()
        returned.append((called, sync.tick()))

    async with trio.open_nursery() as nursery:
        for i in range(40):
            nursery.start_soon(writer, (i % 4) * 0.005)
    assert len(returned) == 40
    assert group.fsyncs < 10  # 40 acknowledgements, a handful of fsyncs
    for called, done in returned:
        # Some fsync started after this writer called and finished before it returned.
        covering = [(s, f) for s, f in zip(sync.started, sync.finished) if s > called and f < done]
        assert covering, (called, done, sync.started, sync.finished)


async def test_a_lone_writer_gets_exactly_one_fsync():
    sync = SlowSync()
    group = GroupCommit(sync)
    await group.durable()
    await group.durable()
    assert group.fsyncs == 2 and len(sync.started) == 2


async def test_a_failed_fsync_raises_to_its_writer_and_the_next_call_syncs_again():
    sync = SlowSync()
    group = GroupCommit(sync)
    sync.fail_next = True
    with pytest.raises(OSError):
        await group.durable()
    await group.durable()
    assert group.fsyncs == 1 and len(sync.finished) == 1


async def test_file_syncer_fsyncs_a_file_appended_through_another_descriptor(tmp_path):
    path = tmp_path / "log"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    sync = file_syncer(path)
    os.write(fd, b"entry")
    await GroupCommit(sync).durable()  # raises if the descriptor could not be fsynced
    os.close(fd)
    assert path.read_bytes() == b"entry"
