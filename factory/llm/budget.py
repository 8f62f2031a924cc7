"""MAX_BUDGET: reserve the worst case of a model call before making it.

A call costs at most its prompt plus ``max_tokens`` of output. ``plan_call`` picks
the largest ``max_tokens`` (up to the model's own limit) for which even that worst
case stays inside every cap, or says why no call can be made. So a ticket never
overshoots its caps by a call: it stops one call early instead.

Pure arithmetic, no I/O: the caller counts the prompt and settles the real usage
afterwards with ``cost_of``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from factory.models import BudgetCaps, ModelSpec, Spend

__all__ = ["CallPlan", "cost_of", "plan_call"]

_MTOK = 1_000_000


@dataclass(frozen=True)
class CallPlan:
    """A call that fits: ask for at most ``max_tokens``; the worst case is reserved."""

    max_tokens: int
    reserved_tokens: int
    reserved_cost: float


def _prices(spec: ModelSpec) -> tuple[float, float] | None:
    """USD per million prompt and completion tokens, or None when either is unknown."""
    if spec.input_price_per_mtok is None or spec.output_price_per_mtok is None:
        return None
    return spec.input_price_per_mtok, spec.output_price_per_mtok


def cost_of(spec: ModelSpec, prompt_tokens: int, completion_tokens: int) -> float:
    """USD for this much usage at the spec's prices; 0.0 when the price is unknown.

    Provider discounts (cached prompt tokens, batch) are ignored: the figure is an
    upper bound, which is what a cap needs.
    """
    prices = _prices(spec)
    if prices is None:
        return 0.0
    return round((prompt_tokens * prices[0] + completion_tokens * prices[1]) / _MTOK, 8)


def plan_call(spec: ModelSpec, caps: BudgetCaps, spent: Spend, prompt_tokens: int) -> CallPlan | str:
    """The call to make, or the reason it must not be made (a one-line message)."""
    if caps.steps is not None and spent.steps + 1 > caps.steps:
        return f"step cap: {spent.steps:,} of {caps.steps:,} model calls used"

    prices = _prices(spec)
    if caps.cost_usd is not None and prices is None:
        return f"cost cap set but price of model {spec.name} unknown"

    min_output = min(spec.min_output_tokens, spec.max_output_tokens)
    max_output = spec.max_output_tokens

    if caps.tokens is not None:
        tokens_left = caps.tokens - spent.tokens
        if tokens_left - prompt_tokens < min_output:
            return f"token cap: {max(tokens_left, 0):,} left, call needs at least {prompt_tokens + min_output:,}"
        max_output = min(max_output, tokens_left - prompt_tokens)

    if caps.cost_usd is not None and prices is not None:
        input_price, output_price = prices
        cost_left = caps.cost_usd - spent.cost_usd
        after_prompt = cost_left - prompt_tokens * input_price / _MTOK
        if output_price > 0:
            # Rounded before flooring so that float noise (9999.999999998) does not cost a token.
            affordable = math.floor(round(after_prompt * _MTOK / output_price, 6))
        else:
            affordable = max_output if after_prompt >= 0 else -1
        if affordable < min_output:
            need = (prompt_tokens * input_price + min_output * output_price) / _MTOK
            return f"cost cap: ${max(cost_left, 0.0):.4f} left, call needs at least ${need:.4f}"
        max_output = min(max_output, affordable)

    return CallPlan(
        max_tokens=max_output,
        reserved_tokens=prompt_tokens + max_output,
        reserved_cost=cost_of(spec, prompt_tokens, max_output),
    )
