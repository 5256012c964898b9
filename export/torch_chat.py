"""Eager PyTorch conversations on the canonical model: the reference that exported packages are checked against.

Same turn template and stopping rule as the runtime (rxt_edge/conversation.py), greedy decoding.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from rxt_edge import contract

from .model import RxTModel


@dataclass
class TorchTurn:
    prompt: list[int]
    answer: list[int]
    step_logits: list[torch.Tensor] = field(default_factory=list)  # [V] per decoder call (prefill first)
    ended: bool = False  # the model chose [EOS]; else the answer was cut at the budget

    @property
    def interaction(self) -> list[int]:
        return self.prompt + self.answer

    def for_memory(self, special: dict[str, int]) -> list[int]:
        """What the memory update reads: the runtime's rule, `rxt_edge.contract.turn_interaction`."""
        return contract.turn_interaction(special, self.prompt, self.answer, self.ended)


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
        prompt = contract.turn_prompt(sp, query)
        budget = contract.answer_budget(max_new_tokens, len(prompt), limit)
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
                    turn.ended = True
                    break
            turn.answer.append(token)
            if len(turn.answer) >= budget:
                break
            tokens = [token]
        return turn

    @torch.no_grad()
    def update(self, interaction: list[int]) -> torch.Tensor:
        """Encoder + memory attention over one interaction (`TorchTurn.for_memory`); returns the encoded data."""
        ids = torch.tensor([interaction])
        mask = torch.ones_like(ids)
        encoded = self.model.encoder(ids, mask)
        self.stm = self.model.memory(self.stm, encoded, mask)
        return encoded

    def say(self, query: list[int], max_new_tokens: int = 32) -> list[int]:
        turn = self.generate(query, max_new_tokens)
        self.update(turn.for_memory(self.sp))
        return turn.answer
