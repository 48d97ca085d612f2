"""Where a server may read checkpoints from when a caller names a path instead of uploading a file.

Registering by path exists for checkpoints too large to upload. A caller must not make the
server read arbitrary files (``/etc/shadow``, another tenant's data), so a path is accepted
only under ``<data_dir>/incoming`` or a directory of ``M2N2_REGISTRATION__IMPORT_DIRS``. The
HTTP service and any other front end apply the same rule.
"""

from pathlib import Path

from ecosystem.errors import InvalidInput
from ecosystem.settings import Settings

INCOMING = "incoming"  # the data directory's own drop folder


def import_roots(settings: Settings) -> list[Path]:
    """The directories paths may lie under: the data directory's ``incoming`` and the configured ones."""
    return [settings.data_dir / INCOMING, *settings.registration.import_dirs]


def importable(path: str | Path, settings: Settings) -> Path:
    """``path`` resolved (symbolic links followed), if it is absolute and lies under an import root.

    ``InvalidInput`` names the allowed roots otherwise. A file or a checkpoint directory may be named.
    """
    path = Path(path)
    roots = import_roots(settings)
    resolved = path.resolve()
    if not path.is_absolute() or not any(resolved.is_relative_to(root.resolve()) for root in roots):
        allowed = ", ".join(str(r) for r in roots)
        raise InvalidInput(f"path must be absolute and lie under one of: {allowed} (M2N2_REGISTRATION__IMPORT_DIRS)")
    return resolved
