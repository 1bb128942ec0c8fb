"""`make demo`: a small local cluster doing real work (filled in by the end-to-end issue)."""

import sys


def main() -> int:
    print("formnet demo: not yet — the end-to-end job path has not landed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
