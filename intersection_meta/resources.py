"""Resources: where the named scenarios and the shipped policies live, for every way the package is installed.

The repository keeps ``scenarios/`` and ``policies/`` at its top level; a wheel (``pip install .``) carries them as
``intersection_meta/_data/scenarios`` and ``intersection_meta/_data/policies`` (see ``setup.py``). A checkout and an
editable install import the package from the repository itself, so there the folders sit next to the package.

Shipped policies are named by file stem (``policies:yield_left_directed_maml``, the prefix optional) or by the
scenario they were trained on (``yield_left``), as recorded in ``policies/index.yaml``.

This module imports neither torch nor pygame.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

PACKAGE_DIR = Path(__file__).resolve().parent
#: Prefix that names a shipped policy explicitly: ``--checkpoint policies:yield_left_directed_maml``.
POLICY_PREFIX = "policies:"
POLICY_INDEX = "index.yaml"


def data_dir(name: str) -> Path:
    """The folder of shipped data ``name`` (``"scenarios"`` or ``"policies"``).

    Installed from a wheel: ``<package>/_data/NAME``; in a checkout or an editable install: ``<repo>/NAME``.
    When neither exists (a broken install), the installed location is returned, so lookups find nothing there
    and callers report an empty list instead of reading some unrelated folder.
    """
    installed = PACKAGE_DIR / "_data" / name
    if installed.is_dir():
        return installed
    checkout = PACKAGE_DIR.parent / name
    return checkout if checkout.is_dir() else installed


def scenario_dir() -> Path:
    """Where named scenarios live (``NAME.yaml``)."""
    return data_dir("scenarios")


def policy_dir() -> Path:
    """Where the shipped policies and their ``index.yaml`` live."""
    return data_dir("policies")


def policy_index() -> dict[str, dict[str, Any]]:
    """``policies/index.yaml``: file name -> provenance entry (empty if the index is missing)."""
    path = policy_dir() / POLICY_INDEX
    if not path.is_file():
        return {}
    index = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(index, dict):
        raise ValueError(f"{path}: expected a mapping of policy file names to entries")
    return index


def shipped_policy_names() -> list[str]:
    """Stems of the shipped policy files, e.g. ``["yield_left_directed_maml"]``."""
    return sorted(p.stem for p in policy_dir().glob("*.pt"))


def resolve_checkpoint(name_or_path: str | Path) -> Path:
    """The file meant by a ``--checkpoint`` argument.

    An existing path is returned as is. Otherwise ``policies:NAME`` or a bare ``NAME`` (no folder, no suffix)
    names a shipped policy: by file stem (``yield_left_directed_maml``) or by the scenario it was trained on
    (``yield_left``, when exactly one shipped policy has it). Anything else is returned unchanged, so the loader
    reports it as missing.

    Raises:
        ValueError: for ``policies:NAME`` with no such shipped policy, or a scenario name shared by several.
    """
    text = str(name_or_path)
    explicit = text.startswith(POLICY_PREFIX)
    name = text[len(POLICY_PREFIX):] if explicit else text
    path = Path(name_or_path)
    if not explicit and (path.exists() or path.suffix or len(path.parts) != 1):
        return path
    by_stem = policy_dir() / f"{Path(name).stem}.pt"
    if by_stem.is_file():
        return by_stem
    trained_on = [file for file, entry in policy_index().items()
                  if isinstance(entry, dict) and entry.get("scenario") == name and (policy_dir() / file).is_file()]
    if len(trained_on) == 1:
        return policy_dir() / trained_on[0]
    if len(trained_on) > 1 or explicit:
        shipped = ", ".join(POLICY_PREFIX + n for n in shipped_policy_names()) or "none"
        what = f"several shipped policies were trained on {name!r}" if trained_on else "no shipped policy of that name"
        raise ValueError(f"{text}: {what}; shipped policies: {shipped}")
    return path


def shipped_policy_entry(path: str | Path) -> dict[str, Any] | None:
    """The ``index.yaml`` entry of a shipped policy file, or None if ``path`` is not one of them."""
    path = Path(path).resolve()
    if path.parent != policy_dir().resolve():
        return None
    entry = policy_index().get(path.name)
    return entry if isinstance(entry, dict) else None
