"""The ``tether`` command: operate always-on agent runs from a shell."""

from __future__ import annotations

from typing import Annotated

import typer

from tether.cli import control, drive_cmd, inspect, transcript_cmd
from tether.cli.common import OneLineErrors, Settings

app = typer.Typer(name="tether", cls=OneLineErrors, no_args_is_help=True, add_completion=False,
                  rich_markup_mode="markdown",
                  help="Operate always-on AI agent loops: durable runs, effects, budgets, audit.")
store_app = typer.Typer(no_args_is_help=True, help="Maintain the store.")
audit_app = typer.Typer(no_args_is_help=True,
                        help="Check the journal's integrity; seal it with signed checkpoints.")


@app.callback()
def _main(store: Annotated[str | None, typer.Option(
        "--store", envvar="TETHER_STORE", metavar="URL",
        help="Store: a SQLite file path, sqlite:///path, or "
             "postgresql://[user@]host[:port]/dbname?schema=NAME for one store shared by "
             "workers on many machines (extra tether[postgres]; docs/postgres.md) "
             "(default ./tether.db).")] = None
          ) -> None:
    Settings.store_url = store


def _register() -> None:
    # long: one flat line per command registered, nothing to split
    from tether.cli.demo_cmd import demo
    app.command()(demo)
    app.command()(drive_cmd.run)
    app.command()(drive_cmd.worker)
    app.command()(inspect.runs)
    app.command()(inspect.show)
    app.command()(inspect.events)
    app.command()(inspect.state)
    app.command()(inspect.checkpoints)
    app.command()(control.pause)
    app.command()(control.resume)
    app.command()(control.stop)
    app.command()(control.resolve)
    app.command()(control.budget)
    app.command()(control.swarm)
    from tether.cli import approvals_cmd
    app.command()(approvals_cmd.approvals)
    app.command()(approvals_cmd.approve)
    app.command()(approvals_cmd.deny)
    from tether.cli import rollback_cmd
    app.command()(rollback_cmd.rollback)
    app.command()(rollback_cmd.quarantine)
    from tether.cli import impact_cmd
    app.command()(impact_cmd.impact)
    from tether.cli import world_cmd
    app.command()(world_cmd.messages)
    app.command()(world_cmd.board)
    from tether.cli import fork_cmd
    app.command()(fork_cmd.fork)
    app.command("import")(transcript_cmd.import_)
    app.command()(transcript_cmd.analyze)
    from tether.cli import telemetry_cmd
    app.command("export-otel")(telemetry_cmd.export_otel)
    app.command()(telemetry_cmd.metrics)
    store_app.command("backup")(control.backup)
    from tether.cli import store_cmd
    store_app.command("copy")(store_cmd.copy)
    from tether.cli import audit_cmd
    audit_app.command("verify")(audit_cmd.verify)
    audit_app.command("keygen")(audit_cmd.keygen)
    audit_app.command("seal")(audit_cmd.seal_cmd)
    audit_app.command("prove")(audit_cmd.prove_cmd)
    audit_app.command("check-proof")(audit_cmd.check_proof)
    audit_app.command("export")(audit_cmd.export)
    audit_app.command("erase")(audit_cmd.erase)
    from tether.cli import report_cmd
    audit_app.command("query")(report_cmd.query)
    app.command()(report_cmd.report)
    from tether.cli.alerts_cmd import alerts_app
    app.add_typer(alerts_app, name="alerts")
    from tether.cli.policy_cmd import policy_app
    app.add_typer(policy_app, name="policy")
    app.add_typer(store_app, name="store")
    from tether.cli.settings_cmd import settings_app
    app.add_typer(settings_app, name="settings")
    from tether.cli.ui_group import ui_app
    from tether.cli.ui_token_cmd import token_app
    ui_app.add_typer(token_app, name="token")
    from tether.cli import ui_serve_cmd
    ui_app.command("serve")(ui_serve_cmd.serve)
    app.add_typer(ui_app, name="ui")
    app.add_typer(audit_app, name="audit")
    from tether.cli import helptext
    helptext.apply(app)


_register()


def main() -> None:
    """Console-script entry point."""
    app()
