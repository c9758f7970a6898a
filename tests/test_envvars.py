"""Every option of every command reads ``SEMROUTE_<OPTION>`` (and ``SEMROUTE_<COMMAND>_<OPTION>``), as the README
and the Dockerfile say; and ``semroute serve`` configured only through the environment serves where it is told."""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.core import ParameterSource
from server_harness import health_status

from semroute._envvars import LIBRARY_DEFAULTS, option_env_name
from semroute.cli import main


def _commands(group: click.Group, ctx: click.Context) -> Iterator[tuple[list[str], click.Command, click.Context]]:
    """(path, command, parent context) for every command under ``group``, looked up as the CLI looks them up."""
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        yield [name], cmd, ctx
        if isinstance(cmd, click.Group):
            sub = click.Context(cmd, info_name=name, parent=ctx)
            for path, c, parent in _commands(cmd, sub):
                yield [name, *path], c, parent


def _root() -> click.Context:
    return click.Context(main, info_name="semroute", auto_envvar_prefix="SEMROUTE")


def _sample(opt: click.Option, tmp: Path) -> str:
    """A value for ``opt`` that differs from its default, as an environment string."""
    t = opt.type
    if opt.count:
        return "2"
    if opt.is_flag and opt.is_bool_flag:
        return "false" if opt.default else "true"
    if isinstance(t, click.Choice):
        return next(str(c) for c in t.choices if c != opt.default)
    if isinstance(t, click.types.IntParamType):
        lo = getattr(t, "min", None) or 0
        return str(max(int(opt.default or 0) + 3, int(lo) + 1))
    if isinstance(t, click.types.FloatParamType):
        return "0.375"
    if isinstance(t, click.Path):
        return str(tmp)
    return "from-the-environment"


def _options(cmd: click.Command) -> list[click.Option]:
    return [p for p in cmd.params if isinstance(p, click.Option) and p.expose_value]


def _required_args(cmd: click.Command, tmp: Path, skip: click.Option) -> list[str]:
    """Command-line values for the other required parameters, so only ``skip`` comes from the environment."""
    args: list[str] = []
    for p in cmd.params:
        if isinstance(p, click.Option) and p.required and p is not skip:
            args += [p.opts[0], _sample(p, tmp)]
    for p in cmd.params:
        if isinstance(p, click.Argument) and p.required:
            args.append(str(tmp))
    return args


def _parse(cmd: click.Command, name: str, parent: click.Context, args: list[str]) -> click.Context:
    return cmd.make_context(name, args, parent=parent)


def test_every_option_reads_its_environment_variable(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    root = _root()
    checked: list[str] = []
    for opt in _options(main):  # the group's own: -v, --log-format
        var = f"SEMROUTE_{option_env_name(opt)}"
        with monkeypatch.context() as m:
            m.setenv(var, _sample(opt, tmp_path))
            ctx = main.make_context("semroute", ["validate", "x"])
            assert ctx.get_parameter_source(opt.name) == ParameterSource.ENVIRONMENT, var  # type: ignore[arg-type]
            assert ctx.params[opt.name] != opt.default, var  # type: ignore[index]
            checked.append(var)
    for path, cmd, parent in _commands(main, root):
        for opt in _options(cmd):
            name = option_env_name(opt)
            variables = [f"SEMROUTE_{'_'.join(path).upper().replace('-', '_')}_{name}"]
            if name not in LIBRARY_DEFAULTS:
                variables.append(f"SEMROUTE_{name}")
            for var in variables:
                with monkeypatch.context() as m:
                    raw = _sample(opt, tmp_path)
                    m.setenv(var, raw)
                    ctx = _parse(cmd, path[-1], parent, _required_args(cmd, tmp_path, opt))
                    assert ctx.get_parameter_source(opt.name) == ParameterSource.ENVIRONMENT, var  # type: ignore[arg-type]
                    got = ctx.params[opt.name]  # type: ignore[index]
                    assert got != opt.default, var
                    if opt.multiple:  # a space-separated list in the environment, as click splits it
                        want = tuple(opt.type.convert(v, opt, ctx) for v in raw.split())
                        assert tuple(got) == want, var
                    else:
                        assert str(got).lower() == raw.lower() or got == opt.type.convert(raw, opt, ctx), var
                    checked.append(var)
    # the names the README and the Dockerfile use are among them
    for var in ("SEMROUTE_INDEX", "SEMROUTE_HOST", "SEMROUTE_PORT", "SEMROUTE_METRICS_PORT", "SEMROUTE_LOG_FORMAT",
                "SEMROUTE_SERVE_PORT", "SEMROUTE_MAX_BATCH_SIZE", "SEMROUTE_THREADS", "SEMROUTE_WATCH"):
        assert var in checked, var


def test_command_line_beats_command_variable_beats_shared_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    root = _root()
    serve = main.get_command(root, "serve")
    assert serve is not None
    monkeypatch.setenv("SEMROUTE_INDEX", "/from/shared")
    monkeypatch.setenv("SEMROUTE_PORT", "1111")
    monkeypatch.setenv("SEMROUTE_SERVE_PORT", "2222")
    ctx = serve.make_context("serve", [], parent=root)
    assert ctx.params["port"] == 2222 and str(ctx.params["index_dir"]) == "/from/shared"
    ctx = serve.make_context("serve", ["--port", "3333"], parent=root)
    assert ctx.params["port"] == 3333


def test_encoder_and_model_variables_keep_their_library_meaning(monkeypatch: pytest.MonkeyPatch,
                                                                tmp_path: Path) -> None:
    """SEMROUTE_ENCODER / SEMROUTE_MODEL are the library's defaults (where build-index exports on first use, which
    model to export), not a forced --encoder / --model."""
    from semroute.export import default_encoder_dir, default_model_path

    monkeypatch.setenv("SEMROUTE_ENCODER", str(tmp_path / "enc"))
    monkeypatch.setenv("SEMROUTE_MODEL", str(tmp_path / "model"))
    assert default_encoder_dir() == tmp_path / "enc" and default_model_path() == tmp_path / "model"
    root = _root()
    build = main.get_command(root, "build-index")
    assert build is not None
    ctx = build.make_context("build-index", ["routes", "--out", str(tmp_path / "b")], parent=root)
    assert ctx.params["encoder"] is None and ctx.params["model"] is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_configured_only_through_the_environment(bundle_dir: Path) -> None:
    port, metrics_port = _free_port(), _free_port()
    env = {**os.environ, "SEMROUTE_INDEX": str(bundle_dir), "SEMROUTE_HOST": "127.0.0.1",
           "SEMROUTE_PORT": str(port), "SEMROUTE_METRICS_PORT": str(metrics_port), "SEMROUTE_LOG_FORMAT": "json",
           "SEMROUTE_WATCH": "false"}
    proc = subprocess.Popen([sys.executable, "-m", "semroute.cli", "serve"], stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        event = json.loads(first)  # the serving line, as JSON: --log-format came from SEMROUTE_LOG_FORMAT
        assert event["event"] == "serving" and event["port"] == port and event["host"] == "127.0.0.1", first
        assert health_status(f"127.0.0.1:{port}") == 1
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=5) as r:
            assert b"semroute_" in r.read()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def _listening(port: int) -> set[str]:
    """Local addresses with a listening TCP socket on ``port`` (Linux /proc/net)."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            addr, hexport = local.split(":")
            if state == "0A" and int(hexport, 16) == port:
                found.add(addr)
    return found


def test_port_in_use_is_one_clean_line(bundle_dir: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run([sys.executable, "-m", "semroute.cli", "serve", "--index", str(bundle_dir),
                            "--port", str(port)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stderr
    assert r.stderr.count("\n") == 1, r.stderr  # no gRPC C++ log line before it
    assert re.match(rf"error: cannot bind 127\.0\.0\.1:{port}: address already in use", r.stderr), r.stderr
