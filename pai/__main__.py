"""`python -m pai` is the `pai` command."""

import sys

from pai.cli import main

sys.exit(main())
