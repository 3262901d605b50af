"""`python -m pai` and the `pai` command, whose console script calls `main`.

Ctrl-C while the command line is still being imported is answered as it is later (one line,
exit code 130): from then on `pai.cli.main` answers it, for its imports too.
"""

import os
import signal
import sys

from pai.core.errors import INTERRUPTED


def main() -> int:
    """Import the command line and run it on `sys.argv`; its exit code.

    An interrupted command exits 130 at once: CPython ends a process whose KeyboardInterrupt
    passed through C code running Python (an interrupted import can) by SIGINT at shutdown,
    even when the interrupt was caught, and the caller would see a signal, not exit code 130.
    An interrupt that arrives where Python ignores exceptions (a finalizer, a callback) is
    remembered, so the command still exits 130 once what it was doing has ended.
    """
    interrupts: list[int] = []

    def interrupt(signum: int, frame: object) -> None:
        interrupts.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    try:
        from pai.cli import main as run_command_line

        code = run_command_line()
    except KeyboardInterrupt:
        print(f"pai: {INTERRUPTED}", file=sys.stderr)
        code = 130
    if interrupts and code != 130:  # the KeyboardInterrupt was swallowed (a __del__, a callback)
        print(f"pai: {INTERRUPTED}", file=sys.stderr)
        code = 130
    if code == 130:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(130)
    return code


if __name__ == "__main__":
    sys.exit(main())
