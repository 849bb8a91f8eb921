"""pie-bench: the harness (data, configs, registry, training, metrics, runner, report)."""
