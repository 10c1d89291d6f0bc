"""Load tools: traffic, drills, demo, benchmarks, and the independent ledger model that judges them."""
