"""The replay buffer used alone: the hub's bounded history of job frames, and what a socket
that resumes after seq ``n`` is sent again. No server, no socket: frames and key sets."""

from __future__ import annotations

from playground_rt import schemas
from playground_rt.hub.replay import Entry, ReplayBuffer

JOB = "rembg-" + "a" * 32
OTHER = "rembg-" + "b" * 32


def progress(seq: int, job_id: str = JOB, *tasks: str, withdrawn: bool = False) -> Entry:
    """Frame ``seq`` of a job followed by ``tasks``, as the hub buffers it (taskId unset)."""
    frame = schemas.Progress(job_id=job_id, stage="model", step=seq, total=9, seq=seq)
    return Entry(seq, frame, frozenset(tasks), withdrawn)


def seqs(found: list[tuple[Entry, str | None]]) -> list[int]:
    return [entry.seq for entry, _ in found]


def test_a_follower_of_a_task_gets_its_task_id_and_a_follower_of_the_job_does_not() -> None:
    entry = progress(1, JOB, "tab-a", "tab-b")
    assert entry.match({"t:tab-b"}) == (True, "tab-b")
    assert entry.match({"j:" + JOB}) == (True, None)  # never learns the taskIds of others
    assert entry.match({"j:" + JOB, "t:tab-a"}) == (True, "tab-a")  # the taskId wins
    assert entry.match({"t:tab-c", "j:" + OTHER}) == (False, None)


def test_a_withdrawal_goes_to_its_tasks_only() -> None:
    """The ``cancelled`` a tab hears when it stops following a job that goes on for others."""
    notice = progress(1, JOB, "tab-a", withdrawn=True)
    assert notice.match({"t:tab-a"}) == (True, "tab-a")
    assert notice.match({"j:" + JOB}) == (False, None)


def test_the_oldest_entries_go_at_capacity_and_the_buffer_remembers_up_to_where() -> None:
    buffer = ReplayBuffer(capacity=3)
    assert buffer.oldest_seq(default=1) == 1 and buffer.dropped_upto == 0
    for seq in (2, 4, 5, 7, 9):  # seqs of other (unbuffered) frames leave holes
        buffer.append(progress(seq))
    assert len(buffer) == 3
    assert [e.seq for e in buffer.after(0)] == [5, 7, 9]
    assert buffer.oldest_seq(default=10) == 5
    assert buffer.dropped_upto == 4  # a client that saw seq 4 or later missed nothing


def test_a_resume_gets_what_its_keys_match_after_its_seq_in_order() -> None:
    buffer = ReplayBuffer()
    buffer.append(progress(1, JOB, "tab-a"))
    buffer.append(progress(2, OTHER, "tab-b"))
    buffer.append(progress(3, JOB, "tab-a"))
    buffer.append(progress(4, OTHER))
    missed = buffer.missed(1, {"t:tab-a", "j:" + OTHER}, before=frozenset(), live_since=None)
    assert [(entry.seq, task) for entry, task in missed] == [(2, None), (3, "tab-a"), (4, None)]


def test_a_resume_skips_what_the_socket_already_got_live() -> None:
    """Subscribed to tab-a since seq 2, the socket resumes with job OTHER added: frames of
    tab-a from seq 2 on went out live, so only OTHER's and the older one come again."""
    buffer = ReplayBuffer()
    for seq in (1, 2, 3):
        buffer.append(progress(seq, JOB, "tab-a"))
    buffer.append(progress(4, OTHER))
    keys = {"t:tab-a", "j:" + OTHER}
    missed = buffer.missed(0, keys, before=frozenset({"t:tab-a"}), live_since=2)
    assert seqs(missed) == [1, 4]
