"""`mox members list|add ID|remove ID`: cluster membership for operators.

A thin client of the admin API (`GET/POST /api/admin/members`, docs/api.md). Any node's URL
will do: a change sent to a follower is forwarded to the leader. A change is idempotent
(adding a member or removing a non-member answers 200 with `alreadyApplied`), so the command
retries what may or may not have gone through (503: no leader yet, outcome unknown, a change
in progress) until `--wait` runs out. An unreachable node, a refused change or a wait that
ran out is one line on stderr and exit code 1; bad flags exit 2 naming the flag.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Final

import click

from mox.errors import MoxError

__all__ = ["command"]

ADMIN_TOKEN_ENV: Final = "MOX_ADMIN_TOKEN"
# One HTTP exchange: the node answers a change once it commits (its own request timeout).
HTTP_TIMEOUT_S: Final = 30.0
RETRY_PAUSE_S: Final = 0.5
# 409 CHANGE_IN_PROGRESS resolves by itself once the pending entry commits: worth retrying.
RETRYABLE_CODES: Final = frozenset({"CHANGE_IN_PROGRESS"})
_SOURCES: Final = {
    "log": "the log",
    "snapshot": "the snapshot",
    "initial": "cluster.nodes at the node's first start",
    "joining": "join mode: this node waits to be added and is a member of nothing yet",
}


class MembersError(MoxError):
    """The node could not be reached, or refused or did not finish the request."""


def _check_url(_ctx: click.Context, _param: click.Parameter, value: str) -> str:
    parsed = urllib.parse.urlsplit(value)
    if parsed.scheme not in ("http", "https") or not parsed.netloc:
        raise click.BadParameter(f"must be http://HOST:PORT or https://HOST:PORT, got {value!r}")
    return value.rstrip("/")


def _check_token(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str:
    if not value:
        raise click.BadParameter(f"is required (or set the environment variable {ADMIN_TOKEN_ENV})")
    return value


def _options(function: Any) -> Any:
    function = click.option(
        "--wait",
        "wait_s",
        type=click.FloatRange(min=0),
        default=60.0,
        show_default=True,
        help="Seconds to keep retrying while the cluster has no leader or a change is pending.",
    )(function)
    function = click.option(
        "--admin-token",
        envvar=ADMIN_TOKEN_ENV,
        callback=_check_token,
        help=f"The cluster's admin token (default: ${ADMIN_TOKEN_ENV}).",
    )(function)
    function = click.option(
        "--url",
        required=True,
        callback=_check_url,
        help="Any node's API, e.g. http://10.0.0.1:8080.",
    )(function)
    return function


def _exchange(
    method: str, url: str, token: str, body: dict[str, int] | None
) -> tuple[int, dict[str, Any]]:
    """One HTTP request; (status, JSON body). Raises MembersError if there is no answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Accept", "application/json")
    if data is not None:
        request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT_S) as response:
            status, raw = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise MembersError(f"cannot reach {url}: {reason}") from None
    try:
        decoded = json.loads(raw) if raw else {}
    except ValueError:
        raise MembersError(f"{url} answered {status} with a body that is not JSON") from None
    if not isinstance(decoded, dict):
        raise MembersError(f"{url} answered {status} with unexpected JSON")
    return status, decoded


def _call(
    method: str, url: str, token: str, body: dict[str, int] | None, wait_s: float
) -> dict[str, Any]:
    """The answer to a request, retried on 503 and a pending change until `wait_s` is over."""
    deadline_s = time.monotonic() + wait_s
    while True:
        status, answer = _exchange(method, url, token, body)
        if status == 200:
            return answer
        code = str(answer.get("code", "HTTP_" + str(status)))
        detail = str(answer.get("detail", "no detail"))
        # A node stopped on a storage fault serves nothing again: use another node.
        retryable = (status == 503 and code != "STORAGE_FAULT") or code in RETRYABLE_CODES
        if not retryable or time.monotonic() + RETRY_PAUSE_S > deadline_s:
            field = answer.get("field")
            where = f" (field {field})" if field else ""
            waited = " after retrying for --wait" if retryable else ""
            raise MembersError(f"{status} {code}{where}{waited}: {detail}")
        time.sleep(RETRY_PAUSE_S)


def _describe(membership: dict[str, Any]) -> str:
    members = membership["members"]
    source = str(membership["configSource"])
    lines = [
        f"node {membership['nodeId']} ({membership['role']}, term {membership['term']}), "
        f"leader: {membership['leaderId'] if membership['leaderId'] is not None else 'none known'}",
        f"members: {', '.join(str(m) for m in members)} "
        f"({'committed' if membership['committed'] else 'NOT committed yet'} "
        f"at index {membership['configIndex']}, from {_SOURCES.get(source, source)}; "
        f"commit index {membership['commitIndex']})",
    ]
    if not membership["committed"]:
        committed = membership["committedMembers"]
        lines.append(f"change in progress from: {', '.join(str(m) for m in committed)}")
    if membership["nonMembers"]:
        lines.append(
            "configured but not members: " + ", ".join(str(m) for m in membership["nonMembers"])
        )
    progress = membership.get("progress")
    if progress:
        lines.append("member  match_index  lag_entries")
        for member in members:
            entry = progress.get(str(member))
            if entry is not None:
                lines.append(f"{member:>6}  {entry['matchIndex']:>11}  {entry['lagEntries']:>11}")
    return "\n".join(lines)


@click.group(name="members")
def command() -> None:
    """List, add and remove cluster members (one server at a time; admin token)."""


@command.command(name="list")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON answer.")
def list_command(url: str, admin_token: str, wait_s: float, as_json: bool) -> None:
    """The configuration as the node at --url knows it (match index and lag on the leader)."""
    membership = _call("GET", f"{url}/api/admin/members", admin_token, None, wait_s)
    click.echo(json.dumps(membership, sort_keys=True) if as_json else _describe(membership))


def _change(op: str, node_id: int, url: str, token: str, wait_s: float) -> None:
    result = _call("POST", f"{url}/api/admin/members", token, {op: node_id}, wait_s)
    members = ", ".join(str(m) for m in result["members"])
    verb = "added" if op == "add" else "removed"
    if result["alreadyApplied"]:
        click.echo(
            f"node {node_id} was already {verb} (nothing changed); members: {members} "
            f"(committed, index {result['configIndex']}, leader {result['leaderId']})"
        )
    else:
        click.echo(
            f"node {node_id} {verb}; members: {members} "
            f"(committed, index {result['configIndex']}, leader {result['leaderId']})"
        )


@command.command(name="add")
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@_options
def add_command(node_id: int, url: str, admin_token: str, wait_s: float) -> None:
    """Add node ID (its address must be in cluster.nodes of every node's config)."""
    _change("add", node_id, url, admin_token, wait_s)


@command.command(name="remove")
@click.argument("node_id", metavar="ID", type=click.IntRange(min=1))
@_options
def remove_command(node_id: int, url: str, admin_token: str, wait_s: float) -> None:
    """Remove node ID (it may be down; the remaining majority commits the change)."""
    _change("remove", node_id, url, admin_token, wait_s)
