"""The WASM programs and inputs the job tests run: upcase (tests/wasm/upcase.c, built by
tests/wasm/build.sh), a module that loops until cancelled, and a C program that sleeps."""

import subprocess
from pathlib import Path

from procs import compile_wasi

WASM_DIR = Path(__file__).parent / "wasm"
TEXT = b"hello formnet\nsecond line\n"  # what the wasm_context fixture gives upcase as in.txt
LOOP_FOREVER = '(module (memory (export "memory") 1) (func (export "_start") (loop (br 0))))'

# Sleeps argv[1] seconds, then writes outputs/done.txt: a job that is still running when a
# test kills its node or submits a second one.
SLEEPER = r"""
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int seconds = argc > 1 ? atoi(argv[1]) : 1;
    printf("sleeping %d s\n", seconds);
    fflush(stdout);
    sleep(seconds);
    FILE *out = fopen("/data/outputs/done.txt", "w");
    if (!out) return 1;
    fprintf(out, "slept %d\n", seconds);
    fclose(out);
    return 0;
}
"""


def submit_wasm(
    node, root: Path, *extra: str, check: bool = True, input_name: str = "in.txt"
) -> subprocess.CompletedProcess:
    """`form submit` on `node` of upcase.wasm on root/`input_name` from a wasm_context directory."""
    return node.form(
        "submit",
        str(root / "context"),
        "--kind",
        "wasm",
        "--module",
        "upcase.wasm",
        "--input",
        str(root / input_name),
        "--cmd",
        input_name,
        *extra,
        check=check,
    )


def sleeper_context(root: Path) -> Path:
    """root/context holding sleeper.wasm, compiled from SLEEPER."""
    context = root / "context"
    context.mkdir()
    (root / "sleeper.c").write_text(SLEEPER)
    compile_wasi(root / "sleeper.c", context / "sleeper.wasm")
    return context
