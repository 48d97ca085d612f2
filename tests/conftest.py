"""Shared test setup."""

import torch

# The tests use tiny tensors: on a small (or busy) CPU, torch's thread pool costs far more
# than it saves (a 19k-parameter MLP evaluation took 40 ms with 2 threads, 2 ms with 1).
torch.set_num_threads(1)
