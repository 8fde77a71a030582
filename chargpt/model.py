"""The hand-written character-level GPT: attention, MLP, blocks, sampling, parameter/FLOP counts."""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from chargpt.config import ModelConfig

__all__ = ["ModelConfig", "CausalSelfAttention", "MLP", "Block", "GPT"]


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention from matmul, masking and softmax (sdpa as an option)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.head_size = config.n_embd // config.n_head
        self.dropout = config.dropout
        self.attn_impl = config.attn_impl
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # fused QKV
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        # The causal mask as an additive bias: 0 where a position may attend (itself and the
        # past), -inf above the diagonal (the future), so softmax gives the future weight 0.
        # Built once and sliced per call (a view, no allocation); non-persistent, so
        # checkpoints do not carry it.
        future = torch.ones(config.block_size, config.block_size, dtype=torch.bool).triu(1)
        mask = torch.zeros(config.block_size, config.block_size).masked_fill(future, float("-inf"))
        self.register_buffer("mask", mask, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape  # batch, time (sequence length), channels (n_embd)
        q, k, v = self.c_attn(x).split(self.n_embd, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, self.n_head, self.head_size).transpose(1, 2)  # (B, nh, T, hs)
        if self.attn_impl == "sdpa":
            y = F.scaled_dot_product_attention(
                q, k, v, dropout_p=self.dropout if self.training else 0.0, is_causal=True
            )  # (B, nh, T, hs)
        else:
            scale = 1.0 / math.sqrt(self.head_size)
            # Scores of every query against every key, scaled and masked in one batched
            # matmul: att = mask + scale * q @ k^T (baddbmm wants 3-D operands: (B*nh, T, hs)).
            att = torch.baddbmm(
                self.mask[:T, :T],
                q.reshape(B * self.n_head, T, self.head_size),
                k.reshape(B * self.n_head, T, self.head_size).transpose(1, 2),
                alpha=scale,
            )  # (B*nh, T, T)
            att = torch.softmax(att, dim=-1)  # each row: weights over the past, summing to 1
            att = self.attn_dropout(att)
            # Each output is the attention-weighted mix of the values it may see.
            y = att.view(B, self.n_head, T, T) @ v  # (B, nh, T, T) @ (B, nh, T, hs): (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, C)  # re-assemble the heads side by side: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    """Position-wise feed-forward network: 4x expansion with GELU."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LayerNorm residual block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    """Token + position embeddings, n_layer blocks, final LayerNorm and a language-model head.

    With tie_weights (the default) lm_head shares its weight with the token embedding, as in
    GPT-2: the same matrix maps ids to vectors and vectors back to logits, saving V*C
    parameters.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        if config.vocab_size is None:
            raise ValueError("GPT needs model.vocab_size; take it from the tokenizer")
        self.config = config
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(config.vocab_size, config.n_embd),
                wpe=nn.Embedding(config.block_size, config.n_embd),
                drop=nn.Dropout(config.dropout),
                h=nn.ModuleList([Block(config) for _ in range(config.n_layer)]),
                ln_f=nn.LayerNorm(config.n_embd, bias=config.bias),
            )
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.transformer.wte.weight
        self.register_buffer("pos", torch.arange(config.block_size), persistent=False)
        self.apply(self._init_weights)
        # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer) so the residual stream's
        # variance does not grow with depth.
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Logits (B, T, V) and, given targets (B, T), the mean cross-entropy in nats."""
        B, T = idx.shape
        if T > self.config.block_size:
            raise ValueError(f"sequence length {T} exceeds block_size {self.config.block_size}")
        tok = self.transformer.wte(idx)  # (B, T, C)
        pos = self.transformer.wpe(self.pos[:T])  # (T, C), broadcast over the batch
        x = self.transformer.drop(tok + pos)  # (B, T, C)
        for block in self.transformer.h:
            x = block(x)
        x = self.transformer.ln_f(x)
        logits = self.lm_head(x)  # (B, T, V)
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.view(B * T, -1), targets.reshape(B * T))
        return logits, loss

    @torch.no_grad()
    def sample(
        self,
        idx: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Extend idx (B, T) by max_new_tokens tokens drawn from softmax(logits / temperature).

        The context is cropped to the last block_size tokens. Temperature must be > 0; tiny
        values such as 1e-4 act as greedy decoding: the logits are divided in float32 and
        softmax subtracts the maximum first, so nothing overflows.
        """
        if not (temperature > 0 and math.isfinite(temperature)):
            raise ValueError(
                f"temperature must be a finite number > 0, got {temperature!r} "
                "(use a small value such as 1e-4 for greedy decoding)"
            )
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k!r}")
        if idx.dim() != 2 or idx.shape[1] == 0:
            raise ValueError(f"idx must have shape (batch, time>0), got {tuple(idx.shape)}")
        was_training = self.training
        self.eval()
        try:
            for _ in range(max_new_tokens):
                context = idx[:, -self.config.block_size :]  # (B, <=block_size)
                logits, _ = self(context)
                logits = logits[:, -1, :].float() / temperature  # (B, V)
                if top_k is not None:
                    kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, -1:]
                    logits = logits.masked_fill(logits < kth, float("-inf"))
                probs = torch.softmax(logits, dim=-1)
                nxt = torch.multinomial(probs, num_samples=1, generator=generator)  # (B, 1)
                idx = torch.cat((idx, nxt), dim=1)
        finally:
            self.train(was_training)
        return idx

    # ----- sizes and costs -------------------------------------------------------------
    def num_params(self) -> int:
        """Total trainable parameters (a tied lm_head counts once)."""
        return sum(p.numel() for p in self.parameters())

    def num_params_non_embedding(self) -> int:
        """Kaplan et al.'s N: all parameters except the token and position embeddings."""
        return count_params(self.config)["n_params_non_embedding"]

    def flops_per_token(self) -> float:
        """Training FLOPs per token, 6N + 12 * n_layer * n_embd * block_size (PaLM, app. B)."""
        return count_params(self.config)["flops_per_token"]


def count_params(config: ModelConfig) -> dict[str, float]:
    """Parameter and FLOP counts from the config alone (no model needed), by formula.

    flops_per_token = 6N + 12 * n_layer * n_embd * block_size, with N the parameters that do
    matmul work per token: everything but the embedding lookups (with tied weights the token
    embedding matrix is also the LM head and does count). The 12LCT term is attention's QK^T
    and AV, forward and backward, not halved for the causal mask. flops_per_token_6n is the
    plain 6N.
    """
    if config.vocab_size is None:
        raise ValueError("count_params needs model.vocab_size")
    c, v, t, L = config.n_embd, config.vocab_size, config.block_size, config.n_layer
    b = 1 if config.bias else 0
    ln = c * (1 + b)  # LayerNorm weight (+ bias)
    attn = c * 3 * c + 3 * c * b + c * c + c * b
    mlp = c * 4 * c + 4 * c * b + 4 * c * c + c * b
    per_layer = 2 * ln + attn + mlp
    wte, wpe = v * c, t * c
    head = 0 if config.tie_weights else v * c
    total = wte + wpe + L * per_layer + ln + head
    # Embedding lookups do no matmul work: drop wpe, and wte too unless it is the tied head.
    n_flops = total - wpe - (wte if not config.tie_weights else 0)
    return {
        "n_params": total,
        "n_params_non_embedding": total - wte - wpe,
        "flops_per_token": 6 * n_flops + 12 * L * c * t,
        "flops_per_token_6n": 6 * n_flops,
    }
