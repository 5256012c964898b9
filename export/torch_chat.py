"""Eager PyTorch conversations on the canonical model: the reference that exported packages are checked against.

Same turn template and stopping rule as the runtime (rxt_edge/conversation.py), greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .model import RxTModel


@dataclass
class TorchTurn:
    prompt: list[int]
    answer: list[int]
    step_logits: list[torch.Tensor] = field(default_factory=list)  # [V] per decoder call (prefill first)

    @property
    def interaction(self) -> list[int]:
        return self.prompt + self.answer

    def with_eos(self, eos: int) -> list[int]:
        return self.prompt + self.answer + [eos]


class TorchConversation:
    def __init__(self, model: RxTModel, stm: torch.Tensor | None = None):
        self.model = model.eval()
        self.stm = (model.initial_stm if stm is None else stm).clone()
        self.sp = model.cfg.special_tokens

    @torch.no_grad()
    def generate(self, query: list[int], max_new_tokens: int, forced: list[int] | None = None) -> TorchTurn:
        """Greedy answer; with `forced`, feed those tokens instead (teacher forcing) and record logits."""
        m, sp = self.model, self.sp
        limit = m.cfg.decoder.max_seq_len
        prompt = [sp["bos"], sp["query"], *query, sp["answer"]]
        budget = min(max_new_tokens, limit - len(prompt) - 1)
        mem_k, mem_v = m.memory_kv(self.stm)
        past_k, past_v = m.empty_cache()
        turn = TorchTurn(prompt, [])
        tokens = prompt
        while True:
            logits, nk, nv = m.decoder(torch.tensor([tokens]), past_k, past_v, mem_k, mem_v)
            past_k = [torch.cat([a, b]) for a, b in zip(past_k, nk, strict=True)]
            past_v = [torch.cat([a, b]) for a, b in zip(past_v, nv, strict=True)]
            turn.step_logits.append(logits[0].float())
            if forced is not None:
                if len(turn.answer) >= len(forced):
                    break
                token = forced[len(turn.answer)]
            else:
                token = int(logits[0].argmax())
                if token == sp["eos"]:
                    break
            turn.answer.append(token)
            if len(turn.answer) >= budget:
                break
            tokens = [token]
        return turn

    @torch.no_grad()
    def update(self, interaction: list[int]) -> torch.Tensor:
        """Encoder + memory attention over the full interaction (with [EOS]); returns the encoded data."""
        ids = torch.tensor([interaction])
        mask = torch.ones_like(ids)
        encoded = self.model.encoder(ids, mask)
        self.stm = self.model.memory(self.stm, encoded, mask)
        return encoded

    def say(self, query: list[int], max_new_tokens: int = 32) -> list[int]:
        turn = self.generate(query, max_new_tokens)
        self.update(turn.with_eos(self.sp["eos"]))
        return turn.answer
