"""The hand-written GPT: attention paths agree, causality, loss, sampling, counts, config checks."""

from __future__ import annotations

import math

import pytest
import torch

from chargpt.config import ConfigError, ModelConfig, OptimConfig
from chargpt.model import GPT, CausalSelfAttention, count_params

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(**overrides: object) -> ModelConfig:
    base = dict(n_layer=2, n_head=2, n_embd=16, block_size=12, vocab_size=11)
    base.update(overrides)
    return ModelConfig(**base)  # type: ignore[arg-type]


def make_model(seed: int = 0, **overrides: object) -> GPT:
    torch.manual_seed(seed)
    return GPT(tiny(**overrides))


def random_ids(shape: tuple[int, ...], vocab: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, vocab, shape, generator=torch.Generator().manual_seed(seed))


# ----- attention --------------------------------------------------------------------------

ATTN_CASES = [  # n_head, n_embd, T, bias (block_size is 16)
    (1, 8, 16, False),
    (2, 16, 5, True),
    (4, 32, 1, False),
    (3, 24, 11, True),
    (8, 64, 16, False),
]


@pytest.mark.parametrize("n_head, n_embd, T, bias", ATTN_CASES)
def test_manual_attention_equals_sdpa(n_head: int, n_embd: int, T: int, bias: bool) -> None:
    cfg = dict(n_head=n_head, n_embd=n_embd, block_size=16, bias=bias, vocab_size=13)
    torch.manual_seed(n_head * 100 + T)
    manual = CausalSelfAttention(tiny(**cfg)).double()
    fused = CausalSelfAttention(tiny(**cfg, attn_impl="sdpa")).double()
    fused.load_state_dict(manual.state_dict())
    x = torch.randn(3, T, n_embd, dtype=torch.float64)
    weights = torch.randn(3, T, n_embd, dtype=torch.float64)  # a loss that mixes all outputs
    outputs, grads = [], []
    for module in (manual, fused):
        xi = x.clone().requires_grad_(True)
        out = module(xi)
        (out * weights).sum().backward()
        outputs.append(out)
        grads.append([xi.grad] + [p.grad for p in module.parameters()])
    torch.testing.assert_close(outputs[0], outputs[1])
    for g_manual, g_fused in zip(*grads, strict=True):
        torch.testing.assert_close(g_manual, g_fused)

    # The whole model too: same weights, both paths, same logits, loss and parameter grads.
    models = []
    for impl in ("manual", "sdpa"):
        torch.manual_seed(0)
        models.append(GPT(tiny(**cfg, attn_impl=impl)))
    models[1].load_state_dict(models[0].state_dict())
    idx, targets = random_ids((2, T), 13, seed=1), random_ids((2, T), 13, seed=2)
    results = []
    for model in models:
        logits, loss = model(idx, targets)
        loss.backward()
        results.append((logits, loss, [p.grad for p in model.parameters()]))
    torch.testing.assert_close(results[0][0], results[1][0])
    torch.testing.assert_close(results[0][1], results[1][1])
    for g_manual, g_fused in zip(results[0][2], results[1][2], strict=True):
        torch.testing.assert_close(g_manual, g_fused)


@pytest.mark.parametrize("impl", ["manual", "sdpa"])
def test_causality(impl: str) -> None:
    model = make_model(attn_impl=impl).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20)  # large weights so that any leak from the future would show clearly
    idx = random_ids((2, 12), 11)
    for t in (0, 4, 10):
        changed = idx.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 1 + random_ids((2, 11 - t), 9, t)) % 11
        with torch.no_grad():
            a, _ = model(idx)
            b, _ = model(changed)
        torch.testing.assert_close(a[:, : t + 1], b[:, : t + 1], rtol=0, atol=1e-12)
        assert (a[:, t + 1 :] - b[:, t + 1 :]).abs().amax() > 1e-3, "the change must matter"


def test_sequence_longer_than_block_size_raises() -> None:
    model = make_model()
    with pytest.raises(ValueError, match="sequence length 13 exceeds block_size 12"):
        model(random_ids((1, 13), 11))


# ----- loss -------------------------------------------------------------------------------


def test_initial_loss_is_close_to_ln_vocab() -> None:
    model = make_model(vocab_size=50)
    idx, targets = random_ids((8, 12), 50, seed=1), random_ids((8, 12), 50, seed=2)
    logits, loss = model(idx, targets)
    assert logits.shape == (8, 12, 50)
    assert loss is not None and abs(loss.item() - math.log(50)) < 0.05, loss.item()
    assert model(idx)[1] is None


def test_tiny_model_overfits_one_batch() -> None:
    model = make_model(n_embd=32, vocab_size=20)
    idx, targets = random_ids((4, 12), 20, seed=1), random_ids((4, 12), 20, seed=2)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(300):  # about 80 steps suffice
        _, loss = model(idx, targets)
        if loss.item() < 0.1:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    assert loss.item() < 0.1, f"loss {loss.item():.3f} after 300 steps"


# ----- sampling ---------------------------------------------------------------------------


def greedy(model: GPT, idx: torch.Tensor, n: int) -> tuple[torch.Tensor, float]:
    """Argmax decoding by hand, and the smallest top-1 minus top-2 logit gap seen."""
    min_gap = math.inf
    with torch.no_grad():
        for _ in range(n):
            logits = model(idx[:, -model.config.block_size :])[0][:, -1, :]
            top2 = logits.topk(2).values
            min_gap = min(min_gap, (top2[:, 0] - top2[:, 1]).min().item())
            idx = torch.cat([idx, logits.argmax(-1, keepdim=True)], dim=1)
    return idx, min_gap


def test_sample_is_seeded() -> None:
    model = make_model().eval()
    prompt = random_ids((2, 3), 11)

    def draw(seed: int) -> torch.Tensor:
        return model.sample(
            prompt, 30, temperature=1.0, generator=torch.Generator().manual_seed(seed)
        )

    first = draw(0)
    assert first.shape == (2, 33) and torch.equal(first[:, :3], prompt)
    assert torch.equal(first, draw(0))
    assert not torch.equal(first, draw(1))


def test_tiny_temperature_is_greedy_without_nan() -> None:
    model = make_model(vocab_size=30).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(50)  # tied to wte: well separated logits, not ~1e-3 apart
    prompt = random_ids((3, 2), 30)
    expected, min_gap = greedy(model, prompt, 25)
    assert min_gap > 1e-2, "logits too close to tell greedy from sampling"
    got = model.sample(prompt, 25, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(got, expected)
    logits = model(got[:, -12:])[0][:, -1, :].float() / 1e-4
    assert torch.isfinite(torch.softmax(logits, dim=-1)).all()


def test_top_k_one_is_greedy() -> None:
    model = make_model().eval()
    prompt = random_ids((2, 4), 11)
    expected, _ = greedy(model, prompt, 20)
    got = model.sample(
        prompt, 20, temperature=1.0, top_k=1, generator=torch.Generator().manual_seed(0)
    )
    assert torch.equal(got, expected)


def test_top_k_never_leaves_the_top_k() -> None:
    model = make_model(vocab_size=20).eval()
    prompt = random_ids((4, 2), 20)
    out = model.sample(
        prompt, 40, temperature=2.0, top_k=3, generator=torch.Generator().manual_seed(0)
    )
    non_greedy = 0
    with torch.no_grad():
        for step in range(2, out.shape[1]):
            logits = model(out[:, max(0, step - 12) : step])[0][:, -1, :]
            top3 = logits.topk(3).indices  # (B, 3)
            emitted = out[:, step : step + 1]
            assert (top3 == emitted).any(dim=1).all(), f"step {step}: outside the top 3"
            non_greedy += int((emitted[:, 0] != top3[:, 0]).sum())
    assert non_greedy > 10, "top_k=3 at temperature 2 should not always be greedy"


def test_long_context_is_cropped() -> None:
    model = make_model().eval()
    long = random_ids((2, 20), 11)  # block_size is 12
    out = model.sample(long, 8, generator=torch.Generator().manual_seed(5))
    assert out.shape == (2, 28) and torch.equal(out[:, :20], long)
    cropped = model.sample(long[:, -12:], 8, generator=torch.Generator().manual_seed(5))
    assert torch.equal(out[:, 20:], cropped[:, 12:])


@pytest.mark.parametrize("temperature", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_temperature_raises(temperature: float) -> None:
    model = make_model()
    with pytest.raises(ValueError, match="temperature must be a finite number > 0"):
        model.sample(random_ids((1, 2), 11), 3, temperature=temperature)


def test_sample_uses_eval_mode_and_restores_it() -> None:
    model = make_model(dropout=0.5)
    prompt = random_ids((2, 3), 11)
    model.train()
    a = model.sample(prompt, 20, generator=torch.Generator().manual_seed(0))
    b = model.sample(prompt, 20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, b), "dropout was active while sampling"
    assert model.training
    model.eval()
    model.sample(prompt, 2)
    assert not model.training


# ----- parameter and FLOP counts ----------------------------------------------------------

# n_layer=2, n_embd=8, n_head=2, block_size=4, vocab_size=5, counted by hand:
#   wte 5*8 = 40, wpe 4*8 = 32, untied lm_head 5*8 = 40
#   per layer without bias: ln 8 + qkv 8*24=192 + proj 64 + ln 8 + fc 8*32=256 + proj 256 = 784
#   per layer with bias:    ln 16 + 192+24 + 64+8 + ln 16 + 256+32 + 256+8 = 872
#   final LayerNorm 8 (16 with bias)
HAND_COUNTS = [  # bias, tie_weights, n_params
    (False, True, 40 + 32 + 2 * 784 + 8),
    (False, False, 40 + 32 + 2 * 784 + 8 + 40),
    (True, True, 40 + 32 + 2 * 872 + 16),
    (True, False, 40 + 32 + 2 * 872 + 16 + 40),
]


@pytest.mark.parametrize("bias, tie, expected", HAND_COUNTS)
def test_param_counts_by_hand(bias: bool, tie: bool, expected: int) -> None:
    cfg = ModelConfig(
        n_layer=2, n_head=2, n_embd=8, block_size=4, vocab_size=5, bias=bias, tie_weights=tie
    )
    model = GPT(cfg)
    counts = count_params(cfg)
    assert model.num_params() == expected
    assert counts["n_params"] == expected
    assert counts["n_params_non_embedding"] == expected - 40 - 32
    assert model.num_params_non_embedding() == expected - 40 - 32
    assert (model.lm_head.weight is model.transformer.wte.weight) == tie


def test_flops_per_token_by_hand() -> None:
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=8, block_size=4, vocab_size=5)
    # 6 * (all params but wpe: 1648 - 32) + 12 * L * C * T = 6 * 1616 + 12 * 2 * 8 * 4
    assert GPT(cfg).flops_per_token() == 6 * 1616 + 768 == 10464
    assert count_params(cfg)["flops_per_token_6n"] == 6 * 1616
    # Untied: the lm_head (40) does matmul work, the wte lookup (40) and wpe (32) do not.
    untied = ModelConfig(
        n_layer=2, n_head=2, n_embd=8, block_size=4, vocab_size=5, tie_weights=False
    )
    assert GPT(untied).flops_per_token() == 6 * (1688 - 40 - 32) + 768 == 6 * 1616 + 768
    default = ModelConfig(vocab_size=65)  # 4 layers, 128 wide, block 64
    counts = count_params(default)
    attention = 12 * 4 * 128 * 64
    assert counts["flops_per_token"] - counts["flops_per_token_6n"] == attention
    assert counts["flops_per_token_6n"] == 6 * (counts["n_params"] - 64 * 128)


# ----- config checks ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(n_embd=10, n_head=3), "model.n_embd: must be divisible by n_head=3, got 10"),
        (dict(dropout=1.0), "model.dropout: must be in [0, 1), got 1.0"),
        (
            dict(attn_impl="flash"),
            "model.attn_impl: must be one of ('manual', 'sdpa'), got 'flash'",
        ),
        (dict(n_layer=0), "model.n_layer: must be a positive integer, got 0"),
    ],
)
def test_model_config_rejects_bad_values(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError) as info:
        ModelConfig(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_from_dict_unknown_key_suggests_the_right_one() -> None:
    with pytest.raises(ConfigError) as info:
        ModelConfig.from_dict({"n_layr": 2})
    assert "model.n_layr" in str(info.value) and "did you mean 'n_layer'" in str(info.value)


def test_from_dict_wrong_type() -> None:
    with pytest.raises(ConfigError, match="model.n_layer: expected an integer, got 'two'"):
        ModelConfig.from_dict({"n_layer": "two"})
    with pytest.raises(ConfigError, match="model.n_layer: expected an integer, got 2.5"):
        ModelConfig.from_dict({"n_layer": 2.5})
    with pytest.raises(ConfigError, match="model.bias: expected true or false"):
        ModelConfig.from_dict({"bias": "yes"})


def test_yaml_style_exponent_strings_are_floats() -> None:
    optim = OptimConfig.from_dict({"lr": "1e-3", "min_lr": "1e-5"})
    assert isinstance(optim.lr, float) and optim.lr == 1e-3 and optim.min_lr == 1e-5
    with pytest.raises(ConfigError, match="optim.lr: expected a number"):
        OptimConfig.from_dict({"lr": "fast"})


def test_gpt2_small_has_the_published_parameter_count() -> None:
    """GPT-2 small (124M): the count published with the model, not one derived from this code."""
    gpt2 = ModelConfig(
        n_layer=12,
        n_head=12,
        n_embd=768,
        block_size=1024,
        vocab_size=50257,
        bias=True,
        tie_weights=True,
    )
    assert count_params(gpt2)["n_params"] == 124_439_808


@pytest.mark.parametrize("bias, tie", [(True, True), (False, False)])
def test_flops_per_token_against_torch_flop_counter_on_the_whole_model(
    bias: bool, tie: bool
) -> None:
    """One forward + backward of the whole model under FlopCounterMode against
    flops_per_token x tokens. The counter sees matmuls only (mm, addmm, bmm), and so does the
    formula, with one stated difference:
    - every Linear weight (the tied head included: wte is the LM head's matrix) costs 2 FLOPs
      per token forward and 4 backward (input and weight gradients): 6N on both sides;
    - attention's QK^T and AV are full T x T batched matmuls in the manual path (the causal
      mask zeroes half of the scores after they are computed), so the counter's attention work
      is exactly the formula's unhalved 12 * n_layer * n_embd * T per token;
    - the lookups (wte forward, wpe) are no matmuls: the formula leaves wpe out of N, and wte
      counts only as the tied head;
    - LayerNorm gains and biases sit in N (6 FLOPs each per token) but are elementwise work
      the counter does not see, as are softmax, GELU, the residual adds and the loss.
    So counter == flops_per_token * tokens - 6 * tokens * (LayerNorm and bias parameters)."""
    from torch.utils.flop_counter import FlopCounterMode

    cfg = tiny(bias=bias, tie_weights=tie, n_layer=3, n_embd=24, n_head=3)
    model = make_model(bias=bias, tie_weights=tie, n_layer=3, n_embd=24, n_head=3)
    B, T = 3, cfg.block_size  # the formula assumes full-length sequences
    idx, targets = random_ids((B, T), 11, seed=1), random_ids((B, T), 11, seed=2)
    with FlopCounterMode(display=False) as counter:
        _, loss = model(idx, targets)
        assert loss is not None
        loss.backward()
    counted = counter.get_total_flops()

    elementwise = sum(
        p.numel()
        for name, p in model.named_parameters()
        if name.endswith(".bias") or ".ln_" in name or name.startswith("transformer.ln_f")
    )
    # LayerNorms: 2 per layer + the final one, each n_embd gains (+ n_embd biases)
    layer_norms = (2 * cfg.n_layer + 1) * cfg.n_embd
    linear_biases = cfg.n_layer * (3 + 1 + 4 + 1) * cfg.n_embd if bias else 0  # qkv, proj, fc, proj
    assert elementwise == layer_norms * (2 if bias else 1) + linear_biases
    tokens = B * T
    expected = model.flops_per_token() * tokens - 6 * tokens * elementwise
    assert counted == expected
    # The stated difference is small next to the whole: the formula is the matmul count.
    assert counted / (model.flops_per_token() * tokens) > 0.9
