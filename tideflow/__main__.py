"""`python -m tideflow`: the same as the `tideflow` command."""

from __future__ import annotations

from tideflow.cli import main

if __name__ == "__main__":
    main(prog_name="tideflow")
