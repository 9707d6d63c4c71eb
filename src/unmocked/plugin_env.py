"""Export the database into the environment before conftest.py is imported."""

from __future__ import annotations
