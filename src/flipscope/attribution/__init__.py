"""Which part of a compression did it, and what to compress differently: units of a model's Linear layers,
ablations that swap their weights in memory, and a knapsack over per-unit bit widths."""
