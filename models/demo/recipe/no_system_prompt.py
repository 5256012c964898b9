"""Mark a demo package as taking no system prompt (manifest `system_prompt: false`).

    python models/demo/recipe/no_system_prompt.py models/demo/package

The demo model was never trained with system prompts: one written into its memory does not steer it, it only
makes the next answers worse (issue 19: after `/system You are a pirate`, `Hello!` got "Hepe welcome!"). With the
flag set, `Conversation.set_system_prompt` (chat's `/system`, the server's `instructions`) refuses with a clear
message instead. Run it on the fp32 package *before* `rxt-edge quantize`, which copies the flag into the int8
package and records the fp32 manifest's fingerprint as its source.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from rxt_edge.manifest import (
    MANIFEST_FILE,
    format_version_needed,
    load_manifest,
    verify_files,
    write_manifest,
)

SYSTEM_PROMPT_VERSION = 3  # the format_version that introduced `system_prompt`


def mark(package: Path) -> None:
    """Rewrite `package`'s manifest with `system_prompt: false` (its files are verified first). The field is a
    format_version 3 one, so an older manifest is stamped 3: a version-2 reader refuses the unknown key anyway."""
    manifest = load_manifest(package)
    verify_files(package, manifest)
    raw = json.loads((package / MANIFEST_FILE).read_text())
    version = max(format_version_needed(raw), SYSTEM_PROMPT_VERSION)  # never above what the package needs
    write_manifest(package, dataclasses.replace(manifest, system_prompt=False, format_version=version))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("package", type=Path)
    mark(ap.parse_args(argv).package)
    return 0


if __name__ == "__main__":
    sys.exit(main())
