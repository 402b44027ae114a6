"""Model-based tests of the partition state machine (``scheduling.py`` and ``outcomes.py``).

Hypothesis drives a :class:`Scheduler` the way the consumer does, with random
interleavings of Kafka's and Dramatiq's events over three partitions: records
produced and fetched, jobs started, succeeding, failing, cut short by a time
limit or an interpreter exit, follow-up sends acknowledged or refused,
backoffs falling due, dead letters acknowledged or refused, partitions
revoked (with jobs finishing during the grace), lost and assigned again, and
commits.  A small reference model (the partitions' logs, the committed
offsets, what ran and how it ended) checks after every step:

* the committed offset never passes a record that has not finished;
* every record of the current assignment is in exactly one state, and the
  scheduler's counters agree with the jobs;
* a paused partition has a wake-up;
* in-flight jobs never exceed the limit; jobs sharing a key never overlap;
  an ordered partition never has two unfinished jobs;
* a job that succeeded never runs again in the same assignment, nor in a later
  one once its end was committed (the commit's progress lists the jobs finished
  past the committed offset); a job starts with at least the failures committed
  for it (its retry count survives a rebalance); in parallel mode a job is
  dead-lettered only for its own failures;
* and once everything succeeds from then on, every partition's watermark and
  committed offset reach its end.
"""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

import pytest
from dramatiq.middleware.time_limit import TimeLimitExceeded
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from dramatiq_kafka.offsets import PartitionProgress
from dramatiq_kafka.outcomes import Requeue, RetryInPlace, ToDeadLetters, decide, is_failure
from dramatiq_kafka.partition_state import IN_FLIGHT, Job, JobState, PartitionSchedule
from dramatiq_kafka.retry_policy import RetryPolicy
from dramatiq_kafka.scheduling import Scheduler

PARTITIONS = (0, 1, 2)
KEYS = (None, b"a", b"b")
MAX_RETRIES = 1
POLICY = RetryPolicy(max_retries=MAX_RETRIES, min_backoff=100, max_backoff=400)
ERRORS = {
    "exception": lambda: RuntimeError("boom"),
    "time limit": lambda: TimeLimitExceeded(),
    "exit": lambda: SystemExit(3),
}


@dataclass
class Record:
    key: bytes | None
    carried_failures: int = 0  # a requeued copy carries its job's failures


@dataclass
class Ledger:
    """What happened to each record, across assignments."""

    finished: set[tuple[int, int]] = field(default_factory=set)
    dead_lettered: Counter[tuple[int, int]] = field(default_factory=Counter)


class PartitionMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.logs: dict[int, list[Record]] = {p: [] for p in PARTITIONS}
        self.committed = {p: PartitionProgress(0) for p in PARTITIONS}
        self.committed_ends: set[tuple[int, int]] = set()  # records some commit said finished
        self.positions: dict[int, int] = {}  # fetch position of assigned partitions
        self.ledger = Ledger()
        self.running: list[Job] = []  # handed to "Dramatiq", not yet acked
        self.awaiting: list[tuple[Job, Record | None]] = []  # sends (or a requeued copy) in flight
        self.writes: list[Job] = []  # dead letters in flight
        self.succeeded_here: set[Job] = set()  # jobs that succeeded (kept alive: no id is reused)
        self.scheduler = Scheduler(limit=2)
        self.requeue = False
        self.hot = False
        # librdkafka's own pause flag: it outlives revocations and assignments.
        self.kafka_paused = dict.fromkeys(PARTITIONS, False)

    @initialize(
        limit=st.sampled_from([1, 2, 4]), ordered=st.booleans(), requeue=st.booleans(), hot=st.booleans()
    )
    def setup(self, limit: int, ordered: bool, requeue: bool, hot: bool) -> None:
        self.scheduler = Scheduler(limit=limit, ordered=ordered, buffer_limit=3)
        self.requeue = requeue
        # One partition takes every record: its jobs run side by side and finish out of order.
        self.hot = hot
        for p in PARTITIONS:
            self._assign(p)

    # -- helpers --------------------------------------------------------------------------------------

    def _assign(self, partition: int) -> None:
        self.scheduler.assign(partition, self.committed[partition])
        self.positions[partition] = self.committed[partition].offset

    def _commit(self, partition: int, progress: PartitionProgress) -> None:
        self.committed[partition] = progress
        self.committed_ends.update(
            (partition, offset) for offset in [*range(progress.offset), *progress.done]
        )

    def _current(self, job: Job) -> bool:
        return self.scheduler.current(job)

    def _update_pauses(self) -> None:
        """What the consumer's pause update tells librdkafka."""
        pause, resume = self.scheduler.pause_changes()
        self.kafka_paused.update(dict.fromkeys(pause, True) | dict.fromkeys(resume, False))

    def _leave(self, partition: int) -> None:
        """What the consumer does as a partition leaves: resume it, then forget it."""
        self.kafka_paused[partition] = False
        self.scheduler.forget(partition)
        del self.positions[partition]

    def _finished(self, job: Job, *, dead: bool = False) -> None:
        self.ledger.finished.add((job.partition, job.offset))
        if dead:
            self.ledger.dead_lettered[(job.partition, job.offset)] += 1

    def _fail(self, job: Job, error: BaseException) -> None:
        """What the consumer's ``_failed`` does with a failed run."""
        if self.requeue:
            carried = self.logs[job.partition][job.offset].carried_failures
            job.failures = max(job.failures, carried)
        if not self.scheduler.failed(job, spent=is_failure(error)):
            return
        outcome = decide(
            POLICY,
            error,
            failures=job.failures,
            failures_in_a_row=job.schedule.failures_in_a_row,
            shared_budget=self.scheduler.ordered,
            requeue=self.requeue,
        )
        if isinstance(outcome, ToDeadLetters):
            if not self.scheduler.ordered:
                assert job.failures >= MAX_RETRIES + 1, "dead-lettered for failures not its own"
            if self.scheduler.dead_lettering(job):  # (more: one handed back as it was written)
                self.writes.append(job)
        elif isinstance(outcome, Requeue):
            if self.scheduler.awaiting_sends(job):
                self.awaiting.append((job, Record(job.key, job.failures)))
        else:
            assert isinstance(outcome, RetryInPlace)
            assert outcome.spent == is_failure(error)
            self.scheduler.retry(job, self.now + outcome.delay / 1000)

    # -- Kafka's events -------------------------------------------------------------------------------

    @rule(partition=st.sampled_from(PARTITIONS), keys=st.lists(st.sampled_from(KEYS), min_size=1, max_size=3))
    def produce(self, partition: int, keys: list[bytes | None]) -> None:
        self.logs[0 if self.hot else partition].extend(Record(key) for key in keys)

    @rule(count=st.integers(1, 4))
    def fetch_all(self, count: int) -> None:
        for partition in PARTITIONS:
            self.fetch(partition, count)

    def fetch(self, partition: int, count: int) -> None:
        schedule = self.scheduler.partitions.get(partition)
        if schedule is None or schedule.revoked or self.kafka_paused[partition]:
            return
        log = self.logs[partition]
        while count and self.positions[partition] < len(log):
            offset = self.positions[partition]
            self.scheduler.fetched(partition, offset, log[offset].key, log[offset])
            self.positions[partition] += 1
            count -= 1

    @rule(
        partition=st.sampled_from(PARTITIONS),
        kind=st.sampled_from(["revoke", "grace over", "lost", "assign", "bounce"]),
    )
    def group_changes(self, partition: int, kind: str) -> None:
        self.rebalance(0 if self.hot else partition, kind)

    @precondition(lambda self: self._finished_past_the_watermark())
    @rule(data=st.data())
    def partition_moves_with_jobs_finished_past_its_watermark(self, data: st.DataObject) -> None:
        """The partition that has jobs finished behind an unfinished one moves (and comes back)."""
        self.rebalance(data.draw(st.sampled_from(self._finished_past_the_watermark())), "bounce")

    def _finished_past_the_watermark(self) -> list[int]:
        return [
            p
            for p, schedule in self.scheduler.partitions.items()
            if not schedule.revoked and (position := schedule.offsets.position()) and position[1]
        ]

    def rebalance(self, partition: int, kind: str) -> None:
        """A revocation starts (jobs in flight may still finish), the grace of every revocation
        ends (a synchronous commit, then the partition is gone), a partition is lost (no
        commit) or assigned, or it bounces: revoked, gone and assigned again at once (a member
        joined and left)."""
        if kind in ("revoke", "bounce"):
            self.scheduler.revoke(partition)
        if kind in ("grace over", "bounce"):
            self.commit()
            for p, schedule in list(self.scheduler.partitions.items()):
                if schedule.revoked:
                    # The last commit before it leaves: its progress in any case.
                    for partition, progress in self.scheduler.commit_positions([p], final=True).items():
                        self._commit(partition, progress)
                    self._leave(p)
        if kind == "lost" and partition in self.scheduler.partitions:
            self._leave(partition)
        if kind in ("assign", "bounce") and partition not in self.scheduler.partitions:
            self._assign(partition)

    def commit(self) -> None:
        for partition, progress in self.scheduler.commit_positions().items():
            self._commit(partition, progress)
            self.scheduler.committed(partition, progress.offset)

    @rule(seconds=st.sampled_from([0.0, 0.05, 0.2, 1.0]))
    def time_passes(self, seconds: float) -> None:
        """Time passes; the consumer's loop commits and writes the dead letters that are due."""
        self.now += seconds
        self.commit()
        self.writes.extend(self.scheduler.dead_letters_due(self.now))

    @precondition(lambda self: self.writes)
    @rule(data=st.data(), delivered=st.booleans())
    def dead_letter_reported(self, data: st.DataObject, delivered: bool) -> None:
        job = self.writes.pop(data.draw(st.integers(0, len(self.writes) - 1)))
        if delivered:
            if self.scheduler.dead_lettered(job):
                self._finished(job, dead=True)
        else:
            self.scheduler.dead_letter_refused(job, self.now + 1.0)

    @precondition(lambda self: self.awaiting)
    @rule(data=st.data(), delivered=st.booleans())
    def sends_reported(self, data: st.DataObject, delivered: bool) -> None:
        job, copy = self.awaiting.pop(data.draw(st.integers(0, len(self.awaiting) - 1)))
        if delivered:
            if copy is not None:
                self.logs[job.partition].append(copy)
            if self.scheduler.succeeded(job):
                self._finished(job)
                self.succeeded_here.add(job)
        elif copy is not None:  # the requeued copy was refused: retry in place
            self.scheduler.retry(job, self.now + 0.1)
        else:
            self._fail(job, RuntimeError("follow-up refused"))

    # -- Dramatiq's events ----------------------------------------------------------------------------

    @rule(count=st.integers(1, 3))
    def start(self, count: int) -> None:
        for _ in range(count):
            job = self.scheduler.next_job(self.now)
            if job is None:
                return
            self.running.append(job)  # first: a failed check must not strand it for the teardown
            assert job not in self.succeeded_here, f"{job} ran again after it succeeded"
            assert (job.partition, job.offset) not in self.committed_ends, (
                f"{job} ran again after its end was committed"
            )
            committed_failures = self.committed[job.partition].failures.get(job.offset, 0)
            assert job.failures >= committed_failures, (
                f"{job} forgot {committed_failures} committed failure(s)"
            )
            assert not job.schedule.revoked

    @precondition(lambda self: self.running)
    @rule(data=st.data(), with_sends=st.booleans())
    def job_succeeds(self, data: st.DataObject, with_sends: bool) -> None:
        job = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        if with_sends:
            if self.scheduler.awaiting_sends(job):
                self.awaiting.append((job, None))
        elif self.scheduler.succeeded(job):
            self._finished(job)
            self.succeeded_here.add(job)

    @precondition(lambda self: any(self._behind_another(job) for job in self.running))
    @rule(data=st.data())
    def job_behind_another_succeeds(self, data: st.DataObject) -> None:
        """A job finishes while one before it in its partition has not (threads end in any order)."""
        job = data.draw(st.sampled_from([job for job in self.running if self._behind_another(job)]))
        self.running.remove(job)
        if self.scheduler.succeeded(job):
            self._finished(job)
            self.succeeded_here.add(job)

    def _behind_another(self, job: Job) -> bool:
        return self._current(job) and any(offset < job.offset for offset in job.schedule.jobs)

    @precondition(lambda self: self.running)
    @rule(data=st.data(), kind=st.sampled_from(sorted(ERRORS)))
    def job_fails(self, data: st.DataObject, kind: str) -> None:
        job = self.running.pop(data.draw(st.integers(0, len(self.running) - 1)))
        if self._current(job):
            self._fail(job, ERRORS[kind]())

    @precondition(lambda self: len(self.running) > 1)
    @rule(kind=st.sampled_from(sorted(ERRORS)))
    def downstream_outage(self, kind: str) -> None:
        """A service every job calls goes away: all running jobs fail at once."""
        running, self.running = self.running, []
        for job in running:
            if self._current(job):
                self._fail(job, ERRORS[kind]())

    @precondition(lambda self: any(job.schedule.revoked for job in self.running))
    @rule(data=st.data())
    def job_sees_revoked(self, data: st.DataObject) -> None:
        revoked = [job for job in self.running if job.schedule.revoked]
        job = data.draw(st.sampled_from(revoked))
        self.running.remove(job)
        self.scheduler.hand_back(job)

    # -- invariants -----------------------------------------------------------------------------------

    @invariant()
    def committed_never_passes_an_unfinished_record(self) -> None:
        unfinished = self.committed_ends - self.ledger.finished
        assert not unfinished, f"commits said unfinished records {sorted(unfinished)} were finished"

    @invariant()
    def every_record_is_in_exactly_one_state(self) -> None:
        for partition, schedule in self.scheduler.partitions.items():
            buffered = [job.offset for job in schedule.buffer]
            started = list(schedule.jobs)
            assert all(job.state is JobState.BUFFERED for job in schedule.buffer)
            assert not set(buffered) & set(started)
            assert all(
                job.state not in (JobState.BUFFERED, JobState.FINISHED, JobState.HANDED_BACK)
                for job in schedule.jobs.values()
            )
            watermark = schedule.offsets.watermark
            for offset in buffered + started:
                assert offset >= watermark, f"{partition}@{offset} unfinished below watermark {watermark}"
            states = Counter(job.state for job in schedule.jobs.values())
            assert schedule.in_flight == sum(states[s] for s in IN_FLIGHT)
            assert schedule.retries_waiting == states[JobState.WAITING_RETRY]
            assert schedule.dead_letters_pending == states[JobState.DEAD_LETTERING]
            for job in schedule.jobs.values():
                if job.state is JobState.RUNNING:
                    assert job in self.running
                elif job.state is JobState.AWAITING_SENDS:
                    assert any(j is job for j, _ in self.awaiting)
                elif job.state is JobState.WAITING_RETRY:
                    assert job.due is not None, "a retry without a due time"
                elif job.state is JobState.DEAD_LETTERING:
                    assert (job.due is None) == (job in self.writes), "a dead letter neither written nor due"

    @invariant()
    def a_paused_partition_has_a_wake_up(self) -> None:
        self._update_pauses()
        can_start = self.scheduler.can_start(self.now)
        for schedule in self.scheduler.partitions.values():
            if schedule.revoked or not schedule.paused:
                continue
            assert (
                schedule.retries_waiting
                or schedule.dead_letters_pending
                or (schedule.buffer and (self.scheduler.in_flight or can_start))
            ), f"partition {schedule.partition} paused with nothing to wake it"

    @invariant()
    def limits_keys_and_order_hold(self) -> None:
        assert self.scheduler.in_flight == sum(s.in_flight for s in self.scheduler.partitions.values())
        assert self.scheduler.in_flight <= self.scheduler.limit
        for schedule in self.scheduler.partitions.values():
            keys = Counter(job.key for job in schedule.jobs.values() if job.state in IN_FLIGHT and job.key)
            assert all(count == 1 for count in keys.values()), f"same-key jobs overlap: {keys}"
            if self.scheduler.ordered:
                assert len(schedule.jobs) <= 1, "an ordered partition runs two jobs"

    # -- liveness -------------------------------------------------------------------------------------

    @rule()
    def everything_succeeds_from_now_on(self) -> None:
        for partition in PARTITIONS:
            self.rebalance(partition, "grace over")
            self.rebalance(partition, "assign")
        for _ in range(200):
            for job, copy in self.awaiting:
                if copy is not None:
                    self.logs[job.partition].append(copy)
                if self.scheduler.succeeded(job):
                    self._finished(job)
            self.awaiting.clear()
            for job in self.writes:
                if self.scheduler.dead_lettered(job):
                    self._finished(job, dead=True)
            self.writes.clear()
            for job in self.running:
                if self.scheduler.succeeded(job):
                    self._finished(job)
            self.running.clear()
            self._update_pauses()
            for partition in PARTITIONS:
                self.fetch(partition, 10)
            while (job := self.scheduler.next_job(self.now)) is not None:
                self.running.append(job)
            self.writes.extend(self.scheduler.dead_letters_due(self.now))
            self.now += 60.0
            done = all(
                self.scheduler.partitions[p].offsets.watermark == len(self.logs[p]) or not self.logs[p]
                for p in PARTITIONS
            )
            if done and not (self.running or self.awaiting or self.writes):
                break
        self.commit()
        for partition in PARTITIONS:
            assert self.committed[partition].offset == len(self.logs[partition]), (
                f"partition {partition} stuck at {self.committed[partition]} of {len(self.logs[partition])}"
            )

    def teardown(self) -> None:
        # Every run ends with the liveness check, wherever its steps left it.
        self.everything_succeeds_from_now_on()


PartitionMachine.TestCase.settings = settings(
    max_examples=300,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPartitionMachine = PartitionMachine.TestCase


# -- the model finds the defects of the consumer it replaced --------------------------------------
#
# Each mutant puts one rule of the old consumer (2883afe) back into the state machine; the model
# must find a failing interleaving for every one of them, or it proves nothing.


def _one_retry_slot(self: Scheduler, job: Job, due: float) -> bool:
    # Defect 1: a partition kept one pending retry; a second failure overwrote the first.
    for other in job.schedule.jobs_in(JobState.WAITING_RETRY):
        del job.schedule.jobs[other.offset]
        job.schedule.retries_waiting -= 1
    return ORIGINAL_RETRY(self, job, due)


def _paused_flag_starts_false(
    self: Scheduler, partition: int, carried: PartitionProgress | None = None
) -> PartitionSchedule:
    # Defect 2: a new assignment believed its partition resumed, and nothing resumed it.
    schedule = ORIGINAL_ASSIGN(self, partition, carried)
    schedule.paused = False
    return schedule


def _no_resume_on_leaving(self: PartitionMachine, partition: int) -> None:
    self.scheduler.forget(partition)
    del self.positions[partition]


def _cut_short_is_abandoned(self: PartitionMachine, job: Job, error: BaseException) -> None:
    # Defect 3: a BaseException (time limit, SystemExit) left the job unfinished for good.
    if isinstance(error, Exception):
        ORIGINAL_FAIL(self, job, error)
    else:
        job.schedule.leave(job, JobState.HANDED_BACK)


# Defect 6: a new owner started from the committed offset alone: the jobs finished past a job
# waiting for its retry ran again (6a: the model finds it only after thousands of examples, and
# not with every seed, so test_a_new_owner_skips_... below shows it), and the waiting job's
# retry count started over (6b).
def _failures_dropped(
    self: Scheduler, partition: int, carried: PartitionProgress | None = None
) -> PartitionSchedule:
    return ORIGINAL_ASSIGN(self, partition, carried and PartitionProgress(carried.offset, carried.done))


def _shared_failures_in_a_row_everywhere(
    policy: RetryPolicy, error: BaseException, *, shared_budget: bool, **counts: int
) -> object:
    # Defect 5: the partition's failures in a row were the budget in parallel mode too.
    return ORIGINAL_DECIDE(policy, error, shared_budget=True, **counts)


ORIGINAL_RETRY = Scheduler.retry
ORIGINAL_ASSIGN = Scheduler.assign
ORIGINAL_FAIL = PartitionMachine._fail
ORIGINAL_DECIDE = decide


@pytest.mark.parametrize(
    "mutants",
    [
        [(Scheduler, "retry", _one_retry_slot)],
        [
            (Scheduler, "assign", _paused_flag_starts_false),
            (PartitionMachine, "_leave", _no_resume_on_leaving),
        ],
        [(PartitionMachine, "_fail", _cut_short_is_abandoned)],
        [(sys.modules[__name__], "decide", _shared_failures_in_a_row_everywhere)],
        [(Scheduler, "assign", _failures_dropped)],
    ],
    ids=[
        "defect-1-retry-overwritten",
        "defect-2-paused-after-rebalance",
        "defect-3-cut-short",
        "defect-5-shared-budget",
        "defect-6b-retry-count-lost-at-a-rebalance",
    ],
)
def test_the_model_finds_the_old_consumers_defects(
    monkeypatch: pytest.MonkeyPatch, mutants: list[tuple[object, str, object]]
) -> None:
    for owner, name, replacement in mutants:
        monkeypatch.setattr(owner, name, replacement)
    case = PartitionMachine.TestCase
    monkeypatch.setattr(
        case,
        "settings",
        settings(case.settings, max_examples=5000, database=None, phases=[Phase.generate], derandomize=True),
    )
    with pytest.raises((AssertionError, ExceptionGroup)) as raised:
        case().runTest()
    # Hypothesis groups distinct failures; an invariant must be among them, not a crash.
    if isinstance(raised.value, ExceptionGroup):
        assert raised.value.subgroup(AssertionError) is not None, raised.value


def test_a_paused_partition_says_why() -> None:
    scheduler = Scheduler(limit=2, buffer_limit=2)
    schedule = scheduler.assign(0)
    for offset in range(3):
        scheduler.fetched(0, offset, None, None)
    assert scheduler.pause_changes() == ([0], [])
    assert schedule.pause_reason(0.0) == "3 records buffered"
    job = scheduler.next_job(0.0)
    assert job is not None and scheduler.failed(job, spent=True)
    scheduler.retry(job, 1.5)
    assert schedule.pause_reason(1.0) == "offset 0 waits for retry 1 (due in 0.5s)"
    assert scheduler.next_job(1.0) is None, "nothing new starts while a retry waits"
    assert scheduler.next_job(1.5) is job
    scheduler.dead_lettering(job)
    assert schedule.pause_reason(2.0) == "offset 0 is being dead-lettered"
    scheduler.dead_lettered(job)
    assert schedule.offsets.watermark == 1


def test_a_new_owner_skips_what_was_finished_behind_a_waiting_retry_and_keeps_its_count() -> None:
    """A rebalance while a partition waits for a retry: the jobs that finished behind the
    waiting one do not run again, and the waiting one carries on with its retry count."""
    old = Scheduler(limit=3)
    old.assign(0)
    for offset in range(4):
        old.fetched(0, offset, None, None)
    first, second, third = (old.next_job(0.0) for _ in range(3))
    assert first and second and third
    assert old.failed(first, spent=True) and old.retry(first, due=5.0)
    assert old.succeeded(second) and old.succeeded(third)
    old.revoke(0)
    progress = old.partitions[0].progress()
    assert progress == PartitionProgress(0, done=(1, 2), failures={0: 1})

    new = Scheduler(limit=3)
    new.assign(0, progress)
    jobs = [new.fetched(0, offset, None, None) for offset in range(4)]
    assert [job and job.offset for job in jobs] == [0, None, None, 3]
    started = [new.next_job(0.0), new.next_job(0.0)]
    assert [(job.offset, job.failures) for job in started if job] == [(0, 1), (3, 0)]
    for job in started:
        assert job and new.succeeded(job)
    assert new.commit_positions() == {0: PartitionProgress(4)}
