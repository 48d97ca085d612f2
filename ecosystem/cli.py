"""The ``m2n2`` command: the library demo, and every operation on an ecosystem's data directory.

User mistakes end in one line on stderr and exit status 2, never a traceback.
"""

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch
from pydantic import ValidationError
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from ecosystem import backup as ecosystem_backup
from ecosystem import demo as digits_demo
from ecosystem import feedback, image_demo, promotion, report, schedule, setup, store, tasks, text_demo, weights
from ecosystem.db import begin_write
from ecosystem.errors import Conflict, EcosystemError, NotFound
from ecosystem.evolver import Evolver
from ecosystem.families import FAMILIES
from ecosystem.orm import ChampionEvent
from ecosystem.runtime import Runtime, open_runtime
from ecosystem.settings import Settings
from ecosystem.specialists import register as register_specialist
from m2n2 import M2N2, EvolutionConfig, FlatGenomes, digits
from m2n2.errors import M2N2Error

USER_ERROR = 2
ACTOR = "cli"  # who the champion history says moved the pointer
USER_ERRORS = (M2N2Error, ValidationError, OSError)  # EcosystemError is an M2N2Error


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


# --- ecosystem commands: each takes the runtime and the parsed arguments, prints, returns 0 --------------


def init(runtime: Runtime, args: argparse.Namespace) -> int:
    """Create an ecosystem: the digits demo, or an empty one of a family (then register specialists)."""
    if args.family is not None:
        options = {"base": args.base} if args.base is not None else {"layers": args.layers}
        options.update(args.set or {})
        ecosystem = setup.create(runtime, args.family, options)
        n_tensors = len(ecosystem.space)
        print(f"created a {ecosystem.family} ecosystem in {runtime.settings.data_dir} ({n_tensors} tensors to merge)")
        print("next: `m2n2 register PATH --name NAME` for each specialist, `m2n2 task create`, then feedback")
        return 0
    if args.demo == "text":
        print(f"building the {args.size} text models (cached after the first build)", file=sys.stderr)
        registrations = text_demo.init_text(runtime, config=text_demo.SIZES[args.size])
        names = text_demo.TASKS
    elif args.demo == "images":
        print(f"building the image models (cached in {image_demo.default_cache()})", file=sys.stderr)
        registrations = image_demo.init_images(runtime, config=image_demo.SIZES[args.size])
        names = tuple(image_demo.TASKS.values())
    else:
        registrations, names = digits_demo.init_digits(runtime), (digits_demo.TASK,)
    with runtime.sessions() as session:
        counts = {name: store.count_points(session, store.get_task(session, name)) for name in names}
        scorings = {name: store.get_task(session, name).scoring for name in names}
        current = store.champion(session)
        champion = store.get_model(session, current.model_id).name if current else "none"
    print(f"created the {args.demo or 'digits'} ecosystem in {runtime.settings.data_dir}")
    for name, c in counts.items():
        print(f"task {name}: {c['fitness']} fitness points, {c['gate']} gate points ({scorings[name]})")
    for r in registrations:
        print(report.format_registration(r))
    print(f"champion: {champion}")
    print("next: `m2n2 evolve --steps 1000`, or `m2n2 evolver` to keep evolving in the foreground")
    return 0


def register(runtime: Runtime, args: argparse.Namespace) -> int:
    """Register a safetensors specialist and say whether it entered the archive."""
    r = register_specialist(
        runtime, args.path, name=args.name, registered_by=args.by, source=args.source, licence=args.licence
    )
    print(report.format_registration(r))
    return 0


def task_create(runtime: Runtime, args: argparse.Namespace) -> int:
    """Create a task whose scoring rule is one of the family's."""
    task = tasks.create_task(
        runtime, name=args.name, scoring=args.scoring, window=args.window, gate_share=args.gate_share
    )
    print(f"created task {task.name}: scoring {task.scoring}, window {task.window}, gate share {task.gate_share:g}")
    return 0


def feedback_import(runtime: Runtime, args: argparse.Namespace) -> int:
    """Import labelled points from a JSON-lines file; one bad line and nothing is stored."""
    added, duplicates = feedback.import_jsonl(runtime, args.task, args.file)
    gate = sum(p.pool == "gate" for p in added)
    print(
        f"imported {len(added)} points into task {args.task} ({len(added) - gate} fitness, {gate} gate); "
        f"{len(duplicates)} duplicates skipped"
    )
    return 0


def feedback_simulate(runtime: Runtime, args: argparse.Namespace) -> int:
    """Post noisy dataset digits to the demo task at a steady rate."""
    with runtime.sessions() as session:
        try:
            store.get_task(session, digits_demo.TASK)
        except NotFound:
            raise NotFound(
                f"feedback simulate posts digits to the demo task {digits_demo.TASK!r}, which this ecosystem lacks "
                "(create the demo with `m2n2 init --demo digits`)"
            ) from None
    until = "until interrupted" if args.seconds is None else f"for {args.seconds:g} s"
    print(f"posting {args.rate:g} digits per second to task {digits_demo.TASK} {until}", file=sys.stderr)
    posted = digits_demo.simulate_feedback(runtime, rate=args.rate, seconds=args.seconds)
    print(f"posted {posted} new points to task {digits_demo.TASK}")
    return 0


def evolve(runtime: Runtime, args: argparse.Namespace) -> int:
    """Tick in the foreground until the budget is spent (default: one tick of the settings' budget)."""
    evolver, start = Evolver(runtime), time.monotonic()
    by_steps = args.seconds is None
    total = args.steps if args.steps is not None else args.seconds or runtime.settings.evolution.steps_per_tick
    done = admitted = rejected = 0
    outcomes = []
    with (
        schedule.single_evolver(runtime.settings),
        logging_redirect_tqdm(),
        tqdm(total=total, unit="step" if by_steps else "s", desc="evolve", disable=None) as bar,  # None: TTY only
    ):
        for tick in schedule.ticks(evolver, args.steps, args.seconds):
            if tick.skipped:
                raise EcosystemError(f"nothing to evolve: {tick.skipped}")
            done, admitted, rejected = done + tick.steps, admitted + tick.admitted, rejected + tick.rejected
            bar.update(tick.steps if by_steps else min(args.seconds, time.monotonic() - start) - bar.n)
            bar.set_postfix(admitted=admitted, rejected=rejected)
            if tick.promotion is not None:
                outcomes.append(tick.promotion)
    print(f"evolved {done} steps in {time.monotonic() - start:.1f} s: {admitted} admitted, {rejected} rejected")
    with runtime.sessions() as session:
        for outcome in outcomes:
            if outcome.action != "kept":
                name = store.get_model(session, outcome.model_id).name
                print(f"{'promoted' if outcome.action == 'promote' else 'first champion'} {name}: {outcome.reason}")
        if outcomes and outcomes[-1].action == "kept":
            print(f"gate: {outcomes[-1].reason}")
        current = store.champion(session)
        if current is not None:
            print(f"champion: {store.get_model(session, current.model_id).name} (version {current.version})")
    return 0


def evolver(runtime: Runtime, args: argparse.Namespace) -> int:
    """Run the evolution schedule in the foreground until SIGTERM or SIGINT (first start: build the digits demo)."""
    if args.first_start:
        print(f"first start: building the digits demo ecosystem in {runtime.settings.data_dir}", file=sys.stderr)
        digits_demo.init_digits(runtime)
    if removed := runtime.artifacts.clean_tmp():
        logging.getLogger(__name__).info("removed %d temporary files left by an earlier crash", removed)
    schedule.run_forever(Evolver(runtime), runtime.settings)
    return 0


def status(runtime: Runtime, args: argparse.Namespace) -> int:
    """Print the archive, coverage and the champion's gate scores (``--json``: one object for scripts)."""
    with runtime.sessions() as session:
        begin_write(session)  # gate scores not stored yet are computed and kept
        data = report.collect_status(session, runtime)
        session.commit()
    print(json.dumps(data, indent=2) if args.json else report.format_status(data))
    return 0


def lineage(runtime: Runtime, args: argparse.Namespace) -> int:
    """Print a model's ancestry tree with operators, split points and mixing ratios."""
    with runtime.sessions() as session:
        model = store.model_by_name_or_id(session, args.model)
        ancestors = store.lineage(session, model.id, max_depth=args.depth)
    print(report.format_lineage(ancestors))
    return 0


def promote(runtime: Runtime, args: argparse.Namespace) -> int:
    """Make a model the champion by hand (bypassing the gate; recorded)."""
    reason = {"reason": args.reason} if args.reason else {}
    event = promotion.promote(runtime, args.model, actor=ACTOR, **reason)  # an evicted child is rebuilt first
    return _print_move(runtime, event, "promoted")


def rollback(runtime: Runtime, args: argparse.Namespace) -> int:
    """Return the champion to the model the newest promotion replaced."""
    reason = {"reason": args.reason} if args.reason else {}
    event = promotion.rollback(runtime, actor=ACTOR, **reason)
    return _print_move(runtime, event, "rolled back to")


def export(runtime: Runtime, args: argparse.Namespace) -> int:
    """Write DIR/model.safetensors (the artifact) and DIR/README.md (a model card with the full ancestry)."""
    ancestors = report.export_model(runtime, args.model, args.dir)
    model, (stated, _) = ancestors[0].model, report.licences(a.model for a in ancestors)
    print(f"exported {model.name} to {args.dir}: model.safetensors ({model.n_bytes} bytes), README.md")
    print(f"ancestry: {len(ancestors) - 1} ancestors; licences: {', '.join(stated) or 'none stated'}")
    return 0


def rebuild(runtime: Runtime, args: argparse.Namespace) -> int:
    """Recreate an evicted model's weights by replaying its lineage; the sha256 must match the recorded one."""
    with runtime.sessions() as session:
        model = store.model_by_name_or_id(session, args.model)
    existed = runtime.artifacts.exists(model.sha256)
    path = weights.ensure(runtime, model)
    verb = "already stored" if existed else "rebuilt"
    print(f"{model.name}: {verb} at {path} (sha256 {model.sha256})")
    return 0


def pin(runtime: Runtime, args: argparse.Namespace) -> int:
    """Keep (or with --off, stop keeping) a model's weights whatever happens to it."""
    with runtime.sessions() as session:
        begin_write(session)
        model = store.model_by_name_or_id(session, args.model)
        store.set_pinned(session, model, not args.off)
        session.commit()
        print(f"{model.name}: {'unpinned' if args.off else 'pinned'}")
    return 0


def backup(runtime: Runtime, args: argparse.Namespace) -> int:
    """Snapshot the ecosystem (database, weights, family files) into a new directory, while it runs."""
    done = ecosystem_backup.backup(runtime, args.dir)
    print(f"backed up {done.models} models and {done.weights_files} weights files to {done.directory}")
    return 0


def restore(args: argparse.Namespace) -> int:
    """Bring a backup back into an empty data directory."""
    settings = Settings(data_dir=args.data_dir) if args.data_dir is not None else Settings()
    done = ecosystem_backup.restore(settings, args.dir)
    print(f"restored {done.models} models and {done.weights_files} weights files into {done.directory}")
    return 0


# --- helpers -------------------------------------------------------------------------------------------------


def _print_move(runtime: Runtime, event: ChampionEvent, verb: str) -> int:
    with runtime.sessions() as session:
        name = store.get_model(session, event.model_id).name
        previous = store.get_model(session, event.previous_model_id).name if event.previous_model_id else None
    print(f"{verb} {name}: champion version {event.version}" + (f" (was {previous})" if previous else ""))
    if event.n_points:
        print(f"gate: {event.challenger_score:.4f} vs {event.champion_score:.4f} on {event.n_points} points")
    return 0


def _positive(kind: type) -> Any:
    def parse(text: str) -> Any:
        value = kind(text)  # a ValueError becomes argparse's "invalid <kind> value"
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"expected a number > 0, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _option(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text}")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value  # plain text, e.g. dtype=bfloat16


def _layers(text: str) -> list[int]:
    try:
        return [int(n) for n in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer sizes like 64,256,10, got {text}") from None


def _one_line(error: BaseException) -> str:
    if isinstance(error, ValidationError):
        return f"invalid {error.title}: " + "; ".join(
            f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()
        )
    return " ".join(str(error).split()) or type(error).__name__


def _open(args: argparse.Namespace) -> Runtime:
    """The runtime of ``--data-dir`` (else M2N2_DATA_DIR, else the per-user directory); only init creates one."""
    settings = Settings(data_dir=args.data_dir) if args.data_dir is not None else Settings()
    # `m2n2 evolver`, the main job, builds the embedded digits demo on its first start in an empty place
    args.first_start = (
        args.handler is evolver and settings.sqlite_file is not None and not settings.sqlite_file.is_file()
    )
    creating = (args.handler is init and (args.demo or args.family) is not None) or args.first_start
    runtime, family = None, None
    if creating or settings.sqlite_file is None or settings.sqlite_file.is_file():
        runtime = open_runtime(settings)
        with runtime.sessions() as session, contextlib.suppress(NotFound):
            family = store.get_ecosystem(session).family
    refusal = None
    if args.handler is init and family is not None:
        refusal = Conflict(f"{settings.data_dir} already holds a {family} ecosystem; nothing changed")
    elif family is None and not creating:
        refusal = NotFound(
            f"no ecosystem in {settings.data_dir} yet: `m2n2 init --demo digits` creates the digits demo, "
            "`m2n2 init --family causal-lm --base DIR` one of your own models; --data-dir chooses another directory"
        )
    if refusal is not None:
        if runtime is not None:
            _close(runtime)
        raise refusal
    return runtime


def _close(runtime: Runtime) -> None:
    runtime.close()  # the process may go on (tests)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="m2n2", description="An evolving model ecosystem that serves its best merge.")
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("demo", help="evolve a merge of the two digits specialists in the foreground")
    p.add_argument("--steps", type=int, default=10_000, help="M2N2 generations (one forward pass each)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads")
    p.set_defaults(handler=demo)

    where = argparse.ArgumentParser(add_help=False)
    where.add_argument(
        "--data-dir",
        type=Path,
        metavar="DATA_DIR",
        help="the ecosystem's directory (default: M2N2_DATA_DIR, else the per-user data dir)",
    )

    def add(parent: Any, name: str, handler: Any, help: str) -> argparse.ArgumentParser:
        p = parent.add_parser(name, parents=[where], help=help, description=help)
        p.set_defaults(handler=handler)
        return p

    p = add(commands, "init", init, "create an ecosystem in the data directory")
    kind = p.add_mutually_exclusive_group()
    kind.add_argument(
        "--demo",
        choices=["digits", "text", "images"],
        help="a demo: digits (2 classifier specialists), text (math and shop language-model specialists) "
        "or images (text-to-image specialists for English and Japanese prompts)",
    )
    p.add_argument(
        "--size",
        choices=sorted(text_demo.SIZES),
        default="full",
        help="--demo text or images: the model build (full: minutes on 2 cores, then cached; tiny: seconds, untrained)",
    )
    kind.add_argument("--family", choices=sorted(FAMILIES), help="an empty ecosystem of this model family")
    arch = p.add_mutually_exclusive_group()
    arch.add_argument("--base", metavar="DIR", help="causal-lm: the base model's directory (or hub id org/model)")
    arch.add_argument("--layers", type=_layers, metavar="N,N,...", help="classifier: layer sizes, e.g. 64,256,10")
    p.add_argument(
        "--set",
        type=_option,
        action="extend",
        nargs=1,
        metavar="KEY=VALUE",
        help="a family option (JSON value or text), e.g. --set dtype=bfloat16 --set max_new_tokens=64",
    )
    p = add(commands, "register", register, "register a specialist")
    p.add_argument("path", metavar="PATH", help="a safetensors file, a checkpoint directory, or a hub id org/model")
    p.add_argument("--name", required=True, metavar="NAME")
    p.add_argument("--by", default=ACTOR, metavar="WHO", help="who registers it (default: %(default)s)")
    p.add_argument("--source", metavar="S", help="where the weights come from")
    p.add_argument("--licence", metavar="L", help="the weights' licence, e.g. Apache-2.0")
    tasks = commands.add_parser("task", help="manage tasks").add_subparsers(dest="action", required=True)
    p = add(tasks, "create", task_create, "create a task")
    p.add_argument("name", metavar="NAME")
    p.add_argument("--scoring", required=True, metavar="RULE", help="one of the family's scoring rules")
    p.add_argument("--window", type=int, metavar="N", help="newest fitness points evolution uses (default 1000)")
    p.add_argument(
        "--gate-share",
        type=float,
        metavar="F",
        help="share of points naming no pool that go to the gate set (default 0.2)",
    )
    feedbacks = commands.add_parser("feedback", help="add labelled data").add_subparsers(dest="action", required=True)
    p = add(feedbacks, "import", feedback_import, "import points from a JSON-lines file (all or nothing)")
    p.add_argument("task", metavar="TASK")
    p.add_argument("file", type=Path, metavar="FILE.jsonl", help='one {"inputs", "target", "weight"?, "pool"?} a line')
    p = add(feedbacks, "simulate", feedback_simulate, "post noisy digits to the demo task")
    p.add_argument(
        "--rate", type=_positive(float), default=2.0, metavar="R", help="points per second (default %(default)s)"
    )
    p.add_argument(
        "--seconds", type=_positive(float), metavar="S", help="stop after this long (default: until interrupted)"
    )
    p = add(commands, "evolve", evolve, "evolve in the foreground until the budget is spent")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument(
        "--steps", type=_positive(int), metavar="N", help="M2N2 steps in all (default: one tick's budget)"
    )
    budget.add_argument("--seconds", type=_positive(float), metavar="S", help="wall-clock seconds in all")
    add(commands, "evolver", evolver, "run the evolution schedule in the foreground until SIGTERM/SIGINT")
    p = add(commands, "status", status, "show the archive, coverage and the champion")
    p.add_argument("--json", action="store_true", help="print one JSON object (for scripts)")
    p = add(commands, "lineage", lineage, "show a model's ancestry")
    p.add_argument("model", metavar="MODEL", help="a model name or id")
    p.add_argument("--depth", type=_positive(int), metavar="N", help="show at most this many generations back")
    p = add(commands, "promote", promote, "make a model the champion (bypasses the gate; recorded)")
    p.add_argument("model", metavar="MODEL", help="a model name or id")
    p.add_argument("--reason", metavar="TEXT", help="recorded in the champion history")
    p = add(commands, "rollback", rollback, "return the champion to the one the newest promotion replaced")
    p.add_argument("--reason", metavar="TEXT", help="recorded in the champion history")
    p = add(commands, "export", export, "write a model's weights and model card into a directory")
    p.add_argument("model", metavar="MODEL", help="a model name or id")
    p.add_argument("dir", type=Path, metavar="DIR", help="where model.safetensors and README.md go")
    p = add(commands, "rebuild", rebuild, "recreate an evicted model's weights from its lineage")
    p.add_argument("model", metavar="MODEL", help="a model name or id")
    p = add(commands, "backup", backup, "snapshot the ecosystem into a new directory (safe while it runs)")
    p.add_argument("dir", type=Path, metavar="DIR")
    p = add(commands, "restore", restore, "bring a backup back into an empty data directory")
    p.add_argument("dir", type=Path, metavar="DIR", help="a directory written by `m2n2 backup`")
    p = add(commands, "pin", pin, "keep a model's weights even after it leaves the archive")
    p.add_argument("model", metavar="MODEL", help="a model name or id")
    p.add_argument("--off", action="store_true", help="release the pin instead")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    level = logging.INFO if args.handler in (demo, evolver) else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    for chatty in ("alembic", "apscheduler"):  # migrations and job starts on every command: noise to a user
        logging.getLogger(chatty).setLevel(logging.WARNING)
    if args.handler is demo:
        return demo(args)
    try:
        if args.handler is restore:  # the one command that needs an empty data directory
            return restore(args)
        runtime = _open(args)
        try:
            return args.handler(runtime, args)
        finally:
            _close(runtime)
    except BrokenPipeError:  # `m2n2 lineage X | head`: stop quietly (Python's signal docs); it is an OSError
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except USER_ERRORS as e:
        name = " ".join(filter(None, ("m2n2", args.command, getattr(args, "action", None))))
        print(f"{name}: error: {_one_line(e)}", file=sys.stderr)
        return USER_ERROR
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
