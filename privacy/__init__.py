"""Privacy: mechanisms, events, accounting, ledgers, policies and pseudonymisation."""
