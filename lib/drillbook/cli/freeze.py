"""``drillbook freeze`` and ``drillbook thaw``: the kill switch for scheduled drills during an outage."""
from __future__ import annotations

from typing import Optional

import typer

from ..errors import ConfigError
from .app import ARCHIVE_HELP, app, archive_at, err, out


def _scope(env: Optional[str], all_envs: bool, verb: str) -> Optional[str]:
    """The environment named, or None for --all; exactly one of the two."""
    if bool(env) == all_envs:
        example = 'drillbook freeze --env prod --reason "incident 123"' if verb == "freeze" else "drillbook thaw --env prod"
        raise ConfigError(f"{verb} needs exactly one of --env ENV or --all", example)
    if env:
        from ..config.environments import load_environment  # pydantic: not on --help's path

        load_environment(env)  # a mistyped name must not freeze nothing and look like it worked
    return env


@app.command()
def freeze(
    env: Optional[str] = typer.Option(None, "--env", "-e", help="Environment to freeze."),
    all_envs: bool = typer.Option(False, "--all", help="Freeze every environment."),
    reason: str = typer.Option(..., help="Why (shown in status, on the dashboard and in the evidence of interrupted runs)."),
    archive: Optional[str] = typer.Option(None, help=ARCHIVE_HELP),
) -> None:
    """Stop drills on an environment during an outage: running ones are interrupted (their cleanups
    run, their evidence says why), new ones refused (scheduled ones recorded as skipped), until thaw.

    The freeze lives in the archive (a folder or s3://bucket/prefix), so every machine and Airflow
    worker writing it obeys it.
    """
    from ..evidence import freeze as freeze_mod
    from ..journal import operator_name

    scope = _scope(env, all_envs, "freeze")
    found = freeze_mod.freeze(scope, reason, operator_name(), archive_at(archive))
    out.print(f"FROZEN: {found.describe()}", markup=False, soft_wrap=True)
    err.print("drills running there are interrupted within a few seconds; `drillbook thaw` lifts it", markup=False)


@app.command()
def thaw(
    env: Optional[str] = typer.Option(None, "--env", "-e", help="Environment to thaw."),
    all_envs: bool = typer.Option(False, "--all", help="Lift every freeze (the --all one and each environment's)."),
    archive: Optional[str] = typer.Option(None, help=ARCHIVE_HELP),
) -> None:
    """Lift a freeze: drills may run on the environment again (`run --due` catches up what is due)."""
    from ..evidence import freeze as freeze_mod

    where = archive_at(archive)
    lifted = freeze_mod.thaw(_scope(env, all_envs, "thaw"), where)
    for found in lifted:
        out.print(f"thawed: {'all environments' if found.scope == freeze_mod.ALL else found.scope} "
                  f"(frozen by {found.by} since {found.at})", markup=False, soft_wrap=True)
    if not lifted:
        out.print("nothing to thaw: no freeze in force there")
    still = freeze_mod.active(where)
    if still:
        err.print(f"still in force: {'; '.join(f.describe() for f in still)}", markup=False, soft_wrap=True)
