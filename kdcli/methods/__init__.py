"""The distillation methods' implementations (torch). What exists and what each takes is in kdcli.catalog, which
lists them without importing this package; ``Method`` (kdcli.methods.base) is the interface a plugin implements."""
