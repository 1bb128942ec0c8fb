"""Shell completion for `form` and `formd`: the script typer prints, and the completions that
script asks the program for."""

import os
import subprocess

import pytest
from procs import FORM, FORMD


@pytest.mark.parametrize(("command", "name"), [(FORM, "form"), (FORMD, "formd")])
def test_show_completion_prints_a_bash_script_for_the_program(command, name):
    script = subprocess.run(
        [*command, "--show-completion", "bash"], capture_output=True, text=True, check=True, timeout=30
    ).stdout
    assert f"complete -o default -F _{name}_completion {name}" in script
    assert f"_{name.upper()}_COMPLETE=complete_bash" in script


@pytest.mark.parametrize(
    ("command", "name", "words", "expected"),
    [
        (FORM, "form", "form su", "submit"),
        (FORM, "form", "form acl g", "grant"),
        (FORMD, "formd", "formd in", "init"),
    ],
)
def test_the_completion_script_gets_subcommands_from_the_program(command, name, words, expected):
    env = {
        **os.environ,
        f"_{name.upper()}_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - 1),
    }
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=30).stdout
    assert expected in out.split()
