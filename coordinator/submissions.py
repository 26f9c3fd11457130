"""Group commit of SubmitWithdrawal: the submissions waiting at one moment share one transaction.

A caller queues its checked request and waits. One caller at a time is the writer: it takes
every queued request (up to ``MAX_BATCH``), and in one transaction looks them all up by (client,
request id) in one query, admits the new ones in order against one budget
(``coordinator.admission``: a refused one is answered with its refusal and stored nowhere),
inserts the admitted ones in one statement (and their first events in
another) and builds every answer; after the commit it hands each caller
its answer and the next waiting caller, if any, writes the next batch. Nobody answers before
the commit that made their withdrawal durable, and idempotency is exactly that of one
transaction per request: a request id already stored (or stored earlier in the same batch)
returns the stored withdrawal. If a batch's transaction fails (another coordinator process
stored one of its request ids at the same moment, say), each of its requests is retried in a
transaction of its own, so that one failure is never another caller's.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection, Engine
from sqlalchemy.exc import IntegrityError

from coordinator import views
from coordinator.admission import Budget
from coordinator.config import PoolConfig
from coordinator.crash_points import AFTER_WITHDRAWAL_STORED, crash_point
from coordinator.store import withdrawals as wstore
from coordinator.store.schema import transaction
from coordinator.validation import WithdrawalBody
from vpool.rpc import RpcFailure
from vpool.v1 import coordinator_pb2

log = logging.getLogger(__name__)

MAX_BATCH = 256
"""Submissions written in one transaction at most."""

Answer = tuple[wstore.Withdrawal, coordinator_pb2.Withdrawal]


@dataclass
class _Waiting:
    client_id: str
    body: WithdrawalBody
    answer: Answer | None = None
    error: BaseException | None = None
    done: bool = field(default=False)


class SubmissionWriter:
    """Stores submissions in batches; ``submit`` returns once its own is committed."""

    def __init__(
        self,
        engine: Engine,
        pool: PoolConfig,
        clock: Callable[[], float],
        notify: Callable[[], None],
    ) -> None:
        self._engine = engine
        self._pool = pool
        self._clock = clock
        self._notify = notify
        self._cond = threading.Condition()
        self._queue: list[_Waiting] = []
        self._writing = False

    def submit(self, client_id: str, body: WithdrawalBody) -> Answer:
        """The stored withdrawal of ``(client_id, body.request_id)`` and its message, inserting
        it when there is none."""
        me = _Waiting(client_id, body)
        with self._cond:
            self._queue.append(me)
        while True:
            with self._cond:
                while not me.done and self._writing:
                    self._cond.wait()
                if me.done:
                    return _result(me)
                self._writing = True
                batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
            try:
                self._write(batch)
            finally:
                with self._cond:
                    self._writing = False
                    self._cond.notify_all()

    def _write(self, batch: list[_Waiting]) -> None:
        created: list[_Waiting] = []
        try:
            with transaction(self._engine) as conn:
                answers = self._store(conn, batch, created)
        except IntegrityError:
            created.clear()
            answers = self._one_by_one(batch, created)
        except Exception as e:  # the database failed: every caller of the batch hears it
            answers = [e for _ in batch]
        if created:
            crash_point(AFTER_WITHDRAWAL_STORED)
        for waiting, answer in zip(batch, answers, strict=True):
            if isinstance(answer, BaseException):
                waiting.error = answer
            else:
                waiting.answer = answer
            waiting.done = True
        for waiting in created:
            log.info("client %s: withdrawal %r queued", waiting.client_id, waiting.body.request_id)
        if created:
            self._notify()

    def _store(
        self, conn: Connection, batch: list[_Waiting], created: list[_Waiting]
    ) -> list[Answer | BaseException]:
        """One lookup of every key, one insert of the new ones (each key once), the answers."""
        keys = [(w.client_id, w.body.request_id) for w in batch]
        stored = wstore.get_by_requests(conn, keys)
        new: dict[tuple[str, str], _Waiting] = {}
        refused: dict[tuple[str, str], RpcFailure] = {}
        budget: Budget | None = None
        for key, waiting in zip(keys, batch, strict=True):
            if key in stored or key in new or key in refused:
                continue
            budget = budget or Budget(conn, self._pool)
            try:
                budget.take(waiting.body.amount, waiting.body.extra_fee)
            except RpcFailure as e:  # admission (coordinator.admission): nothing stored
                refused[key] = e
                continue
            new[key] = waiting
        inserted = wstore.insert_withdrawals(
            conn,
            [
                wstore.NewWithdrawal(
                    w.client_id,
                    w.body.request_id,
                    w.body.address,
                    w.body.script_pubkey,
                    w.body.amount,
                    w.body.extra_fee,
                )
                for w in new.values()
            ],
            self._clock(),
        )
        stored.update(zip(new, inserted, strict=True))
        created += new.values()
        viewer = views.WithdrawalViews(conn)
        return [
            refused[key] if key in refused else (stored[key], viewer.message(stored[key]))
            for key in keys
        ]

    def _one_by_one(
        self, batch: list[_Waiting], created: list[_Waiting]
    ) -> list[Answer | BaseException]:
        """Each request in a transaction of its own (after a batch failed)."""
        answers: list[Answer | BaseException] = []
        for waiting in batch:
            try:
                answers.append(self._single(waiting, created))
            except IntegrityError:
                # The same request id was stored by another process in the meantime.
                try:
                    answers.append(self._single(waiting, created))
                except Exception as e:
                    answers.append(e)
            except Exception as e:
                answers.append(e)
        return answers

    def _single(self, waiting: _Waiting, created: list[_Waiting]) -> Answer:
        mine: list[_Waiting] = []
        with transaction(self._engine) as conn:
            (answer,) = self._store(conn, [waiting], mine)
        created += mine
        if isinstance(answer, BaseException):
            raise answer
        return answer


def _result(waiting: _Waiting) -> Answer:
    if waiting.error is not None:
        raise waiting.error
    assert waiting.answer is not None
    return waiting.answer
