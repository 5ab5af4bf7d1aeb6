"""Pure decisions: desired vs observed state to actions. No kopf, no I/O."""
