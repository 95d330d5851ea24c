"""Flag parsing shared by the command-line entry points: user errors are one stderr line."""

from __future__ import annotations

import sys
from typing import Optional

from absl import flags


def parse_flags(flag_values, argv) -> Optional[int]:
    """Parse ``argv`` into ``flag_values``; on a user error print one line and return 2.

    Returns ``None`` when parsing succeeded (the caller goes on).
    """
    try:
        rest = flag_values(list(argv))
    except flags.Error as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    if len(rest) > 1:
        print(f"error: unexpected argument(s) {' '.join(rest[1:])}; flags look like --name=value",
              file=sys.stderr)
        return 2
    return None
