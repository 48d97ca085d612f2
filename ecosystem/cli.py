"""The ``m2n2`` command."""

import argparse
import logging
import sys

import torch

from m2n2 import M2N2, EvolutionConfig, FlatGenomes, digits


def demo(args: argparse.Namespace) -> int:
    """Evolve a merged model from the two digits specialists and report its test accuracy."""
    torch.set_num_threads(args.threads)
    data = digits.load_split()
    space = digits.mlp_space()
    test = digits.FlatMLPScorer(data.x_test, data.y_test, space)
    specialists = digits.train_specialists(data, space)
    for name, model in zip(("digits 0-4", "digits 5-9"), specialists, strict=True):
        print(f"specialist {name}: test accuracy {100 * float(test(model).mean()):.1f}%")
    evolver = M2N2(
        digits.FlatMLPScorer(data.x_train, data.y_train, space), EvolutionConfig(seed=args.seed), FlatGenomes(space.dim)
    )
    evolver.seed_archive(specialists).run(steps=args.steps, progress=True)
    print(f"champion after {args.steps} merges: test accuracy {100 * float(test(evolver.best_).mean()):.1f}%")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="m2n2", description="An evolving model ecosystem that serves its best merge.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="evolve a merge of the two digits specialists in the foreground")
    p.add_argument("--steps", type=int, default=10_000, help="M2N2 generations (one forward pass each)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.set_defaults(handler=demo)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
