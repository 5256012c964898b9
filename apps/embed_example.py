"""Embedding a conversation in a program: streamed answers, one memory per user, kept across restarts.

    python -m rxt_edge.apps.embed_example --user ann [--snapshots DIR] [MODEL_DIR]

Each line on stdin is one turn of that user's conversation. After every answer the user's memory (the STM) is
saved to DIR/<user>.rxtsnap; the next start restores it, so the conversation carries on where it stopped.
docs/embedding.md walks through it.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable
from pathlib import Path

from rxt_edge import Conversation, RxTSession, SnapshotError


class Assistant:
    """One loaded model, one conversation per user, each user's memory in its own snapshot file."""

    def __init__(self, model_dir: Path, snapshot_dir: Path, provider: str = "cpu"):
        self.session = RxTSession.load(model_dir, provider=provider)  # load once: the graphs are shared
        self.snapshot_dir = snapshot_dir
        self.conversations: dict[str, Conversation] = {}

    def snapshot_path(self, user: str) -> Path:
        safe = re.sub(r"[^A-Za-z0-9_.-]", "_", user).lstrip(".") or "_"  # a user id is not a path
        return self.snapshot_dir / f"{safe}.rxtsnap"

    def conversation(self, user: str) -> Conversation:
        """The user's conversation: in memory, else restored from their snapshot, else a fresh one."""
        if user not in self.conversations:
            path = self.snapshot_path(user)
            try:
                conv = self.session.restore(path) if path.exists() else self.session.conversation()
            except SnapshotError as e:  # damaged, or saved by another model: start over rather than fail
                print(f"[starting a fresh conversation: {e}]", file=sys.stderr)
                conv = self.session.conversation()
            self.conversations[user] = conv
        return self.conversations[user]

    def reply(self, user: str, text: str, on_text: Callable[[str], None]) -> str:
        """Stream the answer to `on_text` piece by piece, then save the user's memory."""
        conv = self.conversation(user)
        answer = []
        for piece in conv.stream(text, max_new_tokens=200):
            on_text(piece)
            answer.append(piece)
        # The answer is delivered; saving waits for this turn's background memory update, then writes
        # the snapshot atomically (a crash leaves the previous file, never half of one).
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        conv.save(self.snapshot_path(user), metadata={"user": user})
        return "".join(answer)

    def close(self) -> None:
        self.session.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_dir", nargs="?", type=Path, help="model package (default: the demo model)")
    parser.add_argument("--user", required=True, help="whose conversation this is")
    parser.add_argument("--snapshots", type=Path, default=Path("snapshots"), help="where memories are kept")
    args = parser.parse_args(argv)
    if args.model_dir is None:
        from rxt_edge.apps.demo import find_demo_model

        args.model_dir = find_demo_model()

    assistant = Assistant(args.model_dir, args.snapshots)
    turns = assistant.conversation(args.user).turns
    print(f"[{args.user}: {'continuing after ' + str(turns) + ' turns' if turns else 'new conversation'}]")

    def show(piece: str) -> None:
        print(piece, end="", flush=True)

    try:
        for line in sys.stdin:
            if line.strip():
                assistant.reply(args.user, line.strip(), show)
                print(flush=True)
    finally:
        assistant.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
