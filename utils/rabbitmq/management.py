"""The broker's management API, where it answers: what AMQP cannot tell.

`tasks status` reads the unacked count and rates here; declare_queue sets our policy
here; `work` and `tasks status` read a queue's arguments and the policy in force, to say
whether an existing queue has a dead-letter target (queues.queue_warnings). Nothing here
is required: a broker without the management plugin gets a plain note instead. It knows
the API, not the shape of our queues (utils/rabbitmq/queues.py), and speaks no AMQP.
"""

from __future__ import annotations

import base64
import contextlib
import json
import re
import shlex
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from utils.settings import mask_url, url_vhost

#: Seconds we give the management API to answer before saying it did not.
MANAGEMENT_TIMEOUT = 2.0
#: The management plugin listens on the AMQP port plus this (RabbitMQ's 5672 and 15672;
#: our nodes too, see scripts/broker).
MANAGEMENT_PORT_OFFSET = 10000


class ManagementUnavailable(Exception):
    """The management API did not answer, or answered with something we cannot use."""


def policy_name(queue: str) -> str:
    """The name of the policy we set on a work queue: `<queue>-tasks`."""
    return f"{queue}-tasks"


def default_management_url(amqp_url: str) -> str:
    """http://HOST:(AMQP port + 10000)/ with the AMQP URL's user and password."""
    parts = urlsplit(amqp_url)
    port = (parts.port or 5672) + MANAGEMENT_PORT_OFFSET
    userinfo = f"{parts.username or 'guest'}:{parts.password or 'guest'}@"
    return urlunsplit(("http", f"{userinfo}{parts.hostname}:{port}", "/", "", ""))


def fetch_json(base_url: str, path: str, credentials_from: str = "") -> dict[str, Any]:
    """GET base_url + path as a JSON object, with the base URL's credentials (else
    credentials_from's)."""
    data = _get(base_url, path, credentials_from)
    if not isinstance(data, dict):
        raise ManagementUnavailable("the answer was not a JSON object")
    return data


def _get(base_url: str, path: str, credentials_from: str = "") -> Any:
    return _request("GET", base_url, path, credentials_from)


def _request(
    method: str, base_url: str, path: str, credentials_from: str = "", body: Any = None
) -> Any:
    """One call to the API: its JSON answer (None when it answered with no body)."""
    parts = urlsplit(base_url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ManagementUnavailable("not an http(s) URL")
    creds = parts if parts.username else urlsplit(credentials_from)
    user, password = unquote(creds.username or "guest"), unquote(creds.password or "guest")
    netloc = parts.hostname + (f":{parts.port}" if parts.port else "")
    base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/") + "/", "", ""))
    data = None if body is None else json.dumps(body).encode("utf-8")
    request = urllib.request.Request(base + path, data=data, method=method)
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT) as response:
            text = response.read().decode("utf-8")
            return json.loads(text) if text.strip() else None
    except urllib.error.HTTPError as exc:
        raise ManagementUnavailable(f"HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise ManagementUnavailable(str(exc.reason)) from None
    except (OSError, ValueError) as exc:
        raise ManagementUnavailable(f"{type(exc).__name__}: {exc}") from None


@dataclass
class QueueSettings:
    """A queue's arguments and the policy in force on it, as the management API says."""

    answered: bool
    note: str = ""  # why it did not answer
    arguments: dict[str, Any] = field(default_factory=dict)
    policy: dict[str, Any] = field(default_factory=dict)  # the definition in force

    def setting(self, key: str) -> Any:
        """A setting (without its x- prefix) from the queue's arguments, else its policy.

        (An argument wins over a policy for the keys we look at.)
        """
        if f"x-{key}" in self.arguments:
            return self.arguments[f"x-{key}"]
        return self.policy.get(key)


def queue_settings(amqp_url: str, queue: str, management_url: str | None) -> QueueSettings:
    """Ask the management API about a queue; never raises."""
    api = management_url or default_management_url(amqp_url)
    vhost = quote(url_vhost(amqp_url), safe="")
    try:
        data = fetch_json(api, f"api/queues/{vhost}/{quote(queue, safe='')}", amqp_url)
    except ManagementUnavailable as exc:
        return QueueSettings(False, f"the management API at {mask_url(api)} did not answer ({exc})")
    found = QueueSettings(True, arguments=dict(data.get("arguments") or {}))
    found.policy = dict(data.get("effective_policy_definition") or {})
    if not found.policy:
        # The queue's own record of its policy is refreshed every few seconds; the list of
        # policies is not, so a policy set a moment ago shows there first.
        # (A user without the policymaker tag may not list them.)
        with contextlib.suppress(ManagementUnavailable):
            found.policy = _policy_in_force(_get(api, f"api/policies/{vhost}", amqp_url), queue)
    return found


def _policy_in_force(policies: Any, queue: str) -> dict[str, Any]:
    """The definition of the policy that applies to a quorum queue: of those whose pattern
    matches its name, the one with the highest priority."""
    return _policy_applying(policies, queue)[1]


def _policy_applying(policies: Any, queue: str) -> tuple[str, dict[str, Any]]:
    """(name, definition) of the policy that applies to a quorum queue: of those whose
    pattern matches its name, the one with the highest priority; ("", {}) when none does."""
    best: dict[str, Any] = {}
    best_name = ""
    top = None
    for p in policies if isinstance(policies, list) else []:
        if not isinstance(p, dict) or p.get("apply-to") not in ("all", "queues", "quorum_queues"):
            continue
        try:
            if not re.search(str(p.get("pattern", "")), queue):
                continue
        except re.error:
            continue
        priority = p.get("priority", 0)
        if top is None or (isinstance(priority, int) and priority > top):
            top, best = priority, dict(p.get("definition") or {})
            best_name = str(p.get("name", ""))
    return best_name, best


@dataclass(frozen=True)
class PolicyOutcome:
    """Whether a policy gives a new quorum work queue its dead-letter settings."""

    #: True: a policy in force (ours, just set, or the user's own) dead-letters for the
    #: queue, so the queue is declared with x-queue-type alone, as the tutorial declares it.
    in_force: bool
    #: Why not, in a few words, when not; which policy, when it is the user's.
    note: str = ""


def ensure_task_policy(
    amqp_url: str, queue: str, definition: dict[str, Any], management_url: str | None
) -> PolicyOutcome:
    """Set our policy `<queue>-tasks` (this queue only) before the queue is created; never raises.

    One policy applies to a queue at a time, so a policy of the user's that already
    matches the name is left alone: if it names a dead-letter target, that serves; if it
    does not, ours would displace it, so none is set and the caller declares the
    dead-letter settings as arguments instead (docs/DESIGN.md).
    """
    api = management_url or default_management_url(amqp_url)
    vhost = quote(url_vhost(amqp_url), safe="")
    ours = policy_name(queue)
    try:
        policies = _get(api, f"api/policies/{vhost}", amqp_url)
    except ManagementUnavailable as exc:
        return PolicyOutcome(False, f"the management API at {mask_url(api)} did not answer ({exc})")
    name, found = _policy_applying(policies, queue)
    if name and name != ours:
        if found.get("dead-letter-exchange") is not None:
            return PolicyOutcome(True, f"policy '{name}' gives it a dead-letter target")
        return PolicyOutcome(
            False,
            f"policy '{name}' applies to it and names no dead-letter target; ours would "
            "displace it",
        )
    body = {"pattern": f"^{re.escape(queue)}$", "definition": definition, "apply-to": "queues"}
    try:
        _request("PUT", api, f"api/policies/{vhost}/{quote(ours, safe='')}", amqp_url, body)
    except ManagementUnavailable as exc:
        why = str(exc)
        if why.startswith(("HTTP 401", "HTTP 403")):
            user = unquote(urlsplit(amqp_url).username or "guest")
            why = f"user '{user}' may not set policies: it needs the policymaker tag ({why})"
        return PolicyOutcome(False, f"the policy could not be set: {why}")
    return PolicyOutcome(True)


def policy_command(queue: str, vhost: str, definition: dict[str, Any]) -> str:
    """The rabbitmqctl command that sets this policy on this one queue (and no other)."""
    where = "" if vhost == "/" else f"-p {shlex.quote(vhost)} "
    return (
        f"rabbitmqctl set_policy {where}{shlex.quote(policy_name(queue))} "
        f"{shlex.quote('^' + re.escape(queue) + '$')} "
        f"{shlex.quote(json.dumps(definition, separators=(',', ':')))} --apply-to queues"
    )
