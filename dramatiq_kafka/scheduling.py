"""The per-partition state machine of a consumer, with no Kafka in it.

Every record a consumer takes becomes a :class:`Job` and is, at every moment, in
exactly one :class:`JobState`::

    BUFFERED ──start──> RUNNING ──> AWAITING_SENDS ──> FINISHED
                          │  ▲            │               ▲
                          │  └── due ─────┼── WAITING_RETRY│
                          │               ▼               │
                          └────────> DEAD_LETTERING ──────┘
    (any unfinished state) ──revocation, shutdown, revoked()──> HANDED_BACK

FINISHED records are committable; HANDED_BACK ones stay uncommitted for the
partition's next owner; the others wait for something with a known wake-up:
a free slot (BUFFERED), the job's thread (RUNNING), Kafka's delivery reports
(AWAITING_SENDS, DEAD_LETTERING), or a due time (WAITING_RETRY, and
DEAD_LETTERING after a refused write).

The rules of a partition:

* jobs start in offset order, at most ``limit`` in flight over all partitions;
  jobs sharing a key never overlap, and a busy key holds back the records
  behind it; an ordered partition has at most one unfinished job;
* while any of its jobs waits for a retry or a dead letter, a partition starts
  no new record; each failed job runs again when its own backoff is due (the
  lowest offset first), so a burst of failures neither loses a job nor runs
  again one that succeeded;
* the committable watermark never passes an unfinished record;
* a partition is paused only while it has a wake-up.

The consumer (``consumer.py``) feeds it Kafka's events under its lock and acts
on what it returns; ``tests/test_scheduling_model.py`` checks it against a
reference model over random interleavings.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .offsets import PartitionProgress
from .partition_state import IN_FLIGHT, Job, JobState, PartitionSchedule

__all__ = ["Scheduler"]


class Scheduler:
    """The partitions of one consumer, and the in-flight limit they share.

    Every method is an event; events about a job of a partition that is no
    longer assigned (or was assigned again since) change nothing and return
    ``False``.  Not thread-safe: the consumer calls it under its lock.

    Parameters:
      limit(int): The most jobs in flight at once (Dramatiq's prefetch).
      ordered(bool): One job per partition at a time.
      buffer_limit(int): Buffered records per partition past which its
        fetching pauses.
      schedule_type(type): The per-partition state (the delay consumer
        keeps more of it).
    """

    def __init__(
        self,
        *,
        limit: int,
        ordered: bool = False,
        buffer_limit: int = 1000,
        schedule_type: type[PartitionSchedule] = PartitionSchedule,
    ) -> None:
        self.limit = max(1, limit)
        self.ordered = ordered
        self.buffer_limit = buffer_limit
        self.schedule_type = schedule_type
        self.partitions: dict[int, PartitionSchedule] = {}
        self._cursor = 0
        self._in_flight = [0]

    # -- assignment ---------------------------------------------------------------------------------

    def assign(self, partition: int, carried: PartitionProgress | None = None) -> PartitionSchedule:
        """A partition of a new assignment, with what its previous owner committed."""
        schedule = self.schedule_type(
            partition, ordered=self.ordered, buffer_limit=self.buffer_limit, carried=carried
        )
        schedule.all_in_flight = self._in_flight
        self.partitions[partition] = schedule
        return schedule

    def revoke(self, partition: int) -> PartitionSchedule | None:
        """Start taking a partition away: nothing new starts, what waited is
        handed back; jobs in flight and dead letters being written may still
        finish (within the consumer's grace) until :meth:`forget`."""
        schedule = self.partitions.get(partition)
        if schedule is None:
            return None
        schedule.revoked = True
        for job in schedule.buffer:
            job.state = JobState.HANDED_BACK
        schedule.buffer.clear()
        for job in list(schedule.jobs_in(JobState.WAITING_RETRY)):
            schedule.leave(job, JobState.HANDED_BACK)
        for job in list(schedule.jobs_in(JobState.DEAD_LETTERING)):
            if job.due is not None:  # a refused write is not tried again
                schedule.leave(job, JobState.HANDED_BACK)
        return schedule

    def forget(self, partition: int) -> None:
        """The partition is gone: every unfinished job of it is handed back,
        and their later events are ignored."""
        schedule = self.revoke(partition)
        if schedule is None:
            return
        for job in list(schedule.jobs.values()):
            schedule.leave(job, JobState.HANDED_BACK)
        schedule.owned = False
        del self.partitions[partition]

    def current(self, job: Job) -> bool:
        """Whether events about ``job`` still count."""
        return self.partitions.get(job.partition) is job.schedule

    # -- starting jobs ------------------------------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Jobs running or awaiting their sends, over all partitions."""
        return self._in_flight[0]

    def fetched(self, partition: int, offset: int, key: bytes | None, record: Any) -> Job | None:
        schedule = self.partitions.get(partition)
        if schedule is None or schedule.revoked:
            return None
        return schedule.fetched(offset, key, record)

    def next_job(self, now: float) -> Job | None:
        """Start the next job that may start, taking partitions in turn."""
        if self._in_flight[0] >= self.limit:
            return None
        schedules = list(self.partitions.values())
        for i in range(len(schedules)):
            schedule = schedules[(self._cursor + i) % len(schedules)]
            if not (schedule.buffer or schedule.retries_waiting):
                continue
            job = schedule.startable(now)
            if job is not None:
                self._cursor += i + 1
                schedule.start(job)
                return job
        return None

    def can_start(self, now: float) -> bool:
        return self.in_flight < self.limit and any(s.startable(now) for s in self.partitions.values())

    # -- how jobs end -------------------------------------------------------------------------------

    def _move(self, job: Job, state: JobState, *allowed: JobState) -> bool:
        if not self.current(job) or job.state not in allowed:
            return False
        job.schedule.leave(job, state)
        return True

    def succeeded(self, job: Job) -> bool:
        """The job (and the sends it made) succeeded: its offset is finished."""
        schedule = job.schedule
        if not self._move(job, JobState.FINISHED, *IN_FLIGHT):
            return False
        if job.failures == 0:
            schedule.failures_in_a_row = 0
        return True

    def awaiting_sends(self, job: Job) -> bool:
        """The job returned; Kafka has yet to acknowledge what it enqueued."""
        if not self.current(job) or job.state not in IN_FLIGHT:
            return False
        job.state = JobState.AWAITING_SENDS
        return True

    def failed(self, job: Job, *, spent: bool) -> bool:
        """Count a failed run against the job's budget (``spent``) and the
        partition's failures in a row; ``False`` when the job is no longer current."""
        if not self.current(job) or job.state not in IN_FLIGHT:
            return False
        if spent:
            job.failures += 1
            job.schedule.failures_in_a_row += 1
        return True

    def retry(self, job: Job, due: float) -> bool:
        """The job runs again at ``due``; a revoked partition hands it back."""
        if job.schedule.revoked:
            self.hand_back(job)
            return False
        if not self._move(job, JobState.WAITING_RETRY, *IN_FLIGHT):
            return False
        job.due = due
        return True

    def dead_lettering(self, job: Job) -> bool:
        """A write of the job to the dead-letter topic is in flight."""
        if not self._move(job, JobState.DEAD_LETTERING, JobState.BUFFERED, *IN_FLIGHT):
            return False
        job.due = None
        job.attempts_of_write += 1
        return True

    def dead_letter_refused(self, job: Job, due: float) -> bool:
        """Kafka refused the dead letter: write it again at ``due``."""
        if not self.current(job) or job.state is not JobState.DEAD_LETTERING or job.due is not None:
            return False
        if job.schedule.revoked:
            self.hand_back(job)
            return False
        job.due = due
        return True

    def dead_letters_due(self, now: float) -> list[Job]:
        """Dead letters whose write is due again; each is in flight once returned."""
        due = []
        for schedule in self.partitions.values():
            if not schedule.dead_letters_pending or schedule.revoked:
                continue
            for job in schedule.jobs.values():
                if job.state is JobState.DEAD_LETTERING and job.due is not None and job.due <= now:
                    job.due = None
                    job.attempts_of_write += 1
                    due.append(job)
        return due

    def dead_lettered(self, job: Job) -> bool:
        """Kafka has the dead letter: the job's offset is finished."""
        if not self._move(job, JobState.FINISHED, JobState.DEAD_LETTERING):
            return False
        job.schedule.failures_in_a_row = 0
        return True

    def hand_back(self, job: Job) -> bool:
        """Leave the job uncommitted for the partition's next owner."""
        return self._move(
            job,
            JobState.HANDED_BACK,
            JobState.BUFFERED,
            JobState.WAITING_RETRY,
            JobState.DEAD_LETTERING,
            *IN_FLIGHT,
        )

    # -- what the consumer asks between events -------------------------------------------------------

    def next_due(self) -> float | None:
        """The earliest due time of a retry or dead-letter write."""
        return min(
            (due for due in (s.next_due() for s in self.partitions.values()) if due is not None),
            default=None,
        )

    def pause_changes(self) -> tuple[list[int], list[int]]:
        """The partitions to pause and to resume now, so that librdkafka
        matches what each partition wants (also when it never heard of this
        assignment: it keeps a pause across revocations)."""
        pause: list[int] = []
        resume: list[int] = []
        for schedule in self.partitions.values():
            if schedule.revoked:
                continue
            wanted = schedule.wants_pause()
            if wanted != schedule.paused:
                schedule.paused = wanted
                (pause if wanted else resume).append(schedule.partition)
        return pause, resume

    def commit_positions(
        self, partitions: Iterable[int] | None = None, *, final: bool = False
    ) -> dict[int, PartitionProgress]:
        """Per partition (all by default), its progress where it changed since it was
        last sent, or, for the ``final`` commit before partitions leave, in any case
        (an earlier commit may yet fail)."""
        wanted = self.partitions.keys() if partitions is None else set(partitions)
        positions = {}
        for partition in wanted:
            schedule = self.partitions.get(partition)
            progress = (
                None if schedule is None else schedule.progress() if final else schedule.progress_to_commit()
            )
            if progress is not None:
                positions[partition] = progress
        return positions

    def committed(self, partition: int, offset: int) -> None:
        schedule = self.partitions.get(partition)
        if schedule is not None:
            schedule.offsets.committed(offset)
