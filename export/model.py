"""The canonical RxT model: decoder, memory encoder and memory attention, written functionally.

State lives outside the model: the STM, its cross-attention keys/values and the decoder's self-attention KV cache
are explicit inputs and outputs, exactly as the exported graphs see them (rxt_edge/contract.py). One turn:

    mem_k, mem_v = model.memory_kv(stm)                       # once per turn (or returned by the last update)
    logits, new_k, new_v = model.decoder(ids, past_k, past_v, mem_k, mem_v)   # prompt, then one token at a time
    encoded = model.encoder(interaction_ids, mask)            # after the answer: [BOS][Q]query[A]answer[EOS]
    stm = model.memory(stm, encoded, mask)                    # the STM write

Shapes: B batch, T new tokens, P cached tokens of this turn, L memory layers, S slots, D dim, hd head dim.
"""

from __future__ import annotations

import torch
from torch import nn

from . import turn_attention
from .cached_attention import cached_attention, supports
from .config import BlockConfig, DecoderConfig, EncoderConfig, RxTConfig
from .layers import (
    Attention,
    apply_rope,
    heads_first,
    make_ffn,
    make_norm,
    padding_bias,
    rope_angles,
    rope_tables,
)
from .memory import MemoryAttention
from .memory_attention import memory_attention
from .memory_attention import supports as memory_attention_fuses
from .rotary import rotate_queries, step_positions


class Block(nn.Module):
    """Pre-norm block: self-attention, memory cross-attention (memory layers only), feed-forward."""

    def __init__(self, cfg: BlockConfig, dim: int, norm: str):
        super().__init__()
        self.norm_self = make_norm(norm, dim)
        self.self_attn = Attention(cfg.self_attn, dim)
        if cfg.cross_attn is not None:
            self.norm_cross = make_norm(norm, dim)
            self.norm_stm = make_norm(norm, dim)
            self.cross_attn = Attention(cfg.cross_attn, dim)
        else:
            self.cross_attn = None
        self.norm_ffn = make_norm(norm, dim)
        self.ffn = make_ffn(cfg.ffn, dim)

    def memory_kv(self, stm_layer: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """STM layer [B, S, D] -> cross-attention K, V [B, Hkv, S, hd]: once per turn, never per token."""
        k, v = self.cross_attn.keys_values(self.norm_stm(stm_layer))
        return heads_first(k), heads_first(v)

    def forward(self, x, cos, sin, bias, past_k=None, past_v=None, mem_k=None, mem_v=None, kv_bias=None):
        """x [B, T, D]. Causal use: past_k/v [P, B, Hkv, hd] -> also returns new k/v [T, B, Hkv, hd].
        Encoder use (past_k None): attends over x itself with `bias` ([B,1,1,1,T] padding)."""
        h = self.norm_self(x)
        attn = self.self_attn
        q = apply_rope(attn.queries(h), cos, sin)
        k, v = attn.keys_values(h)
        k = apply_rope(k, cos, sin)
        new_k, new_v = k.transpose(0, 1), v.transpose(0, 1)  # sequence-major, as the cache stores them
        if past_k is not None:
            k_all = torch.cat([past_k, new_k], dim=0).permute(1, 2, 0, 3)  # [B, Hkv, P+T, hd]
            v_all = torch.cat([past_v, new_v], dim=0).permute(1, 2, 0, 3)
        else:
            k_all, v_all = heads_first(k), heads_first(v)
        x = x + attn.attend(q, k_all, v_all, bias, h)
        return self._memory_and_ffn(x, cos, sin, mem_k, mem_v), new_k, new_v

    def encode(self, x, cos, sin, bias, mask):
        """Encoder use: x [B, T, D] attends over itself with the padding `bias` [B, 1, 1, T] (`mask` [B, T]
        describes the same padding); exported with contrib ops, the attention is one fused node
        (export/turn_attention.py)."""
        h = self.norm_self(x)
        attn = self.self_attn
        q = apply_rope(attn.queries(h), cos, sin)
        k, v = attn.keys_values(h)
        x = x + turn_attention.attend(attn, q, apply_rope(k, cos, sin), v, bias, mask, h)
        return self._memory_and_ffn(x, cos, sin, None, None)

    def forward_static(self, x, cos, sin, seqlens_k, cache_k, cache_v, rotary, mem_k=None, mem_v=None):
        """Static-cache decoding (export/cached_attention.py): x [B, T, D]; cache_k/v [B, Hkv, T_max, hd] come
        back with this run's rows written; `rotary` = (positions [B, T], cos table, sin table [T_max, hd/2]):
        the self-attention's and the fused cross-attention's RoPE; cos/sin [T, 1, hd] rotate the unfused one."""
        h = self.norm_self(x)
        attn, cfg = self.self_attn, self.self_attn.cfg
        out, cache_k, cache_v = cached_attention(
            attn.q_proj(h), attn.k_proj(h), attn.v_proj(h), cache_k, cache_v, seqlens_k, *rotary[1:],
            cfg.q_heads, cfg.kv_heads,
        )  # fmt: skip
        x = x + attn.project_out(out, h)
        return self._memory_and_ffn(x, cos, sin, mem_k, mem_v, rotary), cache_k, cache_v

    def _memory_and_ffn(self, x, cos, sin, mem_k, mem_v, rotary: tuple | None = None):
        """rotary (static decoder only): (positions [B, T], cos table, sin table): the cross-attention's
        queries rotated by one op (export/rotary.py) and attended by one op (export/memory_attention.py)."""
        if self.cross_attn is not None:
            h = self.norm_cross(x)
            cross, cfg = self.cross_attn, self.cross_attn.cfg
            if rotary is not None and memory_attention_fuses(cfg.q_heads, cfg.kv_heads):
                q = rotate_queries(cross.q_proj(h), *rotary, cfg.q_heads)  # queries only, never STM keys
                x = x + cross.project_out(memory_attention(q, mem_k, mem_v, cfg.q_heads), h)
            else:
                q = apply_rope(cross.queries(h), cos, sin)
                x = x + cross.attend(q, mem_k, mem_v, None, h)
        return x + self.ffn(self.norm_ffn(x))


class Decoder(nn.Module):
    def __init__(self, cfg: DecoderConfig, dim: int, vocab: int, embed: nn.Embedding):
        super().__init__()
        self.cfg = cfg
        self.embed = embed  # usually shared with the encoder
        self.blocks = nn.ModuleList(Block(b, dim, cfg.norm) for b in cfg.all_layers)
        self.first_memory_block = len(cfg.layers_before)
        self.head_norm = make_norm(cfg.head_norm, dim) if cfg.head_norm else None
        self.head = nn.Linear(dim, vocab, bias=True)
        self.rope_dim = cfg.all_layers[0].self_attn.head_dim

    @property
    def memory_blocks(self) -> list[Block]:
        return list(
            self.blocks[self.first_memory_block : self.first_memory_block + len(self.cfg.memory_layers)]
        )

    def memory_kv(self, stm: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """stm [L, B, S, D] -> per memory layer K and V [B, Hkv, S, hd]."""
        pairs = [blk.memory_kv(stm[i]) for i, blk in enumerate(self.memory_blocks)]
        return [k for k, _ in pairs], [v for _, v in pairs]

    def forward(
        self, input_ids, past_k: list, past_v: list, mem_k: list, mem_v: list, all_logits: bool = False
    ):
        """input_ids [B, T]; past_k/v per layer [P, B, Hkv, hd]; mem_k/v per memory layer [B, Hkv, S, hd].
        Returns logits [B, V] of the last position ([B, T, V] with all_logits) and new k/v per layer [T, B, Hkv, hd]."""
        t = input_ids.shape[1]
        p = past_k[0].shape[0]
        positions = torch.arange(t, device=input_ids.device) + p
        x = self.embed(input_ids)
        cos, sin = rope_angles(positions, self.rope_dim, self.cfg.rope_base, x.dtype)
        key_pos = torch.arange(p + t, device=input_ids.device)
        zero, neg = torch.zeros((), dtype=x.dtype), torch.full((), float("-inf"), dtype=x.dtype)
        causal = torch.where(key_pos[None, :] <= positions[:, None], zero, neg)  # [T, P+T]
        new_k, new_v = [], []
        m = self.first_memory_block
        for i, blk in enumerate(self.blocks):
            j = i - m
            is_mem = 0 <= j < len(mem_k) and blk.cross_attn is not None
            x, k, v = blk(
                x,
                cos,
                sin,
                causal,
                past_k[i],
                past_v[i],
                mem_k[j] if is_mem else None,
                mem_v[j] if is_mem else None,
            )
            new_k.append(k)
            new_v.append(v)
        return self._logits(x, all_logits), new_k, new_v

    def forward_static(self, input_ids, seqlens_k, cache_k: list, cache_v: list, mem_k: list, mem_v: list):
        """The static-cache variant: input_ids [B, T]; seqlens_k [B] int32 = cached tokens after this run - 1
        (the fused RoPE rotates each row at its own positions, the unfused one at row 0's); cache_k/v per layer
        [B, Hkv, T_max, hd]. Returns the last position's logits [B, V] and the caches with this run's rows."""
        # positions seqlens_k + 1 - T .. seqlens_k, formed on the device (export/rotary.py `step_positions`)
        positions = step_positions(input_ids, seqlens_k)  # [B, T]
        x = self.embed(input_ids)
        cos, sin = rope_angles(positions[0], self.rope_dim, self.cfg.rope_base, x.dtype)  # (the unfused RoPE)
        tables = rope_tables(self.cfg.max_seq_len, self.rope_dim, self.cfg.rope_base, x.dtype, x.device)
        rotary = (positions, *tables)
        out_k, out_v = [], []
        m = self.first_memory_block
        for i, blk in enumerate(self.blocks):
            j = i - m
            is_mem = 0 <= j < len(mem_k) and blk.cross_attn is not None
            x, k, v = blk.forward_static(
                x, cos, sin, seqlens_k, cache_k[i], cache_v[i], rotary,
                mem_k[j] if is_mem else None, mem_v[j] if is_mem else None,
            )  # fmt: skip
            out_k.append(k)
            out_v.append(v)
        return self._logits(x, False), out_k, out_v

    @property
    def static_cache_supported(self) -> bool:
        """Whether every self-attention runs as GroupQueryAttention (export/cached_attention.py `supports`)."""
        return all(
            supports(b.self_attn.cfg.q_heads, b.self_attn.cfg.kv_heads, b.self_attn.cfg.head_dim)
            for b in self.blocks
        )

    def _logits(self, x, all_logits: bool):
        if not all_logits:
            x = x[:, -1]
        if self.head_norm is not None:
            x = self.head_norm(x)
        return self.head(x)


class Encoder(nn.Module):
    def __init__(self, cfg: EncoderConfig, dim: int, embed: nn.Embedding):
        super().__init__()
        self.embed = embed
        self.blocks = nn.ModuleList(Block(b, dim, cfg.norm) for b in cfg.layers)
        self.cfg = cfg
        self.rope_dim = cfg.layers[0].self_attn.head_dim

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """input_ids, attention_mask [B, T] -> every layer's hidden state [L, B, T, D] (ED)."""
        t = input_ids.shape[1]
        x = self.embed(input_ids)
        cos, sin = rope_angles(
            torch.arange(t, device=input_ids.device), self.rope_dim, self.cfg.rope_base, x.dtype
        )
        bias = padding_bias(attention_mask, x.dtype)
        hidden = []
        for blk in self.blocks:
            x = blk.encode(x, cos, sin, bias, attention_mask)
            hidden.append(x)
        return torch.stack(hidden, dim=0)


class RxTModel(nn.Module):
    def __init__(self, cfg: RxTConfig):
        super().__init__()
        cfg.check()
        self.cfg = cfg
        embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.decoder = Decoder(cfg.decoder, cfg.dim, cfg.vocab_size, embed)
        # RxT shares one embedding between encoder and decoder; a checkpoint may still carry two different ones.
        self.encoder = Encoder(
            cfg.encoder, cfg.dim, embed if cfg.shared_embedding else nn.Embedding(cfg.vocab_size, cfg.dim)
        )
        self.memory = MemoryAttention(cfg.memory, cfg.dim, cfg.stm_slots)
        # The STM a fresh conversation starts from (the checkpoint's STM buffer, or zeros): part of the package.
        self.register_buffer("initial_stm", torch.zeros(cfg.memory_layers, 1, cfg.stm_slots, cfg.dim))

    def memory_kv(self, stm: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        return self.decoder.memory_kv(stm)

    def empty_cache(self, batch: int = 1) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer empty self-attention caches [0, B, Hkv, hd] (eager use only; the runtime preallocates)."""
        b0 = self.cfg.decoder.all_layers[0].self_attn
        z = torch.zeros(0, batch, b0.kv_heads, b0.head_dim, dtype=self.decoder.embed.weight.dtype)
        n = len(self.decoder.blocks)
        return [z] * n, [z] * n
