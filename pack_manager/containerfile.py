"""The images a Containerfile builds FROM (pure): what a build job needs on its node first.

A builder node that lacks a base image gets it the way a run job gets its image (from a node
that holds it, else a registry) before Podman builds. Left to Podman: `scratch`, earlier
stages named by `AS`, and references with build arguments (`$VERSION`), which only the build
resolves.
"""

from __future__ import annotations


def base_images(text: str) -> list[str]:
    """The FROM images of a Containerfile in order, each once."""
    stages: set[str] = set()
    found: list[str] = []
    for instruction in _instructions(text):
        words = instruction.split()
        if not words or words[0].upper() != "FROM":
            continue
        arguments = [word for word in words[1:] if not word.startswith("--")]
        if not arguments:
            continue
        image = arguments[0]
        earlier_stage = image.lower() in stages
        if len(arguments) >= 3 and arguments[1].upper() == "AS":
            stages.add(arguments[2].lower())
        if earlier_stage or image.lower() == "scratch" or "$" in image or image in found:
            continue
        found.append(image)
    return found


def _instructions(text: str) -> list[str]:
    """Lines joined across trailing backslashes, comments and blank lines dropped."""
    instructions, pending = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not pending:
            continue
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        instructions.append(pending + stripped)
        pending = ""
    if pending:
        instructions.append(pending)
    return instructions
