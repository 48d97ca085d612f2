"""The living system around the m2n2 library: store, families, evolution job, CLI."""
