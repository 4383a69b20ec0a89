"""Build layer tarballs entry by entry, hostile ones included."""

from __future__ import annotations

import io
import tarfile


class Layer:
    """In-memory tar writer with terse helpers for each entry type."""

    def __init__(self) -> None:
        self.buf = io.BytesIO()
        self.tf = tarfile.TarFile(fileobj=self.buf, mode="w", format=tarfile.PAX_FORMAT)

    def _add(self, ti: tarfile.TarInfo, data: bytes | None = None) -> Layer:
        ti.mtime = ti.mtime or 1_600_000_000
        self.tf.addfile(ti, io.BytesIO(data) if data is not None else None)
        return self

    def dir(self, name: str, mode: int = 0o755, **kw) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode = tarfile.DIRTYPE, mode
        return self._set(ti, kw)

    def file(self, name: str, data: bytes = b"x", mode: int = 0o644, **kw) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode = len(data), mode
        self._set(ti, kw, add=False)
        return self._add(ti, data)

    def header_only(self, name: str, size: int) -> Layer:
        """A header claiming `size` bytes with no payload behind it (a size bomb)."""
        ti = tarfile.TarInfo(name)
        ti.size = size
        self.buf.write(ti.tobuf(tarfile.PAX_FORMAT))
        self.tf.offset = self.buf.tell()
        return self

    def symlink(self, name: str, target: str, **kw) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname, ti.mode = tarfile.SYMTYPE, target, 0o777
        return self._set(ti, kw)

    def link(self, name: str, target: str) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.linkname = tarfile.LNKTYPE, target
        return self._add(ti)

    def node(
        self, name: str, kind: bytes, major: int = 0, minor: int = 0, mode: int = 0o666
    ) -> Layer:
        ti = tarfile.TarInfo(name)
        ti.type, ti.devmajor, ti.devminor, ti.mode = kind, major, minor, mode
        return self._add(ti)

    def _set(self, ti: tarfile.TarInfo, kw: dict, add: bool = True) -> Layer:
        ti.uid, ti.gid = kw.get("uid", 0), kw.get("gid", 0)
        if "mtime" in kw:
            ti.mtime = kw["mtime"]
        if "xattrs" in kw:
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in kw["xattrs"].items()}
        return self._add(ti) if add else self

    def bytes(self) -> bytes:
        self.tf.close()
        return self.buf.getvalue()

    def stream(self) -> io.BytesIO:
        return io.BytesIO(self.bytes())

