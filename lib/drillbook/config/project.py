"""``parameters/project.yaml``: settings of the project as a whole, committed with it.

    archive: s3://bucket/prefix    # or a folder; a relative one is relative to the project

One key today. ``archive`` is where the evidence archive lives for every checkout of the project
(each worker of a team): a folder, or ``s3://bucket/prefix`` on any S3-compatible store (endpoint
and credentials from the standard AWS settings, never from here). ``DRILLBOOK_ARCHIVE`` overrides
it; without either the archive is ``reports/evidence``. ``paths.archive_location`` asks here.

A file that is missing is no setting; one that is malformed, has an unknown key, or an archive
that is not one line of text is refused in one line (exit 2), naming the file. An ``s3://`` value
is checked further where it is parsed (``evidence.store.parse_s3``).
"""
from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError

SETTINGS_NAME = "project.yaml"
KEYS = ("archive",)


def settings_path(project: Path) -> Path:
    return project / "parameters" / SETTINGS_NAME


def _settings(path: Path) -> dict[str, object]:
    from .yamlfile import read_yaml  # PyYAML only when there is a file to read

    data = read_yaml(path, "project settings") or {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of setting: value", "write archive: s3://bucket/prefix")
    unknown = sorted(str(k) for k in data if k not in KEYS)
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}", f"the settings are: {', '.join(KEYS)}")
    return {str(k): v for k, v in data.items()}


def archive_setting(project: Path) -> str | None:
    """The archive ``parameters/project.yaml`` names (a folder made absolute, or an ``s3://`` URL),
    None when it names none."""
    path = settings_path(project)
    if not path.is_file():
        return None
    value = _settings(path).get("archive")
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip() or not value.isprintable() or value != value.strip():
        raise ConfigError(f"{path}: archive: expected a folder or s3://bucket/prefix, got {repr(value)[:80]}",
                          "write archive: s3://bucket/prefix (or a folder, e.g. reports/evidence)")
    if value.startswith("s3://"):
        return value
    folder = Path(value).expanduser()
    return str(folder if folder.is_absolute() else project / folder)
