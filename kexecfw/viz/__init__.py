"""Pictures of memory maps, load plans and crash notes (matplotlib; never imported by the CLI's load path)."""
