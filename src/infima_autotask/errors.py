"""The one exception tree; each class carries its SPEC §3 exit code.

The CLI turns any of these into ``Error: <message>`` (plus ``details`` lines indented by
two spaces) on stderr and exits with ``exit_code``. Messages say what is wrong and what to
do next, and never carry a secret, a header or a raw response body.
"""

from __future__ import annotations

from collections.abc import Sequence


class InfimaAutotaskError(Exception):
    """An expected failure whose message tells the user what to do."""

    exit_code = 1
    # The history run this error ended, when `sync` had recorded one: a notification that
    # cannot be delivered is kept with it.
    run_id: int | None = None

    def __init__(self, message: str, details: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.details = list(details)


class UsageError(InfimaAutotaskError):
    """Bad input from the operator: unknown client, wrong mapping chain, bad option value."""

    exit_code = 2


class ConfigError(UsageError):
    """The config file is missing, unreadable or invalid; ``details`` lists every problem."""


class CredentialsError(UsageError):
    """Credentials are missing, or the keyring cannot be used."""


class StateError(UsageError):
    """The state folder (history database, lock) cannot be used."""


class ApiError(InfimaAutotaskError):
    """Autotask or INFIMA could not be reached, or answered with an error."""

    exit_code = 3

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        errors: Sequence[str] = (),
        details: Sequence[str] = (),
    ) -> None:
        super().__init__(message, details)
        self.status = status
        self.errors = list(errors)


class RequestNotSent(ApiError):
    """A request the tool stopped before sending it (Ctrl-C while it waited its turn under
    a rate limit): nothing reached the server."""


class ApiRejected(ApiError):
    """The server answered and refused: a 4xx, or a 500 whose body carries ``errors``.

    A write that ends here was not applied and must never be re-sent.
    """


class AuthenticationError(ApiRejected):
    """The server rejected the credentials (401/403)."""


class ApiUnavailable(ApiError):
    """No usable answer: timeout, connection error, 429, 502/503/504 or a bare 5xx.

    For a write, the outcome is unknown: re-read before anything else.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        errors: Sequence[str] = (),
    ) -> None:
        super().__init__(message, status=status, errors=errors)
        self.retry_after = retry_after


class BadResponseError(ApiError):
    """The server answered 2xx with something the tool cannot use (not JSON, missing fields)."""


class UnsafeUrlError(ApiError):
    """A URL that credentials must not be sent to (plain http off loopback, foreign zone host)."""


class LockHeldError(InfimaAutotaskError):
    """Another ``sync`` holds the lock."""

    exit_code = 3


class ThresholdError(InfimaAutotaskError):
    """Writing would push Autotask API usage over the configured share of the threshold."""

    exit_code = 3


class NotificationError(InfimaAutotaskError):
    """A notification (webhook, e-mail, healthcheck ping) was not delivered.

    Never an exit code of its own: `sync` reports it as a warning, `notify test` as a result.
    """
