"""``SEMROUTE_<OPTION>`` environment variables for every option of every ``semroute`` command.

Containers and process managers configure through the environment, and the documented names are the flags'
own: ``--port`` is ``SEMROUTE_PORT``, ``--metrics-port`` ``SEMROUTE_METRICS_PORT``, ``--index`` ``SEMROUTE_INDEX``.
click's ``auto_envvar_prefix`` alone gives ``SEMROUTE_SERVE_PORT`` and names variables after the Python parameter
(``SEMROUTE_SERVE_INDEX_DIR``), so the names are set here, on each command as the group hands it out: commands
other modules register get them too, without a list to keep in step.

Each option reads ``SEMROUTE_<COMMAND>_<OPTION>`` first (one command only, e.g. ``SEMROUTE_SERVE_THREADS``), then
``SEMROUTE_<OPTION>`` (every command with that option); a flag on the command line beats both.
"""

from __future__ import annotations

from typing import Any

import click

PREFIX = "SEMROUTE"

# Variables the library itself reads as a default (export.py: the encoder directory and the source model). As
# plain option values they would change what the option means: a --model forces a re-export on every
# build-index, and --encoder refuses a directory not exported yet where the default exports into it. So these
# options keep only their command-specific variable; SEMROUTE_ENCODER / SEMROUTE_MODEL act through the default.
LIBRARY_DEFAULTS = frozenset({"ENCODER", "MODEL"})
_MARK = "_semroute_envvar"


def option_env_name(opt: click.Option) -> str:
    """``--metrics-port`` -> ``METRICS_PORT``: the longest long flag, so ``-v/--verbose`` is ``VERBOSE``."""
    longs = [o for o in opt.opts if o.startswith("--")] or list(opt.opts)
    return max(longs, key=len).lstrip("-").upper().replace("-", "_")


def env_names(opt: click.Option, command_prefix: str | None) -> list[str]:
    """The variables ``opt`` reads, most specific first."""
    name = option_env_name(opt)
    names = [f"{command_prefix}_{name}"] if command_prefix else []
    if name not in LIBRARY_DEFAULTS or not command_prefix:
        names.append(f"{PREFIX}_{name}")
    return names


def apply(command: click.Command, command_prefix: str | None) -> None:
    """Give each of ``command``'s options its variables (idempotent; an option's own ``envvar`` is kept)."""
    for p in command.params:
        if not isinstance(p, click.Option) or not p.expose_value:
            continue  # arguments, --help, --version
        if p.envvar is not None and not getattr(p, _MARK, False):
            continue  # declared by its command: that choice wins
        if command_prefix is None and option_env_name(p) in LIBRARY_DEFAULTS:
            continue
        p.envvar = env_names(p, command_prefix)
        p.show_envvar = True
        setattr(p, _MARK, True)


class EnvGroup(click.Group):
    """A click group whose commands (and sub-groups) read ``SEMROUTE_<OPTION>`` variables."""

    group_class = type  # groups made with @group.group() are EnvGroups too

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        apply(self, None)  # the group's own options (--log-format, -v): parsed before any command is looked up

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        cmd = super().get_command(ctx, cmd_name)
        if cmd is not None:
            apply(cmd, f"{ctx.auto_envvar_prefix or PREFIX}_{cmd_name.upper().replace('-', '_')}")
        return cmd
