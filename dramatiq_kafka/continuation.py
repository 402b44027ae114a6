"""Resumable jobs: named steps with cursors that stop at a checkpoint.

A long job is written as steps; a step may keep a cursor (how far it got)::

    from dramatiq_kafka.continuation import Continuation, Step, continuable

    @dramatiq.actor(queue_name="imports")
    @continuable(resume_delay=0)
    def import_file(job: Continuation, path: str) -> None:
        job.step("download", download, path)
        job.step("rows", import_rows, path)
        job.step("notify", notify, path)

    def import_rows(step: Step, path: str) -> None:
        rows = read_rows(path)
        for i in range(step.cursor or 0, len(rows)):
            save(rows[i])
            step.advance(i + 1)  # a checkpoint

When the worker shuts down or the job's partition is revoked, the job stops
at its next checkpoint (``step.advance``, ``step.checkpoint``, or the start
of a step) and is sent again with its progress in the message (the steps
finished, the step it stopped in and its cursor), to run at once or after
``resume_delay`` ms.  The next run skips the finished steps and gives the
interrupted one its cursor back.  A run that fails keeps its progress too:
its retry resumes where it failed.  A crash (``kill -9``) loses only what
was not yet sent again: the record runs again from the progress it carries.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Concatenate, ParamSpec, TypeVar

import dramatiq
import orjson
from dramatiq.logging import get_logger

from .errors import KafkaBrokerError
from .middleware.revocation import current_message, worker_stopping
from .partitions import KafkaMessageProxy

#: The message option that carries a job's progress.
PROGRESS_OPTION = "continuation"

P = ParamSpec("P")
R = TypeVar("R")


class ContinuationError(KafkaBrokerError, ValueError):
    """A continuable job was written in a way that cannot be resumed (a
    cursor that is not JSON, a step name used twice)."""


class Interrupted(BaseException):
    """Raised at a checkpoint when the job must stop.  It is a
    ``BaseException`` so that a step's ``except Exception`` does not swallow
    it; :func:`continuable` catches it and sends the job again."""


@dataclass
class Progress:
    """How far a job got: what travels in the message.

    Attributes:
      finished(list[str]): Names of the steps done, in order.
      step(str): The step it stopped in, if any.
      cursor: That step's cursor (JSON).
      resumptions(int): How many times the job was resumed.
    """

    finished: list[str] = field(default_factory=list)
    step: str | None = None
    cursor: Any = None
    resumptions: int = 0

    @classmethod
    def from_options(cls, options: dict[str, Any]) -> Progress:
        data = options.get(PROGRESS_OPTION)
        if not isinstance(data, dict):
            return cls()
        # Written by other producers too: take what is well-formed, ignore the rest.
        finished, step, resumptions = data.get("finished"), data.get("step"), data.get("resumptions")
        return cls(
            finished=[name for name in finished if isinstance(name, str)]
            if isinstance(finished, list)
            else [],
            step=step if isinstance(step, str) else None,
            cursor=data.get("cursor"),
            resumptions=resumptions if isinstance(resumptions, int) else 0,
        )

    def as_option(self) -> dict[str, Any]:
        return {
            "finished": self.finished,
            "step": self.step,
            "cursor": self.cursor,
            "resumptions": self.resumptions,
        }


class Step:
    """One step of a running job.

    Attributes:
      name(str): The step's name.
      cursor: Where it resumes: what the last :meth:`advance` before an
        interruption gave (``None`` on a first run).
    """

    def __init__(self, job: Continuation, name: str, cursor: Any) -> None:
        self.job = job
        self.name = name
        self.cursor = cursor

    def advance(self, cursor: Any) -> None:
        """Record how far the step got, then check whether the job must stop.

        Raises:
          ContinuationError: When ``cursor`` is not JSON.
          Interrupted: When the worker is stopping or the partition was revoked.
        """
        try:
            orjson.dumps(cursor)
        except TypeError as e:
            raise ContinuationError(
                f"step {self.name!r}: a {type(cursor).__name__} cursor cannot be carried in the message ({e})"
            ) from None
        self.cursor = cursor
        self.job.checkpoint()

    def checkpoint(self) -> None:
        """Stop here if the job must stop (the cursor stays as it is)."""
        self.job.checkpoint()


class Continuation:
    """The steps of one run of a continuable job.

    Parameters:
      message(KafkaMessageProxy): The message being processed, or ``None``
        outside a Kafka worker (the job then runs straight through).
    """

    def __init__(self, message: KafkaMessageProxy | None) -> None:
        self.message = message
        self.progress = Progress.from_options(message.options if message is not None else {})
        #: Whether this run continues an earlier one.
        self.resumed = bool(self.progress.finished or self.progress.step)
        self.current: Step | None = None
        self._seen: set[str] = set()

    def step(
        self, name: str, fn: Callable[Concatenate[Step, P], R], *args: P.args, **kwargs: P.kwargs
    ) -> R | None:
        """Run ``fn(step, *args, **kwargs)`` as the step ``name``, unless an
        earlier run finished it (then return ``None``).

        Raises:
          ContinuationError: When ``name`` was already used in this job.
          Interrupted: When the job must stop before the step starts.
        """
        if name in self._seen:
            raise ContinuationError(f"step {name!r} is used twice in one job: step names must be unique")
        self._seen.add(name)
        if name in self.progress.finished:
            return None
        self.checkpoint()
        cursor = self.progress.cursor if self.progress.step == name else None
        self.current = Step(self, name, cursor)
        result = fn(self.current, *args, **kwargs)
        self.progress.finished.append(name)
        self.current = None
        return result

    def should_stop(self) -> bool:
        """Whether the worker is shutting down or the job's partition was revoked."""
        message = self.message
        return message is not None and (worker_stopping() or message.partition_revoked)

    def checkpoint(self) -> None:
        """Raise :class:`Interrupted` when the job must stop."""
        if self.should_stop():
            raise Interrupted()

    def saved(self) -> Progress:
        """The progress to carry into the next run."""
        current = self.current
        return Progress(
            finished=list(self.progress.finished),
            step=current.name if current is not None else None,
            cursor=current.cursor if current is not None else None,
            resumptions=self.progress.resumptions,
        )


def continuable(fn: Callable[Concatenate[Continuation, P], R] | None = None, *, resume_delay: int = 0) -> Any:
    """Make an actor's function resumable; it gets the :class:`Continuation`
    as its first argument.  Put it under ``@dramatiq.actor``.

    Parameters:
      resume_delay(int): Milliseconds an interrupted job waits before it
        runs again (through the delay topic); 0 sends it back at once.
    """
    if isinstance(resume_delay, bool) or not isinstance(resume_delay, int) or resume_delay < 0:
        raise ContinuationError(f"continuable(resume_delay={resume_delay!r}): must be milliseconds >= 0")

    def decorate(fn: Callable[Concatenate[Continuation, P], R]) -> Callable[P, R | None]:
        if inspect.iscoroutinefunction(fn):
            raise ContinuationError(f"{fn.__name__}: continuable jobs must be plain functions, not async")
        logger = get_logger(__name__, fn.__name__)

        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> R | None:
            message = current_message()
            job = Continuation(message)
            try:
                return fn(job, *args, **kwargs)
            except Interrupted:
                if message is None:
                    raise
                progress = job.saved()
                if not message.partition_owned:
                    # Past the revocation's grace: the partition's new owner
                    # runs this record again; a resumed copy would run beside it.
                    logger.warning("%s stopped after its partition moved on; its new owner runs it.", message)
                    return None
                progress.resumptions += 1
                logger.info(
                    "%s stopped in step %r at cursor %r; it resumes %s.",
                    message,
                    progress.step,
                    progress.cursor,
                    f"in {resume_delay} ms" if resume_delay else "at once",
                )
                resumed = message.copy(options={PROGRESS_OPTION: progress.as_option()})
                try:
                    dramatiq.get_broker().enqueue(resumed, delay=resume_delay or None)
                except BaseException:
                    # Not sent: the job fails, and its retry resumes here.
                    message.options[PROGRESS_OPTION] = job.saved().as_option()
                    raise
                return None
            except BaseException:
                if message is not None:
                    # A retry of this message resumes where this run failed.
                    message.options[PROGRESS_OPTION] = job.saved().as_option()
                raise

        return run

    return decorate if fn is None else decorate(fn)
