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
    from zoo.runs import train_offline

    if not dataset_exists(QUICKSTART_DATASET):
        print(f"Writing {QUICKSTART_DATASET} from the vendored SAC Hopper-v5 behaviour policy ...")
        make_quickstart_dataset(args.dataset_steps, seed=args.seed)
    dataset = load_dataset(QUICKSTART_DATASET, device=args.device)
    print(f"{QUICKSTART_DATASET}: {len(dataset)} transitions, env {dataset.task.env_id}; training td3bc ...")
    result = train_offline("td3bc", dataset, args.out, seed=args.seed, n_timesteps=args.steps)
    final = result.final
    print()
    print(f"{'policy':<28}{'return':>10}{'normalized score':>20}")
    print(f"{'behaviour (dataset episodes)':<28}{dataset.source_episode_returns.mean():>10.1f}{result.behavior_score:>20.1f}")
    print(f"{'td3bc (' + str(final.step) + ' steps)':<28}{final.return_mean:>10.1f}{final.normalized_score:>20.1f}")
    print()
    print(f"checkpoint:     {result.checkpoint}")
    print(f"learning curve: {result.curve}")
    print(f"logs:           {Path(args.out) / 'progress.csv'} (tensorboard --logdir {args.out})")


def _train(args: argparse.Namespace) -> None:
    from zoo.config import load_hyperparams, parse_assignments
    from zoo.data import load_dataset
    from zoo.runs import train_offline

    overrides = {"device": args.device, **({"base": args.base} if args.base else {}), **parse_assignments(args.set)}
    load_hyperparams(args.algo, args.dataset, args.hyperparams, overrides)  # refused before the data loads
    dataset = load_dataset(args.dataset, fraction=args.fraction, subset=args.subset, seed=args.seed, device=args.device)
    out = args.out or os.path.join("runs", args.algo, args.dataset.replace("/", "_"), f"seed{args.seed}")
    result = train_offline(
        args.algo, dataset, out, seed=args.seed, n_timesteps=args.steps, hyperparams_path=args.hyperparams,
        overrides=overrides,
        n_finetune_timesteps=args.finetune_steps, evaluate_initial=True,
        command=shlex.join(["zoo", *sys.argv[1:]]), fraction=args.fraction,
    )
    print()
    print(f"{'stage':<28}{'return':>10}{'normalized score':>20}")
    stages = [("untrained", result.initial), (f"offline ({result.offline.step} steps)", result.offline)]
    if result.online_evaluations:
        stages.append((f"online ({result.final.step} env steps)", result.final))
    for name, evaluation in stages:
        score = evaluation.normalized_score
        print(f"{name:<28}{evaluation.return_mean:>10.1f}{(f'{score:.1f}' if score is not None else '-'):>20}")
    print(f"checkpoint: {result.checkpoint}")


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


def _datasets_list(args: argparse.Namespace) -> None:
    from zoo.data import local_dataset_ids, minari_root
    from zoo.datagen.d4rl import d4rl_dataset_ids

    ids = local_dataset_ids()
    print(f"Minari root: {minari_root()}")
    if not ids:
        print("no local datasets (make one with `zoo quickstart` or `zoo datasets make ID`)")
    for dataset_id in ids:
        print(_dataset_line(dataset_id))
    missing = [i for i in d4rl_dataset_ids() if i not in ids]
    if missing:
        print(f"\nnot built yet (`zoo datasets make ID`): {', '.join(missing)}")


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
    sub = parser.add_subparsers(dest="command", required=True)

    quick = sub.add_parser("quickstart", help="make the embedded Hopper dataset, train TD3+BC on it, report")
    quick.add_argument("--steps", type=int, default=None, help="gradient steps (default: zoo/hyperparams/td3bc.yml)")
    quick.add_argument("--dataset-steps", type=int, default=50_000, help="transitions in the dataset")
    quick.add_argument("--out", default="runs/quickstart")
    quick.add_argument("--seed", type=int, default=0)
    quick.add_argument("--device", default="auto")
    quick.set_defaults(func=_quickstart)

    train = sub.add_parser("train", help="train an agent offline on a local Minari dataset")
    train.add_argument("--algo", required=True)
    train.add_argument("--dataset", required=True)
    train.add_argument("--fraction", type=float, default=1.0)
    train.add_argument("--subset", choices=["transitions", "trajectories"], default="transitions")
    train.add_argument("--seed", type=int, default=0)
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
    train.add_argument("--out", default=None)
    train.set_defaults(func=_train)

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

    datasets = sub.add_parser("datasets", help="local datasets")
    datasets_sub = datasets.add_subparsers(dest="datasets_command", required=True)
    datasets_sub.add_parser("list", help="list local Minari datasets").set_defaults(func=_datasets_list)
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


def _export(args: argparse.Namespace) -> None:
    from zoo.checkpoint import read_checkpoint_config
    from zoo.hub import export_run

    out = export_run(args.run_dir, args.out, overwrite=args.overwrite)
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, FileExistsError) as error:
        print(f"zoo: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
