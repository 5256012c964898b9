"""`rxt-edge kernels build`: compile rxt-edge's own CPU kernels (runtimes/native/*.cc) on this machine.

The wheel stays pure Python; the kernels are an opt-in speed-up built where they run, like a JIT extension: a
C++17 compiler (g++ or clang++, `$CXX`) and onnxruntime's C/C++ API headers. The headers come from Debian's
`libonnxruntime-dev` 1.21 package (downloaded once, checked against its SHA-256, unpacked with the standard
library) unless `--headers DIR` names a folder that has them (an onnxruntime release's `include/`). The library
is compiled for AVX2/FMA, written atomically into the cache directory (runtimes/native_kernels.py), then loaded
into a session once to prove onnxruntime accepts it.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import subprocess
import tarfile
import tempfile
import urllib.request
from collections.abc import Callable
from pathlib import Path

import onnxruntime as ort

from . import native_kernels

SOURCES = ("library.cc", "memory_attention.cc", "matmul_int4.cc")  # (with kernels.h)
HEADERS_DEB = (
    "https://deb.debian.org/debian/pool/main/o/onnxruntime/libonnxruntime-dev_1.21.0+dfsg-1_amd64.deb",
    "14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08",
)
NEEDED_HEADERS = ("onnxruntime_cxx_api.h", "onnxruntime_lite_custom_op.h", "onnxruntime_c_api.h")
FLAGS = ["-O3", "-std=c++17", "-mavx2", "-mfma", "-shared", "-fPIC", "-fvisibility=hidden"]


class KernelBuildError(RuntimeError):
    """The kernels cannot be built here; the message says why and what to do."""


def source_dir() -> Path:
    return Path(__file__).resolve().parent / "native"


def _has_headers(folder: Path) -> bool:
    return all((folder / name).is_file() for name in NEEDED_HEADERS)


def _ar_members(data: bytes) -> dict[str, bytes]:
    """The members of a Debian package (an `ar` archive: 8-byte magic, then 60-byte headers and bodies)."""
    if not data.startswith(b"!<arch>\n"):
        raise KernelBuildError("the headers package is not a Debian package (no ar signature)")
    members, at = {}, 8
    while at + 60 <= len(data):
        header = data[at : at + 60]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        members[name] = data[at + 60 : at + 60 + size]
        at += 60 + size + (size % 2)
    return members


def unpack_headers(deb: bytes, dest: Path) -> Path:
    """usr/include/onnxruntime/ of a libonnxruntime-dev package into dest; returns the include folder."""
    body = next((v for k, v in _ar_members(deb).items() if k.startswith("data.tar")), None)
    if body is None:
        raise KernelBuildError("the headers package has no data.tar member")
    prefix = "./usr/include/onnxruntime/"
    with tarfile.open(fileobj=io.BytesIO(body)) as tar:
        for member in tar.getmembers():
            name = member.name if member.name.startswith("./") else "./" + member.name
            if not member.isfile() or not name.startswith(prefix) or ".." in Path(name).parts:
                continue
            target = dest / name[len(prefix) :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
    if not _has_headers(dest):
        raise KernelBuildError(f"the headers package lacks {', '.join(NEEDED_HEADERS)}")
    return dest


def fetch_headers(cache: Path, say: Callable[[str], None]) -> Path:
    """onnxruntime's API headers in cache/headers-1.21 (downloaded and checked once)."""
    dest = cache / "headers-1.21"
    if _has_headers(dest):
        return dest
    url, sha256 = HEADERS_DEB
    cache.mkdir(parents=True, exist_ok=True)
    say(f"downloading onnxruntime's API headers ({url})")
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            deb = response.read()
    except OSError as e:
        raise KernelBuildError(
            f"cannot download the headers ({e}); pass --headers DIR with onnxruntime's include folder instead"
        ) from e
    if hashlib.sha256(deb).hexdigest() != sha256:
        raise KernelBuildError(f"the headers package from {url} does not match its SHA-256: not used")
    staging = Path(tempfile.mkdtemp(prefix="headers-", dir=cache))
    try:
        unpack_headers(deb, staging)
        if not _has_headers(dest):
            shutil.rmtree(dest, ignore_errors=True)
            staging.replace(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def compiler() -> str:
    """$CXX, else the first of g++, clang++, c++ on PATH; KernelBuildError naming what to install."""
    for name in [os.environ.get("CXX", ""), "g++", "clang++", "c++"]:
        if name and shutil.which(name):
            return name
    raise KernelBuildError("no C++ compiler found (set CXX, or install one: `apt-get install g++`)")


def build(
    output: Path | None = None, headers: Path | None = None, say: Callable[[str], None] = lambda _: None
) -> Path:
    """Compile the kernel library (default: the cache path the runtime looks at); returns its path."""
    reason = native_kernels.unsupported_reason()
    if reason:
        raise KernelBuildError(reason)
    output = Path(output) if output else native_kernels.default_library()
    output.parent.mkdir(parents=True, exist_ok=True)
    if headers is not None:
        headers = Path(headers)
        if not _has_headers(headers):
            raise KernelBuildError(f"{headers} does not hold {', '.join(NEEDED_HEADERS)}")
    else:
        headers = fetch_headers(native_kernels.cache_dir(), say)
    cxx = compiler()
    sources = [str(source_dir() / name) for name in SOURCES]
    fd, staging = tempfile.mkstemp(prefix=".build-", suffix=output.suffix, dir=output.parent)
    os.close(fd)
    try:
        say(f"compiling {', '.join(SOURCES)} with {cxx}")
        done = subprocess.run(
            [cxx, *FLAGS, f"-I{headers}", *sources, "-o", staging], capture_output=True, text=True
        )
        if done.returncode != 0:
            raise KernelBuildError(f"{cxx} failed:\n{done.stderr.strip()[-4000:]}")
        _check_loads(Path(staging))
        os.replace(staging, output)
    finally:
        if os.path.exists(staging):
            os.unlink(staging)
    return output


def _check_loads(library: Path) -> None:
    try:
        ort.SessionOptions().register_custom_ops_library(str(library))
    except Exception as e:  # noqa: BLE001 - onnxruntime's own error, reported as the build's
        raise KernelBuildError(f"onnxruntime {ort.__version__} does not load the built library: {e}") from e
