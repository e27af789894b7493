"""`python -m csbs` runs the command line."""

from __future__ import annotations

from csbs.cli import main

if __name__ == "__main__":
    main()
