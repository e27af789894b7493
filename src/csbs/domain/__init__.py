"""The pure model: identifiers, errors, time and the rules that need no I/O."""

from __future__ import annotations
