"""The configuration dataclasses in and out of a process: as command-line flags (argparse), as the
argv that reproduces a config in another process (the local launcher's workers, TFJob containers,
pipeline steps), as KUBEDETECT_* environment variables (containers), and as JSON.

Apart from kubedetect.config so that the dataclasses read as a list of settings; everything here
works on any of them through the `help` and `flag` metadata that `config.option` gives a field.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from typing import Any


def _flag(f: dataclasses.Field) -> str:
    return f.metadata.get("flag") or "--" + f.name.replace("_", "-")


def _base_type(annotation: Any) -> tuple[Any, bool]:
    """The concrete type of a field annotation and whether None is allowed."""
    hint = annotation
    optional = False
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        optional = len(args) < len(typing.get_args(hint))
        hint = args[0]
    return hint, optional


def _parse_list(text: str) -> tuple[str, ...]:
    items = tuple(part.strip() for part in text.split(",") if part.strip())
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list, got nothing")
    return items


def add_arguments(
    parser: argparse.ArgumentParser, cls: type, *, skip: tuple[str, ...] = ()
) -> None:
    """Add one flag per field of the config dataclass `cls`."""
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(cls.__name__, (cls.__doc__ or "").strip().splitlines()[0])
    for f in dataclasses.fields(cls):
        if f.name in skip or "help" not in f.metadata:
            continue
        kind, _ = _base_type(hints[f.name])
        help_text = f.metadata["help"]
        if f.default is not None and f.default is not dataclasses.MISSING:
            help_text += f" (default: {_show(f.default)})"
        if kind is bool:
            group.add_argument(
                _flag(f),
                dest=f.name,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
            continue
        parse = _parse_list if typing.get_origin(kind) is tuple else kind
        group.add_argument(
            _flag(f),
            dest=f.name,
            type=parse,
            default=argparse.SUPPRESS,
            help=help_text,
            metavar=f.name.upper(),
        )


def from_args(cls: type, namespace: argparse.Namespace, **overrides: Any):
    """Build the config `cls` from parsed flags; flags not given keep the dataclass defaults."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {k: v for k, v in vars(namespace).items() if k in names}
    values.update(overrides)
    return cls(**values)


def to_argv(config: Any, *, all_fields: bool = False) -> list[str]:
    """The flags that reproduce `config` (the inverse of add_arguments + from_args).

    Used where one process starts another with the same settings: the local launcher's
    workers, TFJob containers, pipeline steps. Fields at their default are left out unless
    `all_fields`, so commands stay short and readable.
    """
    argv: list[str] = []
    for f in dataclasses.fields(config):
        if "help" not in f.metadata:
            continue
        value = getattr(config, f.name)
        if not all_fields and value == f.default:
            continue
        flag = _flag(f)
        if isinstance(value, bool):
            argv.append(flag if value else "--no-" + flag[2:])
        elif value is not None:
            argv += [flag, _show(value)]
    return argv


ENV_PREFIX = "KUBEDETECT_"


def env_name(field_name: str) -> str:
    """The environment variable of a config field: `max_queue` is KUBEDETECT_MAX_QUEUE."""
    return ENV_PREFIX + field_name.upper()


def env_argv(cls: type, environ: typing.Mapping[str, str] | None = None) -> list[str]:
    """The flags that the KUBEDETECT_* environment variables stand for, for the config `cls`.

    Containers are configured by environment and people by flags; reading the environment *as
    flags* keeps one parser and one set of checks for both. Booleans take 1/0, true/false,
    yes/no, on/off.
    """
    environ = os.environ if environ is None else environ
    hints = typing.get_type_hints(cls)
    argv: list[str] = []
    for f in dataclasses.fields(cls):
        name = env_name(f.name)
        if "help" not in f.metadata or name not in environ:
            continue
        value, flag = environ[name].strip(), _flag(f)
        if _base_type(hints[f.name])[0] is bool:
            if value.lower() not in _TRUE | _FALSE:
                raise ValueError(f"{name}={value!r}: expected true or false")
            argv.append(flag if value.lower() in _TRUE else "--no-" + flag[2:])
        else:
            argv.append(f"{flag}={value}")
    return argv


_TRUE, _FALSE = {"1", "true", "yes", "on"}, {"0", "false", "no", "off"}


def from_env(cls: type, environ: typing.Mapping[str, str] | None = None, *, argv: list[str] = ()):
    """The config `cls` from KUBEDETECT_* variables, then `argv` flags (which win), then
    defaults."""
    parser = argparse.ArgumentParser(prog=ENV_PREFIX + "*", exit_on_error=False, add_help=False)
    add_arguments(parser, cls)
    try:
        namespace = parser.parse_args([*env_argv(cls, environ), *argv])
    except argparse.ArgumentError as exc:
        raise ValueError(f"{cls.__name__}: {exc}") from None
    return from_args(cls, namespace)


def to_env(config: Any) -> dict[str, str]:
    """The KUBEDETECT_* variables that reproduce `config` (fields set to None are left out)."""
    env = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if "help" in f.metadata and value is not None:
            env[env_name(f.name)] = str(value).lower() if isinstance(value, bool) else _show(value)
    return env


def to_dict(config: Any) -> dict[str, Any]:
    """A JSON-ready dict of a config (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def _show(value: Any) -> str:
    return ",".join(value) if isinstance(value, tuple) else str(value)
