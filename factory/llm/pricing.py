"""Model prices and the ``ModelSpec`` a ticket run is given.

Prices come from ``[prices."MODEL"]`` in factory.toml first, then litellm's bundled
price map (pinned to the installed litellm version, see :mod:`factory.llm`). The
scripted model is free.
"""

from __future__ import annotations

from pathlib import Path

from factory.config import PriceConfig, Settings
from factory.errors import ModelPriceUnknown, PlaybookError
from factory.llm.playbook import load_playbook
from factory.models import ModelSpec

__all__ = ["is_scripted", "missing_credentials", "model_price", "resolve_model_spec"]

_MTOK = 1_000_000


def is_scripted(model_name: str) -> bool:
    """``scripted`` (the configuration's default) or ``scripted/<name>``."""
    return model_name == "scripted" or model_name.startswith("scripted/")


def model_price(model: str, prices: dict[str, PriceConfig]) -> tuple[float, float] | None:
    """(USD per prompt token, USD per completion token), or None when nobody knows."""
    configured = prices.get(model)
    if configured is not None:
        return configured.input_per_mtok / _MTOK, configured.output_per_mtok / _MTOK
    if is_scripted(model):
        return 0.0, 0.0
    import litellm

    names = [model]
    if "/" in model:
        names.append(model.split("/", 1)[1])  # "openai/gpt-4o" is listed as "gpt-4o"
    for name in names:
        entry = litellm.model_cost.get(name)
        if not entry:
            continue
        prompt_price = entry.get("input_cost_per_token")
        completion_price = entry.get("output_cost_per_token")
        if prompt_price is not None and completion_price is not None:
            return float(prompt_price), float(completion_price)
    return None


def _per_mtok(model: str, prices: dict[str, PriceConfig]) -> tuple[float | None, float | None]:
    configured = prices.get(model)
    if configured is not None:
        return configured.input_per_mtok, configured.output_per_mtok
    price = model_price(model, prices)
    if price is None:
        return None, None
    # Rounded so that 2.5e-06 * 1e6 reads 2.5, not 2.4999999999999996.
    return round(price[0] * _MTOK, 6), round(price[1] * _MTOK, 6)


def resolve_model_spec(
    model_name: str, settings: Settings, *, playbook: Path | None, cost_capped: bool = True
) -> ModelSpec:
    """Everything a run needs to call ``model_name``, checked before the run starts.

    The scripted model needs a playbook (its path becomes ``api_base``; a bare
    ``scripted`` is named after the playbook). ``cost_capped`` says whether the run has
    a cost cap; it defaults to True so that a forgetful caller fails closed.
    """
    max_output = settings.models.max_output_tokens
    common = {
        "max_output_tokens": max_output,
        "min_output_tokens": min(ModelSpec.model_fields["min_output_tokens"].default, max_output),
        "timeout_s": settings.models.timeout_s,
    }
    if is_scripted(model_name):
        if playbook is None:
            raise PlaybookError(f"model '{model_name}' is the offline scripted model and needs a playbook file")
        load_playbook(playbook)  # fail at submission, not at the first model call
        name = model_name if model_name != "scripted" else f"scripted/{playbook.stem}"
        return ModelSpec(
            name=name,
            api_base=str(playbook.resolve()),
            input_price_per_mtok=0.0,
            output_price_per_mtok=0.0,
            **common,
        )
    input_price, output_price = _per_mtok(model_name, settings.prices)
    if cost_capped and (input_price is None or output_price is None):
        raise ModelPriceUnknown(
            f"no known price for model '{model_name}': add [prices.\"{model_name}\"] "
            'input_per_mtok/output_per_mtok to factory.toml, or remove the cost cap (cost_usd = "none")'
        )
    return ModelSpec(
        name=model_name,
        api_base=settings.models.api_base,
        input_price_per_mtok=input_price,
        output_price_per_mtok=output_price,
        **common,
    )


def missing_credentials(model_name: str) -> list[str]:
    """Environment variables the provider of ``model_name`` needs and does not have.

    litellm only knows the keys of providers it recognises from the name: an unknown
    provider yields an empty list, and the first call will say what is wrong.
    """
    if is_scripted(model_name):
        return []
    import litellm

    litellm.suppress_debug_info = True  # otherwise an unknown provider prints a banner to stdout
    try:
        result = litellm.validate_environment(model=model_name)
    except Exception:  # noqa: BLE001 - an unrecognised name: nothing to report
        return []
    return [str(key) for key in result.get("missing_keys", [])]
