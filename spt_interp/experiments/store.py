"""A run store: finished tuning runs cached on disk by what defines them, resumable.

A store is a folder: ``store.json`` names what every run in it shares (the model's weights,
the data, the evaluation settings) and ``runs/<key>.json`` holds one finished run each,
written to a temporary name and renamed, so a stopped frontier keeps every run that ended and
never a half-written one. A run's key hashes its (mode, lr, seed, steps, batch, head set);
asking for a run already stored returns it, and any changed setting is a different key.
Opening a store written for another model or data set is refused.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from spt_interp.errors import SptInterpError

IDENTITY_FILE = "store.json"
RUNS = "runs"
FORMAT = "spt-interp run store"


def run_key(setting: dict[str, Any]) -> str:
    """Return the stable hash naming a run with these settings (order of keys does not matter)."""
    text = json.dumps(setting, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _write_atomically(path: Path, data: dict[str, Any]) -> None:
    temporary = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with temporary.open("w") as handle:
        json.dump(data, handle, indent=1, sort_keys=True)
        handle.write("\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


class RunStore:
    """The runs of one (model, data, evaluation) identity, one JSON file per finished run."""

    def __init__(self, folder: str | Path, identity: dict[str, Any]) -> None:
        self.folder = Path(folder)
        self.identity = identity
        marker = self.folder / IDENTITY_FILE
        if marker.is_file():
            try:
                stored = json.loads(marker.read_text())
            except json.JSONDecodeError as err:
                raise SptInterpError(f"{marker}: not a run store's identity ({err})") from None
            if not isinstance(stored, dict) or stored.get("format") != FORMAT:
                raise SptInterpError(f"{marker}: not a run store's identity file")
            differs = sorted(
                k
                for k in set(identity) | set(stored["identity"])
                if stored["identity"].get(k) != identity.get(k)
            )
            if differs:
                name = differs[0]
                raise SptInterpError(
                    f"{marker}: this run store was written for another {name} "
                    f"({_short(stored['identity'].get(name))}, not {_short(identity.get(name))}); "
                    "give another --store"
                )
        elif self.folder.exists() and any(self.folder.iterdir()):
            raise SptInterpError(
                f"{self.folder}: exists and is not a run store (no {IDENTITY_FILE})"
            )
        else:
            (self.folder / RUNS).mkdir(parents=True, exist_ok=True)
            _write_atomically(marker, {"format": FORMAT, "identity": identity})
        (self.folder / RUNS).mkdir(exist_ok=True)  # a store whose runs/ was deleted

    def path(self, setting: dict[str, Any]) -> Path:
        return self.folder / RUNS / f"{run_key(setting)}.json"

    def get(self, setting: dict[str, Any]) -> dict[str, Any] | None:
        """Return the stored run with exactly these settings, or None."""
        path = self.path(setting)
        if not path.is_file():
            return None
        try:
            run = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise SptInterpError(
                f"{path}: a damaged run file ({err}); delete it to rerun"
            ) from None
        if run.get("setting") != setting:
            raise SptInterpError(f"{path}: holds another run's settings; delete it to rerun")
        return run

    def put(self, setting: dict[str, Any], result: dict[str, Any]) -> dict[str, Any]:
        """Store a finished run's result under its settings; return the stored record."""
        record = {"setting": setting, **result}
        _write_atomically(self.path(setting), record)
        return record

    def runs(self) -> list[dict[str, Any]]:
        """Return every stored run, ordered by mode, then by the setting's numbers in its own
        order (a method's lr then seed, a steering's alpha then seed)."""
        runs = []
        for path in sorted((self.folder / RUNS).glob("*.json")):
            try:
                runs.append(json.loads(path.read_text()))
            except json.JSONDecodeError as err:
                raise SptInterpError(f"{path}: a damaged run file ({err})") from None
        return sorted(runs, key=_order)


def _order(run: dict[str, Any]) -> tuple[str, tuple[float, ...]]:
    setting = run["setting"]
    numbers = (v for k, v in setting.items() if k != "mode" and isinstance(v, (int, float)))
    return setting["mode"], tuple(numbers)


def _short(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 60 else text[:57] + "..."
