"""Cloud connectors: the only code that talks to clouds."""
