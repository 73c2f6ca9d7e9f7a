"""Domain errors of the ledger; the limiter and CLI turn them into HTTP answers and exit codes."""

from __future__ import annotations


class LedgerError(Exception):
    """Base of every error the ledger raises on purpose."""


class NotFoundError(LedgerError):
    pass


class UserNotFound(NotFoundError):
    def __init__(self, username: str) -> None:
        super().__init__(f"user {username!r} does not exist in the ledger")
        self.username = username


class GroupNotFound(NotFoundError):
    def __init__(self, group: str) -> None:
        super().__init__(f"group {group!r} does not exist in the ledger")
        self.group = group


class ModelNotFound(NotFoundError):
    def __init__(self, model: str) -> None:
        super().__init__(f"model {model!r} is not in the ledger (declare it in the policy file "
                         "and apply it)")
        self.model = model


class InvalidValue(LedgerError):
    """A value that breaks a ledger rule (a negative limit, a sub-micro amount, ...)."""
