"""``tether ui token create|list|revoke``: API tokens for the web dashboard and its JSON API.

A token is shown once, as the last line of ``create``'s output (so a script can take
it with ``tail -n 1``); the store keeps its SHA-256 only. Creating and revoking are
journaled in the store chain as the OS user running the command.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from tether.cli.common import console, handle_errors, print_jsonl, store
from tether.core.identity import ROLE_NAMES
from tether.identity import create_token, list_tokens, revoke_token, tokens_exist
from tether.runtime.operator import actor

token_app = typer.Typer(no_args_is_help=True,
                        help="Create, list and revoke the API tokens of the web UI and API.")


@token_app.command("create")
@handle_errors
def create(name: Annotated[str, typer.Option(
               "--name", metavar="NAME",
               help="Who acts with the token: the journal records human:NAME, and a policy's "
                    "approvers may name NAME.")],
           role: Annotated[str, typer.Option(
               "--role", metavar="ROLE",
               help=f"One of {', '.join(ROLE_NAMES)}: viewer reads; operator also approves, "
                    "denies, pauses, resumes, stops, resolves, acks; admin also rolls back, "
                    "forks, quarantines, sets budgets and policies, manages tokens.")]) -> None:
    """Create an API token and print it once, as the last line (only its hash is kept)."""
    s = store(create=True)
    info, secret = create_token(s, name, role, who=actor(None, s))
    console.print(f"created token {escape(info.name)} ({info.role.label}), id {info.id}, "
                  f"journaled as {escape(info.created_by)}", highlight=False, soft_wrap=True)
    console.print("it is shown this once and stored hashed: keep it now; lost, revoke it and "
                  "create another", highlight=False, soft_wrap=True)
    typer.echo(secret)


@token_app.command("list")
@handle_errors
def list_(json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False) -> None:
    """List API tokens, oldest first: name, role, id, who created it and when, revoked or
    not (never a secret)."""
    tokens = list_tokens(store(readonly=True))
    if json:
        print_jsonl(t.to_json() for t in tokens)
        return
    if not tokens:
        console.print("no tokens; create one with `tether ui token create --name NAME --role "
                      "ROLE`", highlight=False)
        return
    for t in tokens:  # one line each, never cut: an id is what `revoke` takes
        status = "valid" if t.active else f"revoked {t.revoked} by {t.revoked_by}"
        console.print(f"{escape(t.name)}  {t.role.label}  {escape(status)}  id {t.id}  "
                      f"created {t.created} by {escape(t.created_by)}", highlight=False,
                      soft_wrap=True)


@token_app.command("revoke")
@handle_errors
def revoke(token: Annotated[str, typer.Argument(
        metavar="NAME", help="The valid token's name, or a token's id.")]) -> None:
    """Revoke an API token: from now on it authenticates no one (journaled)."""
    s = store()
    t = revoke_token(s, token, who=actor(None, s))
    console.print(f"revoked token {escape(t.name)} ({t.role.label}, id {t.id}); it "
                  "authenticates no one from now on", highlight=False, soft_wrap=True)
    if not tokens_exist(s):
        # Said because it opens a door: with no token, a dashboard on loopback goes back to
        # acting as the OS user who started it, for anyone on this machine (docs/ui.md).
        console.print("no valid token is left: a dashboard on loopback now acts as the OS "
                      "user who started it, for any local user, and one beyond loopback "
                      "refuses everyone; `tether ui token create` closes it again",
                      highlight=False, soft_wrap=True)
