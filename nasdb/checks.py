"""Checks of user input shared by every package: each raises with the broken rule and the value."""

from __future__ import annotations

import re

#: Device names Windows reserves in every folder, with any extension: never a task's folder name.
RESERVED_NAME = re.compile(r"^(CON|PRN|AUX|NUL|COM[0-9]|LPT[0-9])(\..*)?$", re.IGNORECASE)


def reserved_message(name: str) -> str:
    """Why ``name`` (a match of RESERVED_NAME) cannot name a task."""
    return (f"task name {name!r} is reserved: CON, PRN, AUX, NUL, COM0-9 and LPT0-9 (with any extension) are "
            "device names on Windows, not folders; choose another name")
