"""Only the owner of a stored answer may name it (retrieve, delete, cancel or continue it).

The ledger's `response_owners` table is the record (written with each answer's usage record,
so it survives like usage does). The writer commits records a moment after the answer went out
(`record_linger_seconds`), while an agent may name the answer in its very next request, so the
ids this process relayed recently are also kept in memory until they are surely committed.
"""

from __future__ import annotations

from collections import OrderedDict

from sqlalchemy.ext.asyncio import AsyncEngine

from ledger.response_owners import owner_of
from ledger.schema import ANSWER_ID_LENGTH
from limiter.database import autocommitted
from limiter.relay.dialects.base import Dialect

# Recently relayed ids kept in memory: far more than a writer's backlog between two commits.
RECENT_ANSWERS = 4096


class AnswerOwners:
    """Whose each answer id is: the ids this process relayed lately, then the ledger."""

    def __init__(self, engine: AsyncEngine, timeout_s: float,
                 capacity: int = RECENT_ANSWERS) -> None:
        self._engine = engine
        self._timeout = timeout_s
        self._capacity = capacity
        self._recent: OrderedDict[str, int] = OrderedDict()

    @staticmethod
    def storable(answer_id: str | None) -> str | None:
        """The id if the ledger can hold it (a longer one is not the provider's)."""
        return answer_id if answer_id and len(answer_id) <= ANSWER_ID_LENGTH else None

    def remember(self, answer_id: str, user_id: int) -> None:
        """An answer this process just relayed to `user_id` (its record is on its way)."""
        self._recent.setdefault(answer_id, user_id)
        if len(self._recent) > self._capacity:
            self._recent.popitem(last=False)

    async def check(self, answer_id: str, user_id: int, dialect: Dialect) -> None:
        """Pass if `user_id` owns `answer_id`; else the dialect's 404 (another user's answer
        and one the gateway never relayed look the same)."""
        owner = self._recent.get(answer_id)
        if owner is None and self.storable(answer_id) is not None:
            owner = await autocommitted(self._engine, self._timeout, owner_of, answer_id)
        if owner != user_id:
            raise dialect.not_found(answer_id)
