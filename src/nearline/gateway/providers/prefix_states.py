"""Saved KV states of the local model, keyed by their tokens, for interleaved conversations.

llama.cpp keeps one live context; three tenants with different long system prompts taking
turns would each find it holding another's prompt and re-evaluate theirs (seconds). After a
generation, the context's KV state is saved here with the tokens it holds; before the next
one, the saved state sharing the longest prefix with the new prompt is restored if it beats
the live context. Only llama.cpp's own state is kept — not llama-cpp-python's logits
buffer, which ``Llama.save_state`` copies too (about 100 MB at n_batch 512, most of the
cost of its ``LlamaRAMCache``) although generation re-evaluates at least one token anyway.
A state is kept in the ctypes buffer llama.cpp wrote it into and restored from that same
buffer: no copy into or out of Python ``bytes`` (each costs 4-20 ms for a ~29 MB state here).
Bounded in bytes, least recently used first out.
"""

from __future__ import annotations

import ctypes
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import llama_cpp
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True, slots=True)
class SavedState:
    tokens: npt.NDArray[np.intc]
    data: ctypes.Array[ctypes.c_uint8]
    size: int  # bytes of ``data`` that llama.cpp wrote


def common_prefix(a: npt.NDArray[np.intc], b: npt.NDArray[np.intc]) -> int:
    length = min(len(a), len(b))
    if length == 0:
        return 0
    differs = np.flatnonzero(a[:length] != b[:length])
    return int(differs[0]) if len(differs) else length


class PrefixStates:
    def __init__(self, capacity_bytes: int, min_tokens: int) -> None:
        self._capacity = capacity_bytes
        self._min_tokens = min_tokens
        self._states: OrderedDict[bytes, SavedState] = OrderedDict()
        self._bytes = 0

    def __len__(self) -> int:
        return len(self._states)

    def best(self, tokens: npt.NDArray[np.intc]) -> tuple[SavedState | None, int]:
        """The saved state sharing the longest prefix with ``tokens``, and that length."""
        best: SavedState | None = None
        best_length = 0
        for state in self._states.values():
            length = common_prefix(state.tokens, tokens)
            if length > best_length:
                best, best_length = state, length
        return best, best_length

    def save(self, llm: Any) -> None:
        """Keep the live context's KV state (call on the model thread, after a generation)."""
        n_tokens = int(llm.n_tokens)
        if n_tokens < self._min_tokens or self._capacity <= 0:
            return
        tokens = np.array(llm.input_ids[:n_tokens], dtype=np.intc)
        _, covered = self.best(tokens)
        if n_tokens - covered < self._min_tokens:
            return  # a saved state already holds nearly all of this context (~40 ms saved)
        size = llama_cpp.llama_state_get_size(llm._ctx.ctx)
        buffer = (ctypes.c_uint8 * int(size))()
        written = int(llama_cpp.llama_state_get_data(llm._ctx.ctx, buffer, size))
        self._states[tokens.tobytes()] = SavedState(tokens, buffer, written)
        self._bytes += len(buffer)
        while self._bytes > self._capacity and self._states:
            _, dropped = self._states.popitem(last=False)
            self._bytes -= len(dropped.data)

    def restore(self, llm: Any, state: SavedState) -> bool:
        """Load ``state`` into the live context (on the model thread)."""
        if llama_cpp.llama_state_set_data(llm._ctx.ctx, state.data, state.size) != state.size:
            return False
        n_tokens = len(state.tokens)
        llm.input_ids[:n_tokens] = state.tokens
        llm.n_tokens = n_tokens
        llm._requires_eval = True  # the logits buffer is not restored: evaluate again
        self._states.move_to_end(state.tokens.tobytes())
        return True
