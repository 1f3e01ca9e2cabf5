"""A run's attachments/ folder: files a drill stores in its evidence bundle, scrubbed by the kernel
that knows the secrets.

A secret may have changed (a rotation) or be unknown to the runner by the time it archives, so
text is scrubbed here, with the drill's redactor, before it is written and again at the end of
the run for the files cells wrote themselves. Binary content is kept as it is.
"""
from __future__ import annotations

from pathlib import Path

from .config.secrets import Redactor

FOLDER = "attachments"


def directory(run_dir: Path | None) -> Path | None:
    """The run's attachments folder, made on first use; None outside ``drillbook run``."""
    if run_dir is None:
        return None
    path = run_dir / FOLDER
    path.mkdir(exist_ok=True)
    return path


def write(folder: Path, name: str, content: str | bytes, redactor: Redactor) -> Path:
    """Store ``content`` as ``name`` (its last part only: never outside the folder), scrubbed."""
    target = folder / Path(name).name
    target.write_bytes(scrubbed_bytes(content, redactor))
    return target


def scrubbed_bytes(content: str | bytes, redactor: Redactor) -> bytes:
    """Text scrubbed by this kernel before it is written (a secret may have changed by the
    time the runner resolves it again); binary content as it is."""
    if isinstance(content, str):
        return redactor.scrub(content).encode("utf-8")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        return content
    return redactor.scrub(text).encode("utf-8")


def scrub_in_place(run_dir: Path | None, redactor: Redactor) -> None:
    """Scrub, in place, the text files cells wrote into attachments/ themselves (``write``
    scrubs what it writes): the runner cannot scrub a secret whose value is gone by then."""
    folder = run_dir / FOLDER if run_dir is not None else None
    if folder is None or not folder.is_dir() or not redactor:
        return
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink()):
        data = path.read_bytes()
        clean = scrubbed_bytes(data, redactor)
        if clean != data:
            path.write_bytes(clean)
