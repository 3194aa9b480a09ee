"""Settings shared by every command, built once at the CLI edge."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_QUEUE = "task_queue"
QUEUE_TYPES = ("quorum", "classic")


@dataclass(frozen=True)
class TlsFiles:
    """Certificates for amqps:// URLs: the CA to trust, and an optional client certificate."""

    ca_cert: Path | None = None
    client_cert: Path | None = None
    client_key: Path | None = None


@dataclass(frozen=True)
class Settings:
    """Where the broker is, which queue we use, and where logs go."""

    urls: tuple[str, ...] = (DEFAULT_URL,)
    queue: str = DEFAULT_QUEUE
    queue_type: str = "quorum"
    heartbeat: int | None = None  # None: take the broker's (60 s by default)
    log_dir: Path = Path("logs")
    tls: TlsFiles = TlsFiles()
    #: Seconds: the x-consumer-timeout of a work queue we create (RabbitMQ 3.12 and later).
    consumer_timeout: float | None = None
    #: The management API (None: the AMQP URL's host, port + 10000).
    management_url: str | None = None
    #: Broker users whose events a reader of the stream counts, beside its own login.
    trust_users: tuple[str, ...] = ()

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def masked_urls(self) -> str:
        return ",".join(mask_url(u) for u in self.urls)


_USERINFO = re.compile(r"^(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:@/]*):(?P<pw>[^@/]*)@")


def mask_url(url: str) -> str:
    """The URL with its password replaced by ***, safe to print and log."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:***@", url)


def check_url(url: str) -> str:
    """Return url if it looks like an AMQP URL, else raise ValueError saying what is wrong."""
    parts = urlsplit(url)
    if parts.scheme not in ("amqp", "amqps"):
        raise ValueError(
            f"'{mask_url(url)}' is not an AMQP URL; expected amqp://USER:PASSWORD@HOST:PORT/VHOST"
        )
    if not parts.hostname:
        raise ValueError(
            f"'{mask_url(url)}' names no host; expected amqp://USER:PASSWORD@HOST:PORT/VHOST"
        )
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(
            f"'{mask_url(url)}' has a port that is not a number from 1 to 65535"
        ) from None
    return url


def split_urls(values: tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """Expand repeated and comma-separated URLs into one checked tuple."""
    urls = [u.strip() for v in values for u in v.split(",") if u.strip()]
    return tuple(check_url(u) for u in urls) or (DEFAULT_URL,)


def url_host(url: str) -> str:
    """host:port of a URL, for log lines."""
    parts = urlsplit(url)
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    return f"{parts.hostname}:{port}"


def url_vhost(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"
