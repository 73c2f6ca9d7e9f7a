"""Connecting agentmeter to a Coder deployment: its tokens as keys, its users and groups, and a
way off its retired chat usage limits."""
