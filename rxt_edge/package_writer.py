"""Writing a model package: stage beside the destination, hash the files, write the manifest, swap it in.

Export and quantize both build packages with `PackageWriter`. Files go into a hidden temporary sibling of the
destination (same filesystem, so the final rename is atomic); `commit()` writes the manifest and renames the
directory into place. Any error or Ctrl-C before that removes the staging directory (and any parent it
created), so the destination holds the old package or the new one, never half of either.

Replacing (`overwrite=True`, the CLI's `--overwrite`) is allowed only for a directory that is recognisably a
package this writer made (a `manifest.json` that parses and nothing beside the files it names), and never for
a path that is, contains or lies inside a source the caller names (the checkpoint, the package being
quantized). A mistyped `-o` (the checkpoint itself, `models/`, a home folder) is refused before any work.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from . import contract
from .graph_check import package_requirements
from .manifest import (
    MANIFEST_FILE,
    Manifest,
    ManifestError,
    _created_by,
    format_version_needed,
    load_manifest,
    resolve_file,
    sha256_file,
    write_manifest,
)

PathLike = str | os.PathLike[str]


class PackageWriteError(RuntimeError):
    """The destination may not be written or replaced; nothing was changed on disk."""


# ---------------------------------------------------------------- destination checks


def check_destination(output: PathLike, *, overwrite: bool, sources: Iterable[PathLike] = ()) -> None:
    """Refuse a destination the writer must not create or replace; raises PackageWriteError with the reason.

    `sources`: paths the caller reads from (checkpoint directory, tokenizer file, source package); the output
    may be none of them, contain none of them and lie inside none of them."""
    output = Path(output)
    for src in sources:
        _check_apart(output, Path(src))
    if not os.path.lexists(output):
        return
    if not overwrite:
        raise PackageWriteError(f"{output} already exists; pass --overwrite to replace it")
    reason = _not_a_package(output)
    if reason:
        raise PackageWriteError(
            f"{output}: {reason}; --overwrite replaces only a model package written by rxt-edge. "
            "Choose a new output directory (or remove this one yourself)"
        )


def _forms(path: Path) -> set[Path]:
    """The path as typed (absolute) and with symlinks resolved: either may be how the other path names it."""
    forms = {Path(os.path.abspath(path))}
    with contextlib.suppress(OSError, RuntimeError):
        forms.add(path.resolve())
    return forms


def _check_apart(output: Path, source: Path) -> None:
    for out in _forms(output):
        for src in _forms(source):
            if out == src:
                how = "is"
            elif src.is_relative_to(out):
                how = "contains"
            elif out.is_relative_to(src):
                how = "is inside"
            else:
                continue
            raise PackageWriteError(
                f"{output} {how} the source {source}; the output must be a separate new directory "
                "(a package is never written into, over or around what it is made from)"
            )


def _not_a_package(directory: Path) -> str | None:
    """Why `directory` is not a package this writer made (None when it is one, so it may be replaced)."""
    if directory.is_symlink():
        return "is a symbolic link"
    if not directory.is_dir():
        return "exists and is not a directory"
    try:  # never open a FIFO or device named manifest.json: it could block forever
        if not stat.S_ISREG(os.lstat(directory / MANIFEST_FILE).st_mode):
            return f"its {MANIFEST_FILE} is not a regular file"
    except FileNotFoundError:
        return f"has no {MANIFEST_FILE} (not a model package)"
    except OSError as e:
        return f"cannot read {MANIFEST_FILE} ({e.strerror or e})"
    try:
        manifest = load_manifest(directory)
    except ManifestError as e:
        return f"not a valid model package ({e})"
    named = {MANIFEST_FILE, *(rel for _, rel in manifest.all_files())}
    parents = {p.as_posix() for rel in named for p in Path(rel).parents if p != Path(".")}
    strangers: list[str] = []
    for root, dirs, files in os.walk(directory):
        here = Path(root).relative_to(directory)
        for name in files + dirs:
            rel = (here / name).as_posix()
            if rel not in named and rel not in parents:
                strangers.append(rel)
        dirs[:] = [d for d in dirs if (here / d).as_posix() in parents]
        if len(strangers) >= 5:
            break
    if strangers:
        return f"holds files that are not part of the package ({', '.join(sorted(strangers)[:5])})"
    return None


# ---------------------------------------------------------------- the writer


class PackageWriter:
    """Builds one package in a staging directory and swaps it into `output` on `commit()`.

    Use as a context manager: leaving the block without a commit (an exception, Ctrl-C) discards the
    staging directory. The destination is checked (`check_destination`) when the writer is made, before any
    work, and again just before the swap."""

    def __init__(self, output: PathLike, *, overwrite: bool = False, sources: Iterable[PathLike] = ()):
        self.output = Path(output)
        self.overwrite = overwrite
        self.sources = tuple(Path(s) for s in sources)
        self.committed = False
        self._staging: Path | None = None
        check_destination(self.output, overwrite=overwrite, sources=self.sources)
        self._created = [p for p in reversed(self.output.absolute().parents) if not p.exists()]
        try:
            self.output.parent.mkdir(parents=True, exist_ok=True)
            if not os.access(self.output.parent, os.W_OK):
                raise PermissionError(errno.EACCES, "not writable")
            self._staging = Path(tempfile.mkdtemp(prefix=f".{self.output.name}.", dir=self.output.parent))
        except BaseException as e:
            self.abort()
            if isinstance(e, OSError):  # a file in the way, read-only filesystem, no permission
                raise PackageWriteError(
                    f"cannot write the package beside {self.output}: {self.output.parent}: {e.strerror or e}"
                ) from None
            raise

    @property
    def staging(self) -> Path:
        if self._staging is None:
            raise RuntimeError("the package writer was aborted")
        return self._staging

    def __enter__(self) -> PackageWriter:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if not self.committed:
            self.abort()

    # ------------------------------------------------------------ files

    def path(self, relpath: str) -> Path:
        """Where to write the package file `relpath` (confined to the package; parents created)."""
        target = resolve_file(self.staging, relpath)
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def copy_in(self, source: PathLike, relpath: str) -> Path:
        """Copy a file into the package as `relpath`; returns its staged path."""
        target = self.path(relpath)
        shutil.copyfile(source, target)
        return target

    def file_entry(self, relpath: str, *, size: bool = True) -> dict[str, Any]:
        """The manifest entry of a staged file: its name, sha256 and (by default) byte size."""
        path = self.path(relpath)
        entry: dict[str, Any] = {"file": relpath, "sha256": sha256_file(path)}
        if size:
            entry["size"] = path.stat().st_size
        return entry

    def graph_entry(
        self,
        name: str,
        dims: contract.ModelDims,
        precision: str,
        float_dtype: str,
        kv_cache: str = "dynamic",
        memory_kv: str = "float",
        next_token: bool = False,
    ) -> dict[str, Any]:
        """The manifest entry of the staged graph `<name>.onnx`: file, hashes (external data files included,
        found by their `<name>.onnx` prefix) and the contract's I/O for `dims` in `float_dtype` (the decoder's
        for its `kv_cache` layout and its `next_token` output; the memory K/V in their `memory_kv` form)."""
        file = f"{name}.onnx"
        extra = sorted(p.name for p in self.staging.iterdir() if p.name.startswith(file) and p.name != file)
        ins, outs = contract.graph_io(dims, name, float_dtype, kv_cache, memory_kv, next_token)
        entry = self.file_entry(file)
        if extra:
            entry["external_data"] = [self.file_entry(f) for f in extra]
        entry.update(
            inputs=[s.to_json() for s in ins], outputs=[s.to_json() for s in outs], precision=precision
        )
        if kv_cache != "dynamic":
            entry["kv_cache"] = kv_cache
        if memory_kv != "float":
            entry["memory_kv"] = memory_kv
        if next_token:
            entry["next_token"] = True
        return entry

    # ------------------------------------------------------------ finish

    def commit(self, manifest: dict[str, Any]) -> Manifest:
        """Validate `manifest` (JSON form; `format_version`, `created_by` and `requires` are stamped here), write
        it, swap the package in.

        Raises ManifestError for an invalid manifest and PackageWriteError when the destination changed
        into something that may not be replaced since the writer was made; the staging is discarded then."""
        try:
            version = format_version_needed(manifest)
            stamped = {**manifest, "format_version": version, "created_by": _created_by()}
            files = [g["file"] for g in manifest["graphs"].values()]  # requires: what the staged graphs use
            stamped["requires"] = package_requirements(self.staging, files).to_json()
            parsed = Manifest.from_json(stamped)
            write_manifest(self.staging, parsed)
        except BaseException:
            self.abort()
            raise
        self.publish()
        return parsed

    def publish(self) -> Path:
        """Swap the staged files in as they are; `commit()` does this after writing the manifest.

        Alone, for a directory of graphs that is not a model package (the bench's stateless baseline): without
        a manifest it can never be recognised as ours, so such a writer never replaces anything."""
        try:
            if self.overwrite and not (self.staging / MANIFEST_FILE).is_file():
                raise PackageWriteError(
                    f"{self.output}: only a model package (with a manifest) may replace one"
                )
            check_destination(self.output, overwrite=self.overwrite, sources=self.sources)
            _publish(self.staging, self.output)
        except BaseException:
            self.abort()
            raise
        self.committed = True
        self._staging = None
        return self.output

    def abort(self) -> None:
        """Discard the staging directory and the parents this writer created (only if still empty)."""
        if self._staging is not None:
            shutil.rmtree(self._staging, ignore_errors=True)
            self._staging = None
        for d in reversed(self._created):
            with contextlib.suppress(OSError):
                d.rmdir()


def _publish(staging: Path, output: Path) -> None:
    """Rename the finished staging directory into place with the permissions of a normal mkdir.

    An old package is moved aside first and put back if the rename fails or is interrupted (recovery reads
    the state on disk, so it holds wherever the interruption lands), then deleted."""
    umask = os.umask(0)
    os.umask(umask)
    # mkdtemp made it 0700, mkstemp the manifest 0600: packages are shareable
    for p in [staging, *staging.rglob("*")]:
        p.chmod((0o777 if p.is_dir() else 0o666) & ~umask)
    old = staging.with_name(staging.name + ".old")
    try:
        if os.path.lexists(output):
            os.replace(output, old)
        os.replace(staging, output)
    except BaseException:
        if os.path.lexists(old) and not os.path.lexists(output):
            os.replace(old, output)
        raise
    shutil.rmtree(old, ignore_errors=True)
