"""`zoo` command line: parses arguments and calls the library; no logic of its own."""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path


def _quickstart(args: argparse.Namespace) -> None:
    from zoo.data import load_dataset
    from zoo.datagen.generate import QUICKSTART_DATASET, make_quickstart_dataset
    from zoo.data.minari_io import dataset_exists
    from zoo.runs import next_run_folder, train_offline

    if not dataset_exists(QUICKSTART_DATASET):
        print(f"Writing {QUICKSTART_DATASET} from the vendored SAC Hopper-v5 behaviour policy ...")
        make_quickstart_dataset(args.dataset_steps, seed=args.seed)
    dataset = load_dataset(QUICKSTART_DATASET, device=args.device)
    print(f"{QUICKSTART_DATASET}: {len(dataset)} transitions, env {dataset.task.env_id}; training td3bc ...")
    out = args.out or next_run_folder("runs", "quickstart")
    result = train_offline("td3bc", dataset, out, seed=args.seed, n_timesteps=args.steps, overwrite=args.overwrite)
    final = result.final
    print()
    print(f"{'policy':<28}{'return':>10}{'normalized score':>20}")
    print(f"{'behaviour (dataset episodes)':<28}{dataset.source_episode_returns.mean():>10.1f}{result.behavior_score:>20.1f}")
    print(f"{'td3bc (' + str(final.step) + ' steps)':<28}{final.return_mean:>10.1f}{final.normalized_score:>20.1f}")
    print()
    print(f"checkpoint:     {result.checkpoint}")
    print(f"learning curve: {result.curve}")
    print(f"logs:           {Path(out) / 'progress.csv'} (tensorboard --logdir {out})")


def _train(args: argparse.Namespace) -> None:
    from zoo.config import load_hyperparams, parse_assignments
    from zoo.data import load_dataset
    from zoo.errors import UserError
    from zoo.runs import (
        POPULATION_CONFIG, next_run_folder, read_population_config, resume_population, resume_run,
        train_offline,
    )

    if args.resume is not None:
        population = (Path(args.resume) / POPULATION_CONFIG).is_file()
        settings = f"{args.resume}/{POPULATION_CONFIG if population else 'config.json'}"
        given = [flag for flag, value, default in _RESUME_IGNORES if getattr(args, value) != default]
        if given:
            raise UserError(
                f"--resume continues a run with the settings in {settings}; drop {', '.join(given)} "
                "(or start a new run without --resume)."
            )
        if population:  # --seeds, if given, must name the population's own seeds (resume_population checks)
            result = resume_population(args.resume, seeds=args.seed_list)
            _print_population(result, read_population_config(args.resume)["algo"])
            return
        if args.seed_list is not None:
            raise UserError(
                f"--seeds does not go with --resume {args.resume}: it is one run, not a population folder "
                f"(no {POPULATION_CONFIG}); drop --seeds."
            )
        _print_result(resume_run(args.resume))
        return
    if args.algo is None or args.dataset is None:
        raise UserError("zoo train needs --algo KEY and --dataset ID (or --resume RUN_DIR to continue a run).")
    overrides = {"device": args.device, **({"base": args.base} if args.base else {}), **parse_assignments(args.set)}
    load_hyperparams(args.algo, args.dataset, args.hyperparams, overrides)  # refused before the data loads
    if args.seeds is not None:
        _train_population(args, overrides)
        return
    seed = 0 if args.seed is None else args.seed
    dataset = load_dataset(args.dataset, fraction=args.fraction, subset=args.subset, seed=seed, device=args.device)
    out = args.out or next_run_folder(os.path.join("runs", args.algo, args.dataset.replace("/", "_")), f"seed{seed}")
    result = train_offline(
        args.algo, dataset, out, seed=seed, n_timesteps=args.steps, hyperparams_path=args.hyperparams,
        overrides=overrides,
        n_finetune_timesteps=args.finetune_steps, evaluate_initial=True,
        command=args.command_line, fraction=args.fraction, subset=args.subset,
        save_freq=args.save_freq, overwrite=args.overwrite,
    )
    _print_result(result)


def _train_population(args: argparse.Namespace, overrides: dict) -> None:
    """`zoo train --seeds`: one population, its seed runs and their aggregate (zoo.runs.train_population)."""
    from zoo.data import load_dataset
    from zoo.runs import next_run_folder, population_settings, seeds_label, train_population

    population_settings(  # settings a population cannot train with are refused before the data loads
        args.algo, args.dataset, args.hyperparams, overrides, args.steps, args.finetune_steps
    )
    dataset = load_dataset(args.dataset, device=args.device)
    parent = os.path.join("runs", args.algo, args.dataset.replace("/", "_"))
    out = args.out or next_run_folder(parent, f"seeds{seeds_label(args.seed_list)}")
    result = train_population(
        args.algo, dataset, out, args.seed_list, n_timesteps=args.steps, hyperparams_path=args.hyperparams,
        overrides=overrides, n_finetune_timesteps=args.finetune_steps, evaluate_initial=True,
        command=args.command_line, save_freq=args.save_freq, overwrite=args.overwrite,
    )
    _print_population(result, args.algo)


def _print_population(result, algo: str) -> None:
    """A population run's table (per seed: untrained, offline, online) and its aggregates."""
    metric = result.aggregate.metric
    stages = [("untrained", result.initial), (f"offline ({result.offline[0].step} steps)", result.offline)]
    if result.online_evaluations is not None:
        stages.append((f"online ({result.final[0].step} env steps)", result.final))
    print()
    print(f"{'seed':<8}" + "".join(f"{name:>{max(len(name) + 2, 12)}}" for name, _ in stages) + f"   ({metric})")
    for k, seed in enumerate(result.seeds):
        shown = [e[k].normalized_score if metric == "normalized score" else e[k].return_mean for _, e in stages]
        print(f"{seed:<8}" + "".join(f"{v:>{max(len(name) + 2, 12)}.1f}" for (name, _), v in zip(stages, shown)))
    print(f"offline: {result.aggregate.summary()}")
    if result.online_aggregate is not None:
        print(f"online: {result.online_aggregate.summary()}")
    files = f"{algo}.zip, evaluations.csv, learning_curve.png"
    if result.online_evaluations is not None:
        files += f", {algo}-finetuned.zip, finetune/evaluations.csv"
    print(f"seed runs: {result.folder}/seed<k> ({files} in each)")
    online = ", finetune/aggregate.csv, finetune/aggregate.png" if result.online_aggregate is not None else ""
    print(f"aggregate: {result.files['aggregate.json']}, aggregate.csv, aggregate.png{online}")


# `zoo train --seeds` refuses these (flag, attribute, default, why/what instead); a population trains
# on the whole dataset. (--resume of a population folder takes --seeds when they are the population's own.)
_SEEDS_REFUSES = (
    ("--seed", "seed", None, "--seed trains one seed, --seeds a population: give one of them"),
    ("--fraction", "fraction", 1.0, "each seed draws its own share of the dataset, one population shares one "
     "dataset: train the seeds separately with zoo train --seed K --fraction F"),
    ("--subset", "subset", "transitions", "it only matters with --fraction, which --seeds does not take"),
)


def _check_seeds(args: argparse.Namespace) -> None:
    """Parse `zoo train --seeds` (zoo.runs.parse_seeds) into args.seed_list and refuse the flags a
    population does not take yet; all before any work."""
    from zoo.errors import UserError
    from zoo.runs import parse_seeds
    from zoo.validation import validate_flag

    args.seed_list = None
    if args.command != "train" or args.seeds is None:
        return
    for flag, attribute, default, why in _SEEDS_REFUSES:
        if getattr(args, attribute) != default:
            raise UserError(f"{flag} does not go with --seeds: {why}.")
    args.seed_list = parse_seeds(args.seeds)
    for seed in args.seed_list:
        validate_flag("--seeds", "seed", seed)


# `zoo train` flags that --resume refuses (the run's config.json has them): (flag, attribute, default).
_RESUME_IGNORES = (
    ("--algo", "algo", None), ("--dataset", "dataset", None), ("--fraction", "fraction", 1.0),
    ("--subset", "subset", "transitions"), ("--seed", "seed", None), ("--steps", "steps", None),
    ("--finetune-steps", "finetune_steps", None), ("--hyperparams", "hyperparams", None), ("--set", "set", []),
    ("--base", "base", None), ("--device", "device", "auto"), ("--out", "out", None), ("--save-freq", "save_freq", None),
    ("--overwrite", "overwrite", False),
)


def _print_result(result) -> None:
    print()
    print(f"{'stage':<28}{'return':>10}{'normalized score':>20}")
    stages = [("untrained", result.initial), (f"offline ({result.offline.step} steps)", result.offline)]
    if result.online_evaluations:
        stages.append((f"online ({result.final.step} env steps)", result.final))
    for name, evaluation in stages:
        score = evaluation.normalized_score
        print(f"{name:<28}{evaluation.return_mean:>10.1f}{(f'{score:.1f}' if score is not None else '-'):>20}")
    print(f"checkpoint: {result.checkpoint}")


def _plot(args: argparse.Namespace) -> None:
    from zoo.plots import plot_runs

    groups = plot_runs(args.runs, args.out, online=args.online)
    for group in groups:
        print(group.summary())
    print(f"plot: {args.out}")


def _eval(args: argparse.Namespace) -> None:
    from zoo.errors import UserError
    from zoo.runs import evaluate_checkpoint

    path = args.path or args.checkpoint
    if path is None:
        raise UserError("zoo eval needs a checkpoint: zoo eval PATH (checkpoint folder or zip, SB3 zip).")
    returns, task = evaluate_checkpoint(args.algo, path, args.episodes, args.seed, args.device)
    line = f"{task.env_id}: return {returns.mean():.1f} ± {returns.std():.1f} over {len(returns)} episodes"
    if task.has_reference:
        line += f", normalized score {task.normalized_score(returns).mean():.1f}"
    print(line)


def _tune(args: argparse.Namespace) -> None:
    from zoo.config import parse_assignments
    from zoo.tune import TuneSettings, retrain_best, tune

    settings = TuneSettings(
        args.algo, args.dataset, fraction=args.fraction, n_trials=args.n_trials, timeout=args.timeout,
        storage=args.storage, study_name=args.study_name, sampler=args.sampler, pruner=args.pruner,
        seeds=args.seeds, n_jobs=args.n_jobs, batch=args.batch, steps=args.steps,
        finetune_steps=args.finetune_steps,
        n_evaluations=args.n_evaluations, eval_episodes=args.eval_episodes, hyperparams=args.hyperparams,
        overrides=parse_assignments(args.set), device=args.device, out=args.out, heartbeat=args.heartbeat,
        grace_period=args.grace_period, sampler_seed=args.sampler_seed, write_best=args.write_best,
        plots=not args.no_plots, command=args.command_line,
    )
    (retrain_best if args.best else tune)(settings)


def _datasets_list(args: argparse.Namespace) -> None:
    from zoo.data import minari_root
    from zoo.datagen.d4rl import d4rl_dataset_ids
    from zoo.errors import UserError

    from zoo.data.minari_io import read_dataset, stale_staging, summarize_dataset, summarize_datasets

    summaries = summarize_datasets()  # metadata and sizes only; --check reads each dataset once
    print(f"Minari root: {minari_root()}")
    if not summaries:
        print("no local datasets (make one with `zoo quickstart` or `zoo datasets make ID`)")
    for summary in summaries:
        if args.check and summary.problem is None and not summary.checked:
            try:
                read_dataset(summary.dataset_id)
            except (UserError, OSError):
                pass  # the verdict is recorded; summarize_dataset shows it
            summary = summarize_dataset(summary.dataset_id)
        print(_summary_line(summary))
    bad = [s for s in summaries if s.problem is not None]
    unchecked = [s for s in summaries if s.problem is None and not s.checked]
    if unchecked and not args.check:
        print(f"\n{len(unchecked)} dataset(s) not read yet ('?'): `zoo datasets list --check` reads and checks them.")
    stale = stale_staging()
    if stale:
        size = sum(f.stat().st_size for p in stale for f in p.rglob("*") if f.is_file())
        print(f"\n{len(stale)} folder(s) left by interrupted writes ({size / 1e6:.1f} MB), removed at the next write: "
              + ", ".join(str(p.relative_to(minari_root())) for p in stale))
    ids = [s.dataset_id for s in summaries]
    missing = [i for i in d4rl_dataset_ids() if i not in ids]
    if missing:
        print(f"\nnot built yet (`zoo datasets make ID`): {', '.join(missing)}")


def _summary_line(summary) -> str:
    """One dataset of `zoo datasets list`: sizes from its metadata, the mean return and status once read."""
    counts = f"{summary.transitions if summary.transitions is not None else '?':>10} transitions " \
        f"{summary.episodes if summary.episodes is not None else '?':>6} episodes {summary.size_bytes / 1e6:>9.1f} MB"
    if summary.problem is not None:
        return f"{summary.dataset_id:<40}{counts}  BAD: {summary.problem}"
    shown = f"mean return {summary.mean_return:9.1f}" if summary.mean_return is not None else "?"
    return f"{summary.dataset_id:<40}{counts}  {shown}"


def _dataset_line(dataset_id: str) -> str:
    from zoo.data import read_dataset

    flat = read_dataset(dataset_id)
    returns = flat.episode_returns
    return f"{dataset_id:<40}{len(flat.rewards):>10} transitions {len(returns):>6} episodes  mean return {returns.mean():9.1f}"


def _datasets_make(args: argparse.Namespace) -> None:
    from zoo.datagen.d4rl import make_d4rl_dataset

    path = make_d4rl_dataset(
        args.dataset, steps=args.steps, seed=args.seed, n_envs=args.n_envs, overwrite=args.overwrite, progress=True
    )
    print(_dataset_line(args.dataset))
    print(f"written to {path}")


def _datasets_train_behavior(args: argparse.Namespace) -> None:
    from zoo.datagen.behavior_training import resolve_env, train_behavior

    key, env_id = resolve_env(args.env)
    out = train_behavior(key, args.out or os.path.join("behavior", key), args.steps, seed=args.seed, progress=True)
    print(f"{env_id}: SAC actors, progress.csv and last_model.zip in {out}")


def _exorl_collect(args: argparse.Namespace) -> None:
    from zoo.datagen.exorl import collect

    folder = collect(
        args.domain, args.explorer, args.out, args.steps, seed=args.seed, config=args.config, device=args.device,
        overwrite=args.overwrite, progress=True,
    )
    print(f"episodes in the ExoRL layout: {folder}")


def _exorl_import(args: argparse.Namespace) -> None:
    from zoo.datagen.exorl import exorl_dataset_id, import_exorl

    for task in args.tasks:
        import_exorl(
            args.root, args.domain, args.explorer, task, on_error="skip" if args.skip_corrupt else "stop",
            overwrite=args.overwrite,
        )
        print(_dataset_line(exorl_dataset_id(args.domain, task, args.explorer)))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="zoo", description="Offline and offline-to-online RL agents.")
    parser.add_argument(
        "--debug", action="store_true", help="show the traceback of an error (also accepted after the command)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="make the embedded Hopper dataset, train TD3+BC on it, report")
    quick.add_argument("--steps", type=int, default=None, help="gradient steps (default: zoo/hyperparams/td3bc.yml)")
    quick.add_argument("--dataset-steps", type=int, default=50_000, help="transitions in the dataset")
    quick.add_argument("--out", default=None, help="run folder (default: the next free runs/quickstart_N)")
    quick.add_argument("--overwrite", action="store_true", help="replace the run in --out (else refused)")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--device", default="auto")
    quick.set_defaults(func=_quickstart)

    train = sub.add_parser("train", help="train an agent offline on a local Minari dataset")
    train.add_argument("--algo", default=None, help="agent key (required unless --resume)")
    train.add_argument("--dataset", default=None, help="dataset id (required unless --resume)")
    train.add_argument("--fraction", type=float, default=1.0)
    train.add_argument("--subset", choices=["transitions", "trajectories"], default="transitions")
    train.add_argument("--seed", type=int, default=None, help="the training seed (default: 0)")
    train.add_argument(
        "--seeds", default=None, metavar="SEEDS",
        help="train these seeds as one population in one process, e.g. 0-7 or 0,3,5: a run folder per seed "
        "(seed<k>/) and their aggregate (mean, 95%% bootstrap CI, curve with its band) in "
        "runs/<algo>/<dataset>/seeds<SEEDS>_N (or --out); --save-freq and --resume as for one run",
    )
    train.add_argument("--steps", type=int, default=None, help="gradient steps (default: from the YAML)")
    train.add_argument(
        "--finetune-steps", type=int, default=None, help="online env steps after offline learning (default: YAML, 0)"
    )
    train.add_argument("--hyperparams", default=None, help="YAML file instead of the shipped zoo/hyperparams/<algo>.yml")
    train.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE",
        help="override a hyperparameter or run setting (YAML value), e.g. --set pretrain_steps=2000; repeatable",
    )
    train.add_argument("--base", default=None, help="another base algorithm, where the method has one (psqn: td3)")
    train.add_argument("--device", default="auto")
    train.add_argument(
        "--out", default=None, help="run folder (default: the next free runs/<algo>/<dataset>/seed<seed>_N)"
    )
    train.add_argument(
        "--overwrite", action="store_true",
        help="replace the run in --out (kept aside until the new run finishes); without it a used --out is refused",
    )
    train.add_argument(
        "--save-freq", type=int, default=None, metavar="N",
        help="write a training state every N gradient steps (default: at every evaluation; 0: only on "
        "Ctrl-C); with --seeds one state holds the whole population",
    )
    train.add_argument(
        "--resume", default=None, metavar="RUN_DIR",
        help="continue an interrupted run from its last training state, with the settings in its "
        "config.json; a population folder (zoo train --seeds, with population.json) continues as one "
        "population",
    )
    train.set_defaults(func=_train)

    plot = sub.add_parser(
        "plot", help="learning curves of several runs in one PNG; seeds of one configuration as mean and 95%% CI"
    )
    plot.add_argument(
        "runs", nargs="+", metavar="RUN_DIR", help="`zoo train` run folders (a `--seeds` folder: its seed runs)"
    )
    plot.add_argument("--out", default="runs.png", help="PNG to write (default: runs.png)")
    plot.add_argument("--online", action="store_true", help="plot the fine-tuning evaluations (env steps)")
    plot.set_defaults(func=_plot)

    evaluate = sub.add_parser(
        "eval", help="evaluate a saved agent: a zoo checkpoint (folder or zip) or an SB3 zip, never unpickled"
    )
    evaluate.add_argument("path", nargs="?", default=None, help="checkpoint folder/zip, SB3 zip or run folder")
    evaluate.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)  # the former spelling of PATH
    evaluate.add_argument(
        "--algo", default=None, help="agent key of an SB3 zip outside its run folder (checkpoints name their own)"
    )
    evaluate.add_argument("--episodes", type=int, default=10)
    evaluate.add_argument("--seed", type=int, default=100)
    evaluate.add_argument("--device", default="auto")
    evaluate.set_defaults(func=_eval)
    _add_checkpoint_parsers(sub)  # export, hub

    _add_tune_parser(sub)

    datasets = sub.add_parser("datasets", help="local datasets")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True)
    listing = datasets_sub.add_parser(
        "list", help="list local Minari datasets (from their metadata; damaged ones marked BAD with the reason)"
    )
    listing.add_argument("--check", action="store_true", help="read every dataset not read yet and check its data")
    listing.set_defaults(func=_datasets_list)
    make = datasets_sub.add_parser(
        "make",
        help="build a D4RL-style dataset zoo/<env>/<quality>-v0 locally",
        description="env: hopper, halfcheetah, walker2d; quality: random, medium, medium-replay, expert, "
        "medium-expert. Default sizes as D4RL: 1M transitions, 2M for medium-expert (halves), and the "
        "medium checkpoint's training step for medium-replay (its segments share --steps equally).",
    )
    make.add_argument("dataset", help="e.g. zoo/hopper/medium-v0")
    make.add_argument("--steps", type=int, default=None, help="transitions (default: D4RL's sizes)")
    make.add_argument("--seed", type=int, default=0)
    make.add_argument("--n-envs", type=int, default=8, help="environments stepped side by side")
    make.add_argument("--overwrite", action="store_true", help="replace an existing dataset")
    make.set_defaults(func=_datasets_make)
    behavior = datasets_sub.add_parser(
        "train-behavior",
        help="train (or resume) the SAC behaviour policy of an env, checkpointing every 10k steps",
    )
    behavior.add_argument("env", help="hopper, halfcheetah, walker2d (or the Gymnasium id)")
    behavior.add_argument("--steps", type=int, default=1_000_000, help="total environment steps to reach")
    behavior.add_argument("--seed", type=int, default=0)
    behavior.add_argument("--out", default=None, help="checkpoint folder (default: behavior/<env>)")
    behavior.set_defaults(func=_datasets_train_behavior)

    exorl = datasets_sub.add_parser("exorl", help="ExoRL: reward-free exploration data on dm_control")
    exorl_sub = exorl.add_subparsers(dest="exorl_command", required=True)
    collect = exorl_sub.add_parser("collect", help="run a URLB explorer and save episodes in the ExoRL layout")
    collect.add_argument("domain", help="dm_control domain, e.g. walker")
    collect.add_argument("explorer", help="rnd, icm, smm or random")
    collect.add_argument("--steps", type=int, default=100_000)
    collect.add_argument("--out", default="data/exorl", help="root of the <domain>/<explorer>/buffer folders")
    collect.add_argument("--config", default="small", help="'urlb' (hidden/batch 1024, for GPUs) or 'small' (256)")
    collect.add_argument("--seed", type=int, default=1)
    collect.add_argument("--device", default="auto")
    collect.add_argument("--overwrite", action="store_true")
    collect.set_defaults(func=_exorl_collect)
    importer = exorl_sub.add_parser(
        "import", help="relabel an ExoRL folder (official or collected) for tasks and write Minari datasets"
    )
    importer.add_argument("domain")
    importer.add_argument("explorer")
    importer.add_argument("tasks", nargs="+", help="tasks to relabel for, e.g. stand walk run")
    importer.add_argument("--root", default="data/exorl", help="folder holding <domain>/<explorer>/buffer")
    importer.add_argument("--skip-corrupt", action="store_true", help="skip unreadable episodes (named) instead of stopping")
    importer.add_argument("--overwrite", action="store_true")
    importer.set_defaults(func=_exorl_import)
    return parser


def _add_tune_parser(sub) -> None:
    tune = sub.add_parser(
        "tune", help="tune an agent's hyperparameters with Optuna (pip install 'offline-zoo[tune]')",
        description="Each trial trains --seeds seeds with settings drawn from the agent's search space "
        "(zoo/tune/spaces.py); its score is the final evaluation's normalized score, mean over the seeds. "
        "Several workers (any machines) share a study through --storage (e.g. PostgreSQL) and --study-name.",
    )
    tune.add_argument("--algo", required=True)
    tune.add_argument("--dataset", required=True)
    tune.add_argument("--fraction", type=float, default=1.0, help="share of the dataset (seed k draws seed k's)")
    tune.add_argument("--n-trials", type=int, default=20, help="trials the study finishes, all workers together")
    tune.add_argument("--timeout", type=float, default=None, help="stop this worker after S seconds")
    tune.add_argument("--storage", default=None, help="Optuna RDB URL (default: sqlite file in the study folder)")
    tune.add_argument("--study-name", default=None, help="default: <algo>-<dataset>")
    tune.add_argument("--sampler", choices=["tpe", "random", "cmaes"], default="tpe")
    tune.add_argument("--pruner", choices=["median", "halving", "none"], default="median")
    tune.add_argument("--seeds", type=int, default=1, help="training seeds per trial (the score is their mean)")
    tune.add_argument("--n-jobs", type=int, default=1, help="trials run side by side in this worker (threads)")
    tune.add_argument("--batch", type=int, default=1, help="trials asked at once, trained as one population")
    tune.add_argument("--steps", type=int, default=None, help="gradient steps per trial (default: the YAML's)")
    tune.add_argument("--finetune-steps", type=int, default=None, help="online env steps per trial (default: YAML)")
    tune.add_argument("--n-evaluations", type=int, default=None, help="evaluations per phase (default: eval_freq)")
    tune.add_argument("--eval-episodes", type=int, default=None, help="episodes per evaluation (default: YAML)")
    tune.add_argument("--hyperparams", default=None, help="YAML file instead of the shipped one")
    tune.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="fixed (not tuned) setting")
    tune.add_argument("--device", default="auto")
    tune.add_argument("--out", default=None, help="study folder (default: runs/tune/<study name>)")
    tune.add_argument("--heartbeat", type=int, default=10, help="seconds between a running trial's heartbeats")
    tune.add_argument("--grace-period", type=int, default=None, help="heartbeat age that fails a trial (3x)")
    tune.add_argument("--sampler-seed", type=int, default=None)
    tune.add_argument("--write-best", default=None, metavar="FILE", help="write the best trial's YAML section")
    tune.add_argument("--no-plots", action="store_true", help="skip the history and importance PNGs")
    tune.add_argument("--best", action="store_true", help="retrain the study's best trial (--steps: its budget)")
    tune.set_defaults(func=_tune)


def _export(args: argparse.Namespace) -> None:
    from zoo.checkpoint import read_checkpoint_config
    from zoo.hub import export_run

    out = export_run(args.run_dir, args.out, overwrite=args.overwrite, stage=args.stage)
    config = read_checkpoint_config(out)
    evaluation = config["evaluation"]
    score = (
        f"normalized score {evaluation['normalized_score']:.1f} ({evaluation['episodes']} episodes)"
        if evaluation and evaluation["normalized_score"] is not None else "no final evaluation recorded"
    )
    size = sum(f.stat().st_size for f in out.iterdir()) / 1e6
    print(f"{config['agent']['key']} on {config['dataset']['id']} (seed {config['seed']}, "
          f"{config['training']['gradient_steps']} gradient steps): {score}")
    print(f"checkpoint: {out} ({size:.2f} MB, no optimizer state)")


def _hub_list(args: argparse.Namespace) -> None:
    from zoo.hub import SHIPPED_ROOT, list_pretrained, zoo_home

    entries = list_pretrained()
    print(f"local: {zoo_home()}  shipped: {SHIPPED_ROOT}")
    if not entries:
        print("no checkpoints (make one with `zoo export RUN_DIR`, or `zoo hub pull KEY DATASET`)")
    for e in entries:
        score = f"{e.normalized_score:6.1f} ({e.episodes} ep)" if e.normalized_score is not None else f"{'-':>6}"
        line = f"{e.source:<8}{e.key:<10}{e.dataset_id:<28}seed {e.seed:<3}{score:<14}"
        line += f"{e.gradient_steps:>9} steps"
        print(f"{line}  {e.path}")


def _hub_pull(args: argparse.Namespace) -> None:
    from zoo.hub import pull

    print(f"downloaded to {pull(args.key, args.dataset, args.seed, org=args.org, revision=args.revision)}")


def _hub_push(args: argparse.Namespace) -> None:
    from zoo.hub import push

    print(f"pushed to {push(args.path, repo=args.repo, org=args.org, private=args.private)}")


def _add_checkpoint_parsers(sub) -> None:
    export = sub.add_parser(
        "export", help="turn a `zoo train` run folder into a zoo checkpoint (no optimizer state)",
        description="Reads RUN_DIR's config.json and its last SB3 zip (without unpickling), writes config.json, "
        "model.safetensors and reference_actions.json. Default destination: $ZOO_HOME/<key>/<dataset>/seed<seed>, "
        "where load_pretrained finds it.",
    )
    export.add_argument("run_dir")
    export.add_argument("--out", default=None, help="checkpoint folder (default: in $ZOO_HOME)")
    export.add_argument("--overwrite", action="store_true", help="replace an existing checkpoint folder")
    export.add_argument(
        "--stage", choices=("final", "offline"), default="final",
        help="final: the run's last checkpoint; offline: the agent before fine-tuning (<algo>.zip)",
    )
    export.set_defaults(func=_export)

    hub = sub.add_parser("hub", help="pretrained checkpoints: local, shipped, Hugging Face Hub")
    hub_sub = hub.add_subparsers(dest="hub_command", required=True)
    hub_list = hub_sub.add_parser("list", help="checkpoints in $ZOO_HOME, in the package, in the Hub's cache")
    hub_list.set_defaults(func=_hub_list)
    pull = hub_sub.add_parser("pull", help="download <org>/<key>-<dataset> (seed folder) into $ZOO_HOME")
    pull.add_argument("key")
    pull.add_argument("dataset")
    pull.add_argument("--seed", type=int, default=0)
    pull.add_argument("--org", default=None, help="Hub organisation (default: $ZOO_HUB_ORG or offline-zoo)")
    pull.add_argument("--revision", default=None)
    pull.set_defaults(func=_hub_pull)
    push = hub_sub.add_parser("push", help="upload a checkpoint folder to <org>/<key>-<dataset>/seed<seed>")
    push.add_argument("path")
    push.add_argument("--org", default=None)
    push.add_argument("--repo", default=None, help="repository id instead of <org>/<key>-<dataset>")
    push.add_argument("--private", action="store_true")
    push.set_defaults(func=_hub_push)


# CLI numbers checked before any work, as the run settings they set: flag attribute -> (setting, flag).
_FLAG_SETTINGS = {
    "steps": ("n_timesteps", "--steps"),
    "finetune_steps": ("n_finetune_timesteps", "--finetune-steps"),
    "fraction": ("fraction", "--fraction"),
    "seed": ("seed", "--seed"),
    "episodes": ("n_eval_episodes", "--episodes"),
    "dataset_steps": ("dataset_steps", "--dataset-steps"),
    "n_envs": ("n_envs", "--n-envs"),
}


def _check_arguments(args: argparse.Namespace) -> None:
    """Refuse bad flags before any work starts (no dataset written, no run folder made): numbers out of
    range, an unknown agent key, a device this machine does not have."""
    from zoo.validation import validate_flag

    _check_seeds(args)
    if getattr(args, "save_freq", None) is not None:
        from zoo.runs import checked_save_freq

        checked_save_freq(args.save_freq, None)
    for attribute, (setting, flag) in _FLAG_SETTINGS.items():
        value = getattr(args, attribute, None)
        if value is not None:
            validate_flag(flag, setting, value)
    algo = getattr(args, "algo", None)
    if algo is not None:
        from zoo.errors import UserError
        from zoo.registry import AGENTS

        if algo not in AGENTS:
            raise UserError(f"unknown agent '{algo}' (--algo): choose one of {', '.join(sorted(AGENTS))}.")
    out = getattr(args, "out", None)
    if args.command in ("train", "quickstart") and out and not args.overwrite and not getattr(args, "resume", None):
        from zoo.runs import check_run_folder

        check_run_folder(Path(out), overwrite=False)  # a used --out is refused before the dataset is loaded
    device = getattr(args, "device", None)
    if device is not None:
        from zoo.data.dataset import resolve_device

        resolve_device(device)


def _user_error_message(error: BaseException) -> str | None:
    """The one line to print for an error that is the user's to fix, None for a bug (keeps its traceback).

    UserError and its subclasses are the user's by definition; so are the file-system errors of paths the
    user gave (a missing checkpoint, an existing output). ValueError is what the library raised for bad
    input before zoo.errors existed: it is still reported on one line, with the hint to see where.
    """
    from zoo.errors import UserError

    if isinstance(error, UserError):
        message = str(error)
    elif isinstance(error, (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError, PermissionError)):
        message = f"{error.strerror.lower()}: {error.filename}" if error.filename else str(error)
    elif isinstance(error, ValueError):
        message = f"{error} (zoo --debug ... shows where)"
    else:
        return None
    return " ".join(message.split("\n"))


def main(argv: list[str] | None = None) -> int:
    """Run one command; an error that is the user's to fix prints one line `zoo: error: ...` and returns 2,
    Ctrl-C returns 130. `--debug` (anywhere on the line) lets the exception through with its traceback."""
    from zoo.agents.base import close_progress_bars
    from zoo.errors import Interrupted

    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [arg for arg in argv if arg != "--debug"]
    args = build_parser().parse_args(argv)
    args.command_line = shlex.join(["zoo", *argv])  # what config.json records (main([...]) from Python too)
    try:
        _check_arguments(args)
        args.func(args)
    except Interrupted as stopped:  # training stopped on Ctrl-C/SIGTERM after saving: one line says how to resume
        close_progress_bars()
        print(stopped, file=sys.stderr)
        return stopped.exit_code  # 128 + the signal: 130 for Ctrl-C, 143 for SIGTERM
    except KeyboardInterrupt:  # a second Ctrl-C, or one outside training
        close_progress_bars()
        if debug:
            raise
        print("zoo: interrupted", file=sys.stderr)
        return 130
    except Exception as error:
        close_progress_bars()
        message = _user_error_message(error)
        if message is None or debug:
            raise
        print(f"zoo: error: {message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
