"""The agentmeter ledger: schema, money, pricing, periods, limits and usage queries."""
