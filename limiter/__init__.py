"""The agentmeter limiter: an aiohttp gateway that holds per-user LLM spend limits."""
