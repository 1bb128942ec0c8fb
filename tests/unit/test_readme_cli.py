"""README.md's CLI section lists every `form` and `formd` command and every option they take,
and docs/reference.md every formd.toml key: a command, flag or key added without its
documentation fails here."""

import re
from pathlib import Path

import pytest
from typer.main import get_command

from cli.main import app as form_app
from daemon.main import app as formd_app

README = (Path(__file__).resolve().parents[2] / "README.md").read_text()
CLI = README.split("## CLI", 1)[1].split("\n## ", 1)[0]
SYNOPSES = "\n".join(re.findall(r"```\n(.*?)```", CLI, re.S))
SHELL_COMPLETION = {"--install-completion", "--show-completion", "--help"}


def commands(group, path=()):
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


def long_options(command) -> list[str]:
    return [
        flag
        for param in command.params
        if type(param).__name__.endswith("Option") and not param.hidden
        for flag in param.opts
        if flag.startswith("--") and flag not in SHELL_COMPLETION
    ]


def synopsis(prog: str, path: tuple[str, ...]) -> str:
    """The synopsis line of `path`, with its continuation lines: `  nodes ...` under `form`,
    `formd init ...`; a subcommand shares its group's line (`label set k=v | label remove k`)."""
    for words in (" ".join(path), path[0]):
        start = rf"^formd {re.escape(words)}\b" if prog == "formd" else rf"^  {re.escape(words)}\b"
        match = re.search(start + r".*(\n\s{4,}\S.*)*", SYNOPSES, re.M)
        if match:
            return match.group(0)
    return ""


CASES = [
    (prog, path, command)
    for prog, app in (("form", form_app), ("formd", formd_app))
    for path, command in commands(get_command(app))
]


@pytest.mark.parametrize("prog,path,command", CASES, ids=[f"{p} {' '.join(c)}" for p, c, _ in CASES])
def test_every_command_has_a_synopsis_naming_it_and_its_options(prog, path, command):
    line = synopsis(prog, path)
    assert line, f"README's CLI section has no synopsis line for `{prog} {' '.join(path)}`"
    assert all(re.search(rf"\b{re.escape(word)}\b", line) for word in path), line
    missing = [flag for flag in long_options(command) if flag not in README]
    assert not missing, f"`{prog} {' '.join(path)}` options not in README: {missing}"


@pytest.mark.parametrize("prog,app", [("form", form_app), ("formd", formd_app)])
def test_the_global_options_are_in_the_readme(prog, app):
    assert [flag for flag in long_options(get_command(app)) if flag not in README] == []


def test_every_formd_toml_key_is_in_the_reference():
    import dataclasses

    from daemon.config import FormdConfig

    reference = (Path(__file__).resolve().parents[2] / "docs" / "reference.md").read_text()
    assert [f.name for f in dataclasses.fields(FormdConfig) if f"`{f.name}`" not in reference] == []
