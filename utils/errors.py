"""The failures we know about, each with a hint and a named exit code."""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    """Exit codes shared by every command; docs/EXIT_CODES.md says which and what to do."""

    OK = 0
    #: nothing to do (an empty CSV), or `tasks report` found tasks missing
    NOTHING_DONE = 1
    #: bad input or options: nothing was sent
    BAD_INPUT = 2
    #: the broker could not be reached, went away longer than we wait, or refused a message
    BROKER_UNAVAILABLE = 3
    #: the broker refused our credentials or the vhost
    ACCESS_REFUSED = 4
    #: the queue exists in a shape we cannot use safely
    QUEUE_MISMATCH = 5
    #: the broker closed our channel for a reason we cannot recover from
    CHANNEL_CLOSED = 6
    #: a cold stop (second Ctrl+C): the current task went back to the queue
    COLD_STOP = 130


class TaskToolError(Exception):
    """An error with one line saying what went wrong and one saying what to do."""

    exit_code: ExitCode = ExitCode.BAD_INPUT

    def __init__(self, message: str, hint: str = "") -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class BadInput(TaskToolError):
    exit_code = ExitCode.BAD_INPUT


class NothingToDo(TaskToolError):
    exit_code = ExitCode.NOTHING_DONE


class BrokerUnavailable(TaskToolError):
    exit_code = ExitCode.BROKER_UNAVAILABLE


class AccessRefused(TaskToolError):
    exit_code = ExitCode.ACCESS_REFUSED


class QueueMismatch(TaskToolError):
    exit_code = ExitCode.QUEUE_MISMATCH


class ChannelClosed(TaskToolError):
    exit_code = ExitCode.CHANNEL_CLOSED


class QueueNotFound(ChannelClosed):
    """The broker closed the channel with 404: the queue is not there (any more)."""


class ConnectionLost(TaskToolError):
    """The connection or channel went away mid-run; callers may reconnect.

    The message says why in plain words; `reply_code` is the broker's code when the broker
    closed it (320 shutdown or an operator, 406 consumer_timeout, 404 queue gone), else None.
    `consumer_timeout` is the broker's timeout in seconds (0.0 if it named none) when it
    closed the channel because a delivery went unacknowledged that long, else None.
    """

    exit_code = ExitCode.BROKER_UNAVAILABLE

    def __init__(
        self,
        message: str,
        hint: str = "",
        reply_code: int | None = None,
        *,
        consumer_timeout: float | None = None,
    ) -> None:
        super().__init__(message, hint)
        self.reply_code = reply_code
        self.consumer_timeout = consumer_timeout


class BlockedTooLong(ConnectionLost):
    """The broker blocked our publishing connection (a memory or disk alarm) for longer
    than we wait (emit's --blocked-timeout), so the connection was closed."""


class PublishRefused(TaskToolError):
    """The broker did not take a confirmed publish: it nacked it, or returned it unroutable."""

    exit_code = ExitCode.BROKER_UNAVAILABLE
