"""Wire models: the CSBS / Keystone field names live only here."""

from __future__ import annotations
