"""Config-group choices of a command line, checked before Hydra composes (every Hydra entry point).

`potential=nope` would end in Hydra's many-line "Could not find 'potential/nope' ... Available options";
here it ends in one line naming the override, the group and its options, the .yaml files of conf/<group>/
(no Hydra internals). A group an app takes at another place (train.py: the potential family sits at
`data.generate.potential`) gets one line saying how to override it there. Values of parameters (ranges) are
checked where they enter: `physics.config`, `physics.families`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

__all__ = ["bad_choice", "exit_on_bad_choice", "options"]


def options(conf: Path, group: str) -> list[str]:
    """The options of config group `group`: the names of conf/<group>/*.yaml, sorted."""
    return sorted(p.stem for p in (conf / group).glob("*.yaml"))


def bad_choice(conf: Path, argv: Sequence[str], placed: Mapping[str, str] | None = None) -> str | None:
    """The problem with the first override of `argv` that picks a config-group option which does not exist
    (or, for a group of `placed` {group: package}, picks one at the top level), as one line; else None.

    Multirun lists (`data=paper,gates`) are checked choice by choice; sweep functions (`choice(...)`) and
    `null` are left to Hydra.
    """
    for arg in argv:
        key, eq, value = arg.partition("=")
        if arg.startswith("-") or not eq:
            continue
        key = key.lstrip("+~")
        group, at, _ = key.partition("@")
        if not group or not (conf / group).is_dir():
            continue
        allowed = options(conf, group)
        picked = [] if "(" in value else [c.strip() for c in value.split(",")]
        if bad := [c for c in picked if c not in allowed and c != "null"]:
            return (f"{arg}: {bad[0]!r} is not an option of config group {group!r} (conf/{group}/); expected one of "
                    f"{allowed}")
        if not at and placed and group in placed:
            where = placed[group]
            return (f"{arg}: this app takes the {group} group at {where}, not at the top level: override it as "
                    f"{group}@{where}={value} (+{group}@{where}={value} where the config names no {group} there yet)")
    return None


def exit_on_bad_choice(conf: Path, app: str, placed: Mapping[str, str] | None = None) -> None:
    """`bad_choice` of this process's command line: print '<app>: error: ...' to stderr and exit with status 2."""
    if (problem := bad_choice(conf, sys.argv[1:], placed)) is not None:
        print(f"{app}: error: {problem}", file=sys.stderr)
        sys.exit(2)
