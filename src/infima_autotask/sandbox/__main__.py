"""Run the sandbox until Ctrl-C for manual trials: ``python -m infima_autotask.sandbox``.

The credentials printed are throwaway values made for this run only.
"""

from __future__ import annotations

import sys
import threading

from . import Sandbox


def main() -> None:
    """Start the sandbox, print how to reach it and wait for Ctrl-C."""
    if len(sys.argv) > 1:
        sys.stdout.write((__doc__ or "").strip() + "\nIt takes no options.\n")
        raise SystemExit(0 if sys.argv[1] in ("-h", "--help") else 2)
    with Sandbox() as sandbox:
        lines = [
            "infima-autotask sandbox running (Ctrl-C to stop)",
            "",
            "# Point the tool at it (paste into another shell):",
            f"export INFIMA_AUTOTASK_ZONE_URL={sandbox.zone_url}",
            f"export INFIMA_API_URL={sandbox.infima_url}",
            "",
            "# Then answer `infima-autotask connect` and `connect --infima` with:",
            f"#   username          {sandbox.username}",
            f"#   integration code  {sandbox.integration_code}",
            f"#   secret            {sandbox.secret}",
            f"#   INFIMA API key    {sandbox.api_key}",
            "",
            "# Or skip connect and keep every credential in the environment:",
            f"#   export INFIMA_AUTOTASK_API_URL={sandbox.autotask_url}",
            f"#   export INFIMA_AUTOTASK_USERNAME={sandbox.username}",
            f"#   export INFIMA_AUTOTASK_SECRET={sandbox.secret}",
            f"#   export INFIMA_AUTOTASK_INTEGRATION_CODE={sandbox.integration_code}",
            f"#   export INFIMA_API_KEY={sandbox.api_key}",
            "# and give the tool a config file of its own (`map` fills it in):",
            "#   printf 'version: 1\\n' > sandbox.yaml",
            "#   export INFIMA_AUTOTASK_CONFIG=$PWD/sandbox.yaml",
            "",
            "# ConnectWise PSA (`connect --psa connectwise`):",
            f"#   site              {sandbox.cw_site}",
            f"#   company id        {sandbox.cw_company_id}",
            f"#   public key        {sandbox.cw_public_key}",
            f"#   private key       {sandbox.cw_private_key}",
            f"#   clientId          {sandbox.cw_client_id}",
            f"#   (or export INFIMA_CONNECTWISE_PRIVATE_KEY={sandbox.cw_private_key})",
            "",
            "# HaloPSA (`connect --psa halo`; on-premises style: no tenant needed):",
            f"#   url               {sandbox.halo_url}",
            f"#   client id         {sandbox.halo_client_id}",
            f"#   client secret     {sandbox.halo_client_secret}",
            f"#   (or export INFIMA_HALO_CLIENT_SECRET={sandbox.halo_client_secret})",
        ]
        sys.stdout.write("\n".join(lines) + "\n")
        sys.stdout.flush()
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            sys.stdout.write("stopped\n")


if __name__ == "__main__":
    main()
