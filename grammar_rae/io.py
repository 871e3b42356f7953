"""Atomic file writes, shared by checkpoints, densities, datasets and reports."""
from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import DataFormatError


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextmanager
def atomic_target(path: str | Path):
    """Yield a temporary path beside ``path``; on success it replaces ``path`` in one rename, so a
    reader (or a resumed run after a kill) sees the old file or the new one, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_target(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def write_lines(path: str | Path, lines) -> None:
    """One string a line (None: an empty line), written atomically."""
    atomic_write_bytes(path, "".join((s or "") + "\n" for s in lines).encode("utf-8"))


def write_codes(path: str | Path, z) -> None:
    """Latent codes as ``.csv`` or ``.npy`` (float32 [n, d]), written atomically."""
    import numpy as np

    with atomic_target(path) as tmp:
        if str(path).endswith(".csv"):
            np.savetxt(tmp, z, delimiter=",", fmt="%.7g")
        else:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(z, dtype=np.float32))


def read_codes(path: str | Path, dim: int | None = None):
    """Latent codes from ``.npy`` (never unpickled) or ``.csv``: a finite float32 [n, dim] array, or
    a DataFormatError that says what is wrong with the file."""
    import numpy as np

    try:
        if str(path).endswith(".csv"):
            z = np.loadtxt(path, delimiter=",", ndmin=2, dtype=np.float32)
        else:
            z = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise DataFormatError(f"no such codes file: {path}") from None
    except (OSError, ValueError, EOFError) as e:
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise DataFormatError(f"{path} is not a .npy or .csv array of codes ({first})") from None
    return check_codes(z, dim, str(path))


def check_codes(z, dim: int | None = None, source: str = "codes"):
    """``z`` as a finite float32 [n, dim] array, or a DataFormatError naming the problem."""
    import numpy as np

    z = np.asarray(z)
    if z.dtype.kind not in "fiu":
        raise DataFormatError(f"{source} holds {z.dtype} values, not numbers")
    z = z.astype(np.float32, copy=False)
    if z.ndim != 2 or (dim is not None and z.shape[1] != dim):
        want = f"[n, {dim}]" if dim is not None else "[n, d]"
        raise DataFormatError(f"{source}: codes must have shape {want} for this run, got {list(z.shape)}")
    bad = np.flatnonzero(~np.isfinite(z).all(1))
    if len(bad):
        rows = ", ".join(str(i + 1) for i in bad[:5]) + (" …" if len(bad) > 5 else "")
        raise DataFormatError(f"{source}: {len(bad)} code(s) hold NaN or inf (rows {rows}); a code must be "
                              "finite to be decoded")
    return z


def remove_stale_temporaries(folder: str | Path) -> list[str]:
    """Delete the temporary files :func:`atomic_target` leaves when a process is killed mid-write
    (``.NAME.XXXXXXXX`` beside NAME); the committed files are untouched. Returns the names removed."""
    folder = Path(folder)
    removed = []
    if folder.is_dir():
        for p in folder.iterdir():
            if p.is_file() and p.name.startswith(".") and p.name.count(".") >= 2:
                p.unlink(missing_ok=True)
                removed.append(p.name)
    return removed
