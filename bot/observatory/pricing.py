"""What a call cost, when its provider did not say: pydantic's `genai-prices` data, offline.

    prices = Prices()
    cost, source = prices.price(call)   # (0.00045, "price_table"), (0.0, "local"), (None, ...

- `provider`: the provider reported it (OpenRouter's `usage.cost`): kept as it is;
- `price_table`: OpenAI, Anthropic, Groq and xAI models the package's bundled prices know
  (never fetched: `genai_prices` is only asked with its own data);
- `local`: mlx and vLLM run on our own hardware: 0;
- `unpriced`: anything else (an OpenRouter answer without its cost, a model the data lacks).
  Never counted as 0: the figures say how many calls they lack.

A model's rates are worked out once (what 1M prompt tokens and 1M completion tokens cost) and
then each call is two multiplications: `calc_price` walks the data (~0.1 ms a call, 0.2 s for
the first), which per call would be a tenth of a message's CPU. Tiered prices (above a context
size) are priced at the first tier: the bot's prompts are far below any tier.
"""

from __future__ import annotations

import logging

from bot.storage.ledger_models import CostSource, LedgerCall

log = logging.getLogger(__name__)

# Our provider names -> genai-prices' provider ids.
PRICE_TABLE_PROVIDERS = {
    "openai": "openai",
    "anthropic": "anthropic",
    "groq": "groq",
    "xai": "x-ai",
}
LOCAL_PROVIDERS = frozenset({"mlx", "vllm"})
_MILLION = 1_000_000


class Prices:
    def __init__(self) -> None:
        # (provider, model) -> USD per prompt token, per completion token; None: unknown.
        self._rates: dict[tuple[str, str], tuple[float, float] | None] = {}

    def load(self) -> None:
        """Import the package and read its data now (a second; the writer runs it in a thread
        at start, so no reply waits for it)."""
        self.rates("openai", "gpt-4o-mini")

    def rates(self, provider: str, model: str) -> tuple[float, float] | None:
        key = (provider, model)
        if key in self._rates:
            return self._rates[key]
        found = self._lookup(provider, model)
        self._rates[key] = found
        return found

    def price(self, call: LedgerCall) -> tuple[float | None, CostSource]:
        if call.cost_source == "provider" and call.cost_usd is not None:
            return call.cost_usd, "provider"
        if call.provider in LOCAL_PROVIDERS:
            return 0.0, "local"
        rates = self.rates(call.provider, call.model)
        if rates is None:
            return None, "unpriced"
        return call.prompt_tokens * rates[0] + call.completion_tokens * rates[1], "price_table"

    @staticmethod
    def _lookup(provider: str, model: str) -> tuple[float, float] | None:
        provider_id = PRICE_TABLE_PROVIDERS.get(provider)
        if provider_id is None:
            return None
        from genai_prices import Usage, calc_price

        try:
            prompt = calc_price(Usage(input_tokens=_MILLION), model, provider_id=provider_id)
            completion = calc_price(Usage(output_tokens=_MILLION), model, provider_id=provider_id)
        except LookupError:
            log.info("no price for %s:%s in genai-prices: its calls are unpriced", provider, model)
            return None
        return float(prompt.total_price) / _MILLION, float(completion.total_price) / _MILLION
