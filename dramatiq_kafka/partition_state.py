"""The state of one assigned partition: its jobs, each in exactly one :class:`JobState`,
its counters, its committable watermark and the progress it commits for its next owner.

What may start, wait or commit across partitions is the :class:`~dramatiq_kafka.scheduling.Scheduler`'s
(``scheduling.py``, which also draws the states and their rules); nothing here knows of Kafka.
"""

from __future__ import annotations

import enum
from collections import Counter, deque
from typing import Any

from .offsets import PartitionOffsets, PartitionProgress


class JobState(enum.Enum):
    """Where a record stands (see the module's docstring)."""

    BUFFERED = "buffered"
    RUNNING = "running"
    AWAITING_SENDS = "awaiting sends"
    WAITING_RETRY = "waiting for a retry"
    DEAD_LETTERING = "being dead-lettered"
    FINISHED = "finished"
    HANDED_BACK = "handed back"


#: Jobs handed out and not yet settled: they count against the in-flight limit.
IN_FLIGHT = frozenset({JobState.RUNNING, JobState.AWAITING_SENDS})


class Job:
    """A record taken from a partition, and what became of it.

    Attributes:
      schedule(PartitionSchedule): The partition (of one assignment) it came from.
      offset(int): Its offset.
      key(bytes): Its record key; jobs sharing a key never overlap.
      record: What the consumer keeps of it (the Kafka record).
      state(JobState): Where it stands.
      failures(int): Failed runs that spent its retry budget.
      runs(int): How many times it started.
      due(float): When a WAITING_RETRY job runs again, or when the write of a
        DEAD_LETTERING job is tried again (``None`` while a write is in flight).
      attempts_of_write(int): Dead-letter writes tried so far.
      detail: What the consumer keeps for its next step (the dead letter's headers).
    """

    __slots__ = (
        "attempts_of_write",
        "detail",
        "due",
        "failures",
        "key",
        "offset",
        "record",
        "runs",
        "schedule",
        "state",
    )

    def __init__(self, schedule: PartitionSchedule, offset: int, key: bytes | None, record: Any) -> None:
        self.schedule = schedule
        self.offset = offset
        self.key = key
        self.record = record
        self.state = JobState.BUFFERED
        self.failures = 0
        self.runs = 0
        self.due: float | None = None
        self.attempts_of_write = 0
        self.detail: Any = None

    @property
    def partition(self) -> int:
        return self.schedule.partition

    def __repr__(self) -> str:
        return f"Job({self.partition}@{self.offset}, {self.state.value})"


class PartitionSchedule:
    """One assigned partition of one assignment: its jobs and offsets.

    A partition assigned again after a revocation gets a new schedule: nothing
    of the old assignment acts on the new one.

    Parameters:
      partition(int): The partition number.
      ordered(bool): Run one job at a time.
      buffer_limit(int): Buffered records past which fetching is paused.
      carried(PartitionProgress): What its previous owner committed past the
        committed offset: finished records are skipped, retry counts kept.

    Attributes:
      buffer: Records fetched and not yet started, in offset order.
      jobs: Jobs started and not yet finished or handed back, by offset.
      offsets: The committable watermark.
      keys: Keys of the jobs in flight, with their counts.
      in_flight(int): Jobs running or awaiting their sends.
      retries_waiting(int): Jobs waiting for a retry.
      dead_letters_pending(int): Jobs being dead-lettered.
      failures_in_a_row(int): Failures since a job last succeeded at its first run: the
        retry budget of an ordered partition.
      revoked(bool): Taken away (or the consumer closing): nothing new starts.
      owned(bool): Still this consumer's: false once the revocation's grace
        is over and the partition forgotten.
      paused: Whether Kafka's fetching is paused for it; ``None`` until this
        assignment told librdkafka (which keeps a pause across assignments).
      done_earlier: Offsets not fetched yet that an earlier owner finished.
      failures_carried: Failed runs of records not started, by offset (an earlier
        owner's, or of jobs handed back), for the next owner.
      last_progress: The progress last sent to be committed.
    """

    def __init__(
        self,
        partition: int,
        *,
        ordered: bool = False,
        buffer_limit: int = 1000,
        carried: PartitionProgress | None = None,
    ) -> None:
        self.partition = partition
        self.ordered = ordered
        self.buffer_limit = buffer_limit
        self.buffer: deque[Job] = deque()
        self.jobs: dict[int, Job] = {}
        self.offsets = PartitionOffsets()
        self.keys: Counter[bytes] = Counter()
        self.in_flight = 0
        # The in-flight count of all partitions of the scheduler (shared: the
        # limit is checked on every hand-out, and summing cost a tenth of it).
        self.all_in_flight = [0]
        self.retries_waiting = 0
        self.dead_letters_pending = 0
        self.failures_in_a_row = 0
        self.revoked = False
        self.owned = True
        self.paused: bool | None = None
        self.done_earlier: set[int] = set(carried.done) if carried else set()
        self.failures_carried: dict[int, int] = dict(carried.failures) if carried else {}
        self.last_progress: PartitionProgress | None = None

    # -- what the partition may do --------------------------------------------------------------------

    @property
    def blocked(self) -> bool:
        """Whether new records must wait: a retry or a dead letter is pending."""
        return self.retries_waiting > 0 or self.dead_letters_pending > 0

    def startable(self, now: float) -> Job | None:
        """The job that may start now, if any (the in-flight limit aside)."""
        if self.revoked:
            return None
        if self.retries_waiting:
            due = [
                job
                for job in self.jobs.values()
                if job.state is JobState.WAITING_RETRY
                and job.due is not None
                and job.due <= now
                and not (job.key is not None and self.keys[job.key])
            ]
            return min(due, key=lambda job: job.offset, default=None)
        if self.dead_letters_pending or not self.buffer or (self.ordered and self.jobs):
            return None
        head = self.buffer[0]
        # A busy key holds back the records behind it: each key keeps its order.
        if head.key is not None and self.keys[head.key]:
            return None
        return head

    def wants_pause(self) -> bool:
        """Whether fetching should be paused: the partition is blocked, or
        its buffer is full."""
        return self.blocked or len(self.buffer) >= self.buffer_limit

    def pause_reason(self, now: float) -> str:
        """Why the partition is paused, for logs and status."""
        for job in sorted(self.jobs.values(), key=lambda job: job.offset):
            if job.state is JobState.WAITING_RETRY and job.due is not None:
                return (
                    f"offset {job.offset} waits for retry {job.failures or 1} "
                    f"(due in {max(0.0, job.due - now):.1f}s)"
                )
            if job.state is JobState.DEAD_LETTERING:
                return f"offset {job.offset} is being dead-lettered"
        return f"{len(self.buffer)} records buffered"

    def snapshot(self, now: float) -> dict[str, Any]:
        """What the partition is doing, for status records: counts and the
        pause's reason, never a record's content."""
        return {
            "partition": self.partition,
            "committed": self.offsets.last_committed,
            "fetched": self.offsets.fetched,
            "in_flight": self.in_flight,
            "buffered": len(self.buffer),
            "retries_waiting": self.retries_waiting,
            "dead_letters_pending": self.dead_letters_pending,
            "paused": bool(self.paused),
            "pause_reason": self.pause_reason(now) if self.paused else None,
            "revoked": self.revoked,
        }

    def next_due(self) -> float | None:
        """The earliest due time of a retry or a dead-letter write."""
        if not (self.retries_waiting or self.dead_letters_pending):
            return None
        return min((job.due for job in self.jobs.values() if job.due is not None), default=None)

    def progress(self) -> PartitionProgress | None:
        """What to commit for the partition's next owner; ``None`` before
        anything was fetched (the earlier owner's commit still stands)."""
        position = self.offsets.position()
        if position is None:
            return None
        offset, done = position
        failures = {o: count for o, count in self.failures_carried.items() if o >= offset}
        failures.update((job.offset, job.failures) for job in self.jobs.values() if job.failures)
        # Finished earlier and not fetched again yet: above everything fetched.
        later = sorted(o for o in self.done_earlier if o >= offset)
        return PartitionProgress(offset, tuple(done + later), failures)

    def progress_to_commit(self) -> PartitionProgress | None:
        """:meth:`progress` when it changed since it was last sent, taken as sent."""
        progress = self.progress()
        if progress is None or progress == self.last_progress:
            return None
        self.last_progress = progress
        return progress

    def jobs_in(self, *states: JobState) -> list[Job]:
        """The started jobs in one of ``states``."""
        return [job for job in self.jobs.values() if job.state in states]

    # -- transitions (the Scheduler checks that a job is current first) -------------------------------

    def finished_earlier(self, offset: int) -> bool:
        """Whether an earlier owner finished the record fetched at ``offset``;
        if so it is tracked as finished here."""
        if offset not in self.done_earlier:
            return False
        self.done_earlier.discard(offset)
        self.offsets.track(offset)
        self.offsets.mark_done(offset)
        return True

    def fetched(self, offset: int, key: bytes | None, record: Any) -> Job | None:
        """The record fetched at ``offset``, buffered as a job; ``None`` when an
        earlier owner finished it."""
        if self.finished_earlier(offset):
            return None
        self.offsets.track(offset)
        job = Job(self, offset, key, record)
        job.failures = self.failures_carried.get(offset, 0)
        self.buffer.append(job)
        return job

    def adopt(self, offset: int, key: bytes | None, record: Any) -> Job | None:
        """A record taken outside the buffer (by the delay consumer), as a job in flight."""
        job = self.fetched(offset, key, record)
        if job is not None:
            self.start(job)
        return job

    def start(self, job: Job) -> None:
        if job.state is JobState.BUFFERED:
            assert self.buffer[0] is job, "records start in offset order"
            self.buffer.popleft()
            self.jobs[job.offset] = job
        else:
            assert job.state is JobState.WAITING_RETRY
            self.retries_waiting -= 1
        job.state = JobState.RUNNING
        job.due = None
        job.runs += 1
        self.in_flight += 1
        self.all_in_flight[0] += 1
        if job.key is not None:
            self.keys[job.key] += 1

    def leave(self, job: Job, state: JobState) -> None:
        """Move ``job`` to ``state``, keeping the counters and the key table."""
        old = job.state
        if old in IN_FLIGHT and state not in IN_FLIGHT:
            self.in_flight -= 1
            self.all_in_flight[0] -= 1
            if job.key is not None:
                self.keys[job.key] -= 1
                if self.keys[job.key] <= 0:
                    del self.keys[job.key]
        self.retries_waiting += (state is JobState.WAITING_RETRY) - (old is JobState.WAITING_RETRY)
        self.dead_letters_pending += (state is JobState.DEAD_LETTERING) - (old is JobState.DEAD_LETTERING)
        if old is JobState.BUFFERED:
            if self.buffer and self.buffer[0] is job:
                self.buffer.popleft()
            else:
                self.buffer.remove(job)
            self.jobs[job.offset] = job
        job.state = state
        if state is JobState.FINISHED:
            self.offsets.mark_done(job.offset)
            self.failures_carried.pop(job.offset, None)
        elif state is JobState.HANDED_BACK and job.failures:
            self.failures_carried[job.offset] = job.failures
        if state in (JobState.FINISHED, JobState.HANDED_BACK):
            # Nothing of a job outlives it: the watermark keeps what commits need.
            self.jobs.pop(job.offset, None)
            job.detail = None
