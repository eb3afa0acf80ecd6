"""Run the sandbox until Ctrl-C for manual trials: ``python -m infima_autotask.sandbox``.

The credentials printed are throwaway values made for this run only.
"""

from __future__ import annotations

import sys
import threading

from . import Sandbox


def main() -> None:
    """Start the sandbox, print how to reach it and wait for Ctrl-C."""
    with Sandbox() as sandbox:
        lines = [
            "infima-autotask sandbox running (Ctrl-C to stop)",
            f"  INFIMA_AUTOTASK_ZONE_URL={sandbox.zone_url}",
            f"  INFIMA_AUTOTASK_API_URL={sandbox.autotask_url}",
            f"  INFIMA_AUTOTASK_USERNAME={sandbox.username}",
            f"  INFIMA_AUTOTASK_SECRET={sandbox.secret}",
            f"  INFIMA_AUTOTASK_INTEGRATION_CODE={sandbox.integration_code}",
            f"  INFIMA_API_URL={sandbox.infima_url}",
            f"  INFIMA_API_KEY={sandbox.api_key}",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            sys.stdout.write("stopped\n")


if __name__ == "__main__":
    main()
