"""MAX_BUDGET: the worst case of a model call is reserved before the call, and prices are known."""

from __future__ import annotations

from pathlib import Path

import pytest

from factory.config import PriceConfig, Settings
from factory.errors import ModelPriceUnknown, PlaybookError
from factory.llm.budget import CallPlan, cost_of, plan_call
from factory.llm.pricing import missing_credentials, model_price, resolve_model_spec
from factory.models import BudgetCaps, ModelSpec, Spend

PLAYBOOKS = Path(__file__).parent.parent / "fixtures" / "playbooks"

# 1 USD per million prompt tokens, 10 USD per million completion tokens.
PRICED = ModelSpec(
    name="acme/coder",
    max_output_tokens=4096,
    min_output_tokens=380,
    input_price_per_mtok=1.0,
    output_price_per_mtok=10.0,
)
UNPRICED = ModelSpec(name="acme/mystery", max_output_tokens=4096, min_output_tokens=380)
NO_CAPS = BudgetCaps(tokens=None, cost_usd=None, steps=None)


def _fits(plan: CallPlan, caps: BudgetCaps, spent: Spend) -> bool:
    return (caps.tokens is None or spent.tokens + plan.reserved_tokens <= caps.tokens) and (
        caps.cost_usd is None or spent.cost_usd + plan.reserved_cost <= caps.cost_usd + 1e-9
    )


# -- plan_call ------------------------------------------------------------------


def test_the_step_cap_stops_the_call_that_would_exceed_it() -> None:
    """With 40 of 40 steps used there is no 41st call; the 40th is still allowed."""
    caps = NO_CAPS.model_copy(update={"steps": 40})
    assert plan_call(PRICED, caps, Spend(steps=40), 100) == "step cap: 40 of 40 model calls used"
    assert isinstance(plan_call(PRICED, caps, Spend(steps=39), 100), CallPlan)


def test_a_call_whose_minimum_does_not_fit_the_token_cap_is_not_made() -> None:
    """1,200 tokens left cannot hold a 1,000-token prompt plus the 380-token minimum answer."""
    caps = NO_CAPS.model_copy(update={"tokens": 10_000})
    spent = Spend(tokens_in=8_000, tokens_out=800)
    assert plan_call(PRICED, caps, spent, 1_000) == "token cap: 1,200 left, call needs at least 1,380"


def test_max_tokens_is_clamped_to_the_tokens_left_after_the_prompt() -> None:
    """5,000 tokens left and a 1,000-token prompt: the model may answer with at most 4,000."""
    caps = NO_CAPS.model_copy(update={"tokens": 10_000})
    plan = plan_call(PRICED, caps, Spend(tokens_in=4_000, tokens_out=1_000), 1_000)
    assert plan == CallPlan(max_tokens=4_000, reserved_tokens=5_000, reserved_cost=0.041)


def test_max_tokens_is_the_models_own_limit_when_the_budget_is_ample() -> None:
    """A roomy budget asks for the model's max_output_tokens, not more."""
    plan = plan_call(PRICED, BudgetCaps(), Spend(), 1_000)
    assert isinstance(plan, CallPlan)
    assert plan.max_tokens == PRICED.max_output_tokens


def test_max_tokens_is_clamped_to_what_the_remaining_cost_affords() -> None:
    """$0.05 left, the 10,000-token prompt costs $0.01: $0.04 buys 4,000 output tokens at $10/Mtok."""
    caps = NO_CAPS.model_copy(update={"cost_usd": 0.05})
    plan = plan_call(PRICED, caps, Spend(), 10_000)
    assert isinstance(plan, CallPlan)
    assert plan.max_tokens == 4_000
    assert plan.reserved_cost == pytest.approx(0.05)


def test_a_call_whose_minimum_does_not_fit_the_cost_cap_is_not_made() -> None:
    """$0.0040 left cannot pay a $0.001 prompt plus 380 output tokens ($0.0038)."""
    caps = NO_CAPS.model_copy(update={"cost_usd": 1.0})
    reason = plan_call(PRICED, caps, Spend(cost_usd=0.996), 1_000)
    assert reason == "cost cap: $0.0040 left, call needs at least $0.0048"


def test_no_planned_call_can_overshoot_any_cap() -> None:
    """Whatever has been spent, a call that is planned fits in every cap even if it uses all of max_tokens."""
    caps = BudgetCaps(tokens=50_000, cost_usd=0.2, steps=30)
    for used_tokens in range(0, 52_000, 1_700):
        for used_cost in (0.0, 0.05, 0.13, 0.1899, 0.1999, 0.2, 0.25):
            for prompt in (0, 500, 9_000, 30_000):
                spent = Spend(tokens_in=used_tokens, cost_usd=used_cost, steps=3)
                plan = plan_call(PRICED, caps, spent, prompt)
                if isinstance(plan, CallPlan):
                    assert _fits(plan, caps, spent), (used_tokens, used_cost, prompt, plan)
                    assert plan.max_tokens >= PRICED.min_output_tokens


def test_an_unknown_price_with_a_cost_cap_fails_closed() -> None:
    """If the model's price is unknown, a cost cap cannot be enforced, so the call is not made."""
    reason = plan_call(UNPRICED, BudgetCaps(), Spend(), 100)
    assert reason == "cost cap set but price of model acme/mystery unknown"


def test_an_unknown_price_without_a_cost_cap_is_allowed() -> None:
    """Without a cost cap only tokens and steps bind, and the call's cost is recorded as 0."""
    caps = BudgetCaps(cost_usd=None)
    plan = plan_call(UNPRICED, caps, Spend(), 100)
    assert plan == CallPlan(max_tokens=4096, reserved_tokens=4196, reserved_cost=0.0)
    assert cost_of(UNPRICED, 100, 100) == 0.0


def test_cost_of_uses_the_real_usage_at_the_spec_prices() -> None:
    """2,000 prompt tokens at $1/Mtok plus 300 completion tokens at $10/Mtok cost $0.005."""
    assert cost_of(PRICED, 2_000, 300) == pytest.approx(0.005)


# -- prices ---------------------------------------------------------------------


def test_a_model_in_litellms_bundled_map_has_a_price_offline() -> None:
    """gpt-4o is in litellm's bundled price map: $2.50/Mtok in, $10/Mtok out, also under its provider prefix."""
    assert model_price("gpt-4o", {}) == pytest.approx((2.5e-6, 1e-5))
    assert model_price("openai/gpt-4o", {}) == pytest.approx((2.5e-6, 1e-5))


def test_a_configured_price_wins_over_litellms_map() -> None:
    """[prices."gpt-4o"] in factory.toml overrides what litellm knows."""
    prices = {"gpt-4o": PriceConfig(input_per_mtok=1.0, output_per_mtok=2.0)}
    assert model_price("gpt-4o", prices) == pytest.approx((1e-6, 2e-6))
    spec = resolve_model_spec("gpt-4o", Settings(prices=prices), playbook=None)
    assert (spec.input_price_per_mtok, spec.output_price_per_mtok) == (1.0, 2.0)


def test_the_scripted_model_is_free_and_an_unknown_model_has_no_price() -> None:
    """scripted/* costs nothing; a name nobody knows has no price."""
    assert model_price("scripted/anything", {}) == (0.0, 0.0)
    assert model_price("acme/mystery-model-9000", {}) is None


def test_resolve_model_spec_takes_limits_from_settings_and_prices_per_million() -> None:
    """The spec carries max_output_tokens and timeout from [models], and litellm's price per million tokens."""
    settings = Settings.model_validate({"models": {"max_output_tokens": 2000, "timeout_s": 60}})
    spec = resolve_model_spec("gpt-4o", settings, playbook=None)
    assert spec.model_dump() == {
        "name": "gpt-4o",
        "api_base": None,
        "max_output_tokens": 2000,
        "min_output_tokens": 256,
        "input_price_per_mtok": 2.5,
        "output_price_per_mtok": 10.0,
        "timeout_s": 60.0,
    }


def test_an_unknown_price_with_a_cost_cap_is_refused_at_submission() -> None:
    """The message says how to fix it: add a [prices."X"] table, or remove the cost cap."""
    with pytest.raises(ModelPriceUnknown) as caught:
        resolve_model_spec("acme/mystery", Settings(), playbook=None, cost_capped=True)
    assert str(caught.value) == (
        "no known price for model 'acme/mystery': add [prices.\"acme/mystery\"] input_per_mtok/output_per_mtok "
        'to factory.toml, or remove the cost cap (cost_usd = "none")'
    )
    assert caught.value.permanent


def test_an_unknown_price_without_a_cost_cap_resolves_without_prices() -> None:
    """Without a cost cap an unpriced model may run; its spec has no prices."""
    spec = resolve_model_spec("acme/mystery", Settings(), playbook=None, cost_capped=False)
    assert spec.input_price_per_mtok is None and spec.output_price_per_mtok is None


def test_a_scripted_spec_points_at_its_playbook() -> None:
    """The playbook path becomes api_base; a bare 'scripted' is named after the playbook; it is free."""
    playbook = PLAYBOOKS / "three-steps.yaml"
    spec = resolve_model_spec("scripted", Settings(), playbook=playbook)
    assert spec.name == "scripted/three-steps"
    assert spec.scripted
    assert spec.api_base == str(playbook.resolve())
    assert (spec.input_price_per_mtok, spec.output_price_per_mtok) == (0.0, 0.0)


def test_a_scripted_spec_without_its_playbook_file_is_refused(tmp_path: Path) -> None:
    """A missing playbook is reported with its path before the run starts."""
    missing = tmp_path / "nope.yaml"
    with pytest.raises(PlaybookError, match=f"playbook {missing} does not exist"):
        resolve_model_spec("scripted/x", Settings(), playbook=missing)
    with pytest.raises(PlaybookError, match="needs a playbook file"):
        resolve_model_spec("scripted/x", Settings(), playbook=None)


def test_missing_credentials_names_the_environment_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """gpt-4o without OPENAI_API_KEY reports that key; the scripted model needs none."""
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    assert missing_credentials("gpt-4o") == ["OPENAI_API_KEY"]
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    assert missing_credentials("gpt-4o") == []
    assert missing_credentials("scripted/anything") == []
