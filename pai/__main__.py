"""`python -m pai` and the `pai` command, whose console script calls `main`.

Ctrl-C while the command line is still being imported is answered as it is later (one line,
exit code 130): from then on `pai.cli.main` answers it, for its imports too.
"""

import sys

from pai.core.errors import INTERRUPTED


def main() -> int:
    """Import the command line and run it on `sys.argv`; its exit code."""
    try:
        from pai.cli import main as run_command_line
    except KeyboardInterrupt:
        print(f"pai: {INTERRUPTED}", file=sys.stderr)
        return 130
    return run_command_line()


if __name__ == "__main__":
    sys.exit(main())
