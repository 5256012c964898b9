"""The decode slot's per-step bindings: on the CPU the token ids and the static cache's length are bound once and
written in place per step (a CPU session reads a bound host array at every run); elsewhere they are bound again
every step (a device copies a host input when it is bound). Either way a step answers as a fresh prefill."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rxt_edge import RxTSession

PROMPT = [1, 5, 9, 13, 2, 7]
STEPS = [11, 4, 23, 8, 15]


class CountingBinding:
    """An IOBinding stand-in that counts `bind_input` calls; runs see the real one (`_iobinding`)."""

    def __init__(self, binding):
        self._real, self.bind_inputs = binding, 0
        self._iobinding = binding._iobinding

    def bind_input(self, *args, **kwargs):
        self.bind_inputs += 1
        return self._real.bind_input(*args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._real, name)


def _prefill_logits(session: RxTSession, memory, tokens: list[int]) -> np.ndarray:
    with session.engine.lease_slot(memory) as slot:
        return slot.prefill(tokens).copy()


@pytest.mark.parametrize("live", [True, False], ids=["cpu", "copied-at-binding"])
def test_each_step_answers_as_a_prefill_of_the_whole_sequence(tiny_package: Path, live: bool) -> None:
    """With `live` False the CPU session's slot is told its inputs are copied at binding, as on a GPU: the path
    that binds them again every step."""
    with RxTSession.load(tiny_package, threads=1) as session:
        engine = session.engine
        memory = engine.new_memory()
        engine.install_stm(memory, session.conversation().stm())
        expected = [_prefill_logits(session, memory, PROMPT + STEPS[: i + 1]) for i in range(len(STEPS))]
        with engine.lease_slot(memory) as slot:
            assert slot._host_inputs_live  # a CPU session's slot
            slot._host_inputs_live = live
            real, slot._binding = slot._binding, CountingBinding(slot._binding)
            counting = slot._binding
            try:
                slot.prefill(PROMPT)
                slot.step(STEPS[0])
                after_first = counting.bind_inputs
                for i, token in enumerate(STEPS[1:], start=1):
                    np.testing.assert_allclose(slot.step(token), expected[i], rtol=1e-4, atol=1e-4)
            finally:
                slot._binding, slot._host_inputs_live = real, True
        steps_bindings = counting.bind_inputs - after_first
        # the ids and seqlens_k: bound again every step off the host, never again on it
        assert steps_bindings == (0 if live else 2 * (len(STEPS) - 1))
        assert not np.allclose(expected[1], expected[2], atol=1e-3)  # a stale token would be caught
