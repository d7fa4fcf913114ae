"""Run profiles: which notebooks the book runs, with which parameters, on which hardware.

A profile is a YAML file (``srilib/profiles/<name>.yaml`` or any path)::

    name: cpu
    description: ...
    hardware: cpu                # cpu | t4 | a100
    common: {profile: cpu, seed: 0, steps: 32}
    notebooks:                   # run in this order
      sri_geometry: {models: [smollm2-135m], n_anchor: 120}

The parameters a notebook receives are ``{**common, **notebooks[name]}``; papermill injects them.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

PROFILE_DIR = Path(__file__).parent / "profiles"
HARDWARE = ("cpu", "t4", "a100")
_KEYS = {"name", "description", "hardware", "common", "notebooks"}
_NB_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Profile:
    """A parsed profile.

    Attributes
    ----------
    name, description, hardware : str
    common : dict
        Parameters shared by every notebook.
    notebook_params : dict
        Notebook name -> its own parameters, in run order.
    path : Path or None
        File the profile was read from.
    """

    name: str
    description: str
    hardware: str
    common: dict = field(default_factory=dict)
    notebook_params: dict = field(default_factory=dict)
    path: Path | None = None

    @property
    def notebooks(self) -> list[str]:
        """Notebook names in run order."""
        return list(self.notebook_params)

    def params_for(self, notebook: str) -> dict:
        """Parameters for ``notebook``: ``{**common, **notebooks[notebook]}``."""
        if notebook not in self.notebook_params:
            raise KeyError(f"profile {self.name!r} has no notebook {notebook!r}; it has {self.notebooks}. "
                           f"Add a `{notebook}:` entry under `notebooks:` in {self.path or 'the profile'}.")
        return {**self.common, **self.notebook_params[notebook]}


def available_profiles() -> list[str]:
    """Names of the profiles shipped in ``srilib/profiles/``."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.yaml"))


def _resolve(name_or_path: str | Path) -> Path:
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.is_file():
            raise FileNotFoundError(f"profile file {p} does not exist")
        return p
    shipped = PROFILE_DIR / f"{name_or_path}.yaml"
    if not shipped.is_file():
        raise ValueError(f"unknown profile {str(name_or_path)!r}; available: {', '.join(available_profiles())} "
                         f"(or pass a path to a .yaml file)")
    return shipped


def parse_profile(data: object, path: Path | None = None) -> Profile:
    """Validate a profile mapping (as read from YAML) and build a :class:`Profile`."""
    where = f"profile {path}" if path else "profile"
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping with keys {sorted(_KEYS)}, got {type(data).__name__}")
    unknown = set(data) - _KEYS
    missing = {"name", "hardware", "notebooks"} - set(data)
    if unknown or missing:
        raise ValueError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; "
                         f"allowed keys are {sorted(_KEYS)}")
    if data["hardware"] not in HARDWARE:
        raise ValueError(f"{where}: hardware must be one of {HARDWARE}, got {data['hardware']!r}")
    common = data.get("common") or {}
    notebooks = data["notebooks"] or {}
    if not isinstance(common, dict):
        raise ValueError(f"{where}: `common` must be a mapping of parameter -> value")
    if not isinstance(notebooks, dict) or not notebooks:
        raise ValueError(f"{where}: `notebooks` must be a non-empty mapping of notebook name -> parameters")
    for nb, params in notebooks.items():
        if not isinstance(nb, str) or not _NB_NAME.match(nb):
            raise ValueError(f"{where}: notebook name {nb!r} must be a notebook file stem like `sri_geometry`")
        if params is not None and not isinstance(params, dict):
            raise ValueError(f"{where}: parameters of {nb!r} must be a mapping, got {type(params).__name__}")
    return Profile(name=str(data["name"]), description=str(data.get("description", "")).strip(),
                   hardware=data["hardware"], common=dict(common),
                   notebook_params={nb: dict(p or {}) for nb, p in notebooks.items()}, path=path)


def load_profile(name_or_path: str | Path) -> Profile:
    """Load a shipped profile by name (``"cpu"``) or a profile YAML file by path."""
    path = _resolve(name_or_path)
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"profile {path} is not valid YAML: {e}") from e
    return parse_profile(data, path)
