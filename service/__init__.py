"""The BentoML HTTP layer that serves the ecosystem's champion."""
