"""agentmeter: the composition root — configuration, CLI and wiring."""

__version__ = "0.1.0"
