"""``python -m pipelines.attack_served``: attack an encoder you only reach over TF Serving.

Builds the dataset's attacker/eval splits locally, sends their raw uint8
images to the served model (REST ``http://`` or gRPC ``grpc://``), and runs
the attack suite on the embeddings that come back — the "external attack":
the attacker never holds the weights. The linear probe is run with both
attacker protocols (``sound`` and ``paper``) where the dataset has both, as
the in-process attack step does.

Reproduce a training run's in-process private accuracy from its folder alone::

    python -m pipelines.attack_served --url=http://localhost:8501 --from_run=runs/x

``--from_run`` takes the dataset and its options (data folder, split sizes,
rho, seed, protocol) from ``RUN_DIR/data/dataset.json`` (else from the
``flags`` of ``RUN_DIR/run_metadata.json``), the attacks and seed from
``run_metadata.json`` and the model name from ``RUN_DIR/serving/serving.json``,
and prints the served numbers beside the run's. Only ``--data_dir`` (where
the run's data folder is now), ``--attacks``, ``--model_name`` / ``--version``
and the transport flags may be added.

Without a run folder, give the dataset flags yourself::

    python -m pipelines.attack_served --url=http://localhost:8501 \\
        --model_name=biased_mnist_end --dataset=biased_mnist \\
        --data_dir=../shared/data/mnist --train_size=10000 --output_dir=runs/served_attack
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from absl import flags

from pipelines._cli import parse_flags
from pipelines._quiet import import_tensorflow_quietly

# TF's C++ start-up lines stay off stderr: user errors are one line there.
import_tensorflow_quietly()

from bridging_tf.errors import UserError  # noqa: E402
from bridging_tf.options import DataOptions as D  # noqa: E402
from bridging_tf.options import RunOptions as R  # noqa: E402

PROTOCOLS = ("sound", "paper")
# Flags that --from_run reads from the run (giving them as well would break the reproduction).
RUN_FLAGS = ("dataset", "rho", "seed", "train_size", "val_size", "test_size", "attack_size",
             "image_size", "target", "private", "split", "attack_protocol")

FV = flags.FlagValues()
flags.DEFINE_string("url", None, "http://host:port (REST) or grpc://host:port; may include "
                    "/v1/models/NAME[/versions/N]", flag_values=FV)
flags.DEFINE_string("from_run", None, "A pipelines.run output folder: take the dataset, its "
                    "options, split sizes, protocol, seed, attacks and model name from it.",
                    flag_values=FV)
flags.DEFINE_string("model_name", None, "Served model name.", flag_values=FV)
flags.DEFINE_integer("version", None, "Model version (default: latest).", lower_bound=0,
                     flag_values=FV)
flags.DEFINE_string("signature", "serving_default", "Signature to call.", flag_values=FV)
flags.DEFINE_string("dataset", "biased_mnist", "Dataset whose splits are attacked.", flag_values=FV)
flags.DEFINE_string("data_dir", None, "Dataset folder (with --from_run: where the run's data "
                    "folder is now, if it moved).", flag_values=FV)
flags.DEFINE_float("rho", 0.997, "Biased-MNIST training rho (decides the splits).", flag_values=FV)
flags.DEFINE_integer("seed", 0, "Seed (data splits and attacker).", flag_values=FV)
for _name in ("train_size", "val_size", "test_size", "attack_size", "image_size"):
    flags.DEFINE_integer(_name, None, f"Dataset option {_name}.", flag_values=FV)
for _name in ("target", "private", "split"):
    flags.DEFINE_string(_name, None, f"Dataset option {_name}.", flag_values=FV)
flags.DEFINE_enum("attack_protocol", "sound", PROTOCOLS, "The main attacker protocol (the "
                  "linear probe also runs with the other one).", flag_values=FV)
flags.DEFINE_string("attacks", None, "Comma list: linear[,mlp,decoder] (default: the run's, "
                    "else linear).", flag_values=FV)
flags.DEFINE_string("output_dir", None, "Save the attack results here.", flag_values=FV)
flags.DEFINE_integer("request_batch", 256, "Images per request.", lower_bound=1, flag_values=FV)
flags.DEFINE_float("timeout", 30.0, "Total seconds per request (connect, send, whole answer).",
                   flag_values=FV)
flags.DEFINE_integer("retries", 3, "Retries of a failed request (with backoff).", lower_bound=0,
                     flag_values=FV)
flags.DEFINE_integer("verbose", 1, "Keras verbosity.", flag_values=FV)


class _Fetcher:
    """``get(split) -> (embeddings over the wire, private labels)``, each split fetched once."""

    def __init__(self, client, bundle):
        self.client, self.bundle, self.cache = client, bundle, {}

    def __call__(self, name):
        from components.attack import split_images
        if name not in self.cache:
            split = self.bundle[name]
            t = time.time()
            z = self.client.embed(split_images(split))
            print(f"[attack_served] {name}: {z.shape[0]} embeddings over the wire "
                  f"({time.time() - t:.1f}s)", flush=True)
            self.cache[name] = (z, split.private())
        return self.cache[name]


def _common(bundle) -> dict:
    primary = bundle.primary_eval
    return dict(eval_splits=[primary] + [s for s in bundle.eval_splits if s != primary],
                num_private=bundle.num_private, private_names=bundle.private_names,
                val="attack_val" if "attack_val" in bundle.splits else None)


def served_attack(client, bundle, *, attacks=("linear",), protocol=D.attack_protocol,
                  seed=D.seed, verbose=R.verbose, fetch=None, **options):
    """Run the attack suite on embeddings fetched from ``client`` for ``bundle``'s splits."""
    from bridging_tf.attacks import run_attacks
    from components.attack import make_input, split_images

    fetch = fetch or _Fetcher(client, bundle)
    train = f"attack_train_{protocol}" if f"attack_train_{protocol}" in bundle.splits \
        else "attack_train"
    images = (lambda s: split_images(bundle[s])) if "decoder" in attacks else None
    data = make_input(fetch, train=train, images=images, **_common(bundle))
    return run_attacks(data, list(attacks), seed=seed, verbose=verbose, **options)


def served_attacks(client, bundle, *, attacks=("linear",), protocol=D.attack_protocol,
                   seed=D.seed, verbose=R.verbose, compare_protocols=True):
    """What the in-process ``attack`` step computes, on served embeddings.

    Returns ``(main results, {other protocol: linear-probe results}, metrics)``; the
    metrics hold ``private_accuracy_<protocol>`` for every protocol run.
    """
    import numpy as np

    from bridging_tf.attacks import run_attacks
    from components.attack import headline, make_input

    if protocol not in PROTOCOLS:
        raise UserError(f"--attack_protocol={protocol!r}: choose one of {', '.join(PROTOCOLS)}")
    fetch = _Fetcher(client, bundle)
    opts = {}
    if "decoder" in attacks and bundle.metadata.get("colour_map") is not None:
        opts["palette"] = np.asarray(bundle.metadata["colour_map"], np.uint8)
    results = served_attack(client, bundle, attacks=attacks, protocol=protocol, seed=seed,
                            verbose=verbose, fetch=fetch, **opts)
    primary = bundle.primary_eval
    metrics = headline(results, primary)
    metrics[f"private_accuracy_{protocol}"] = metrics.get("private_accuracy")
    others = {}
    if compare_protocols:
        for other in PROTOCOLS:
            name = f"attack_train_{other}"
            if other == protocol or name not in bundle.splits:
                continue
            others[other] = run_attacks(make_input(fetch, train=name, **_common(bundle)),
                                        ["linear"], seed=seed, verbose=verbose)
            metrics[f"private_accuracy_{other}"] = headline(others[other],
                                                            primary)["private_accuracy"]
    return results, others, {k: v for k, v in metrics.items() if v is not None}


def _read_json(path: Path):
    if not path.is_file():
        return None
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"--from_run: {path} is not readable JSON ({err})") from None
    if not isinstance(obj, dict):
        raise UserError(f"--from_run: {path} is not a JSON object")
    return obj


def read_run(run_dir) -> dict:
    """The recorded configuration of a ``pipelines.run`` folder (see module doc).

    Returns ``dataset``, ``options`` (the loader's keyword arguments, exactly as
    the run's ingest step recorded them), ``attacks``, ``protocol``, ``seed``,
    ``model_name`` and ``inprocess`` (the run's private accuracy per protocol).
    """
    run = Path(run_dir).expanduser()
    if not run.is_dir():
        raise UserError(f"--from_run={run_dir}: no such folder")
    meta = _read_json(run / "run_metadata.json") or {}
    run_flags = meta.get("flags") or {}
    artifacts = meta.get("artifacts") or {}
    if not isinstance(run_flags, dict) or not isinstance(artifacts, dict):
        raise UserError(f"--from_run: {run / 'run_metadata.json'} has no 'flags' object")

    def artifact(name: str) -> Path:
        local = run / name
        if local.is_dir() or not artifacts.get(name):
            return local
        return Path(artifacts[name])  # e.g. a kfp-local run keeps them elsewhere

    spec = _read_json(artifact("data") / "dataset.json")
    if spec is None and not run_flags:
        raise UserError(f"--from_run={run_dir}: neither run_metadata.json nor "
                        "data/dataset.json is there (not a pipelines.run folder, or its "
                        "ingest step never finished)")
    if spec is not None:
        dataset, options = spec.get("name"), spec.get("options")
        if not isinstance(options, dict):
            raise UserError(f"--from_run: {artifact('data') / 'dataset.json'} has no 'options'")
        options = dict(options)
        moved = artifact("data") / "data"
        if spec.get("prepared") and moved.is_dir() and not Path(
                str(options.get("data_dir") or "")).is_dir():
            options["data_dir"] = str(moved.resolve())  # the run folder was moved
    else:
        from pipelines.pipeline import dataset_options
        dataset, options = run_flags.get("dataset"), dataset_options(run_flags)
    if not isinstance(dataset, str) or not dataset:
        raise UserError(f"--from_run={run_dir}: the run records no dataset name")
    serving = _read_json(artifact("serving") / "serving.json") or {}
    method = run_flags.get("method")
    model_name = (serving.get("model_name") or run_flags.get("model_name")
                  or (f"{dataset}_{method}" if method else None))
    attacks = run_flags.get("attacks") or "linear"
    if isinstance(attacks, str):
        attacks = [a.strip() for a in attacks.split(",") if a.strip()]
    protocol = options.get("attack_protocol") or run_flags.get("attack_protocol") or "sound"
    seed = run_flags.get("seed", options.get("seed", 0))
    results = _read_json(run / "results.json") or {}
    inprocess = results.get("private_accuracy_by_protocol") or (
        {protocol: results["private_accuracy"]} if results.get("private_accuracy") is not None
        else {})
    return {"dir": run, "dataset": dataset, "options": options, "attacks": list(attacks),
            "protocol": protocol, "seed": int(seed), "model_name": model_name,
            "inprocess": inprocess}


def _job_from_flags() -> dict:
    opts = {k: FV[k].value for k in ("data_dir", "rho", "seed", "train_size", "val_size",
                                     "test_size", "attack_size", "image_size", "target",
                                     "private", "split", "attack_protocol")
            if FV[k].value is not None}
    return {"dataset": FV.dataset, "options": opts, "attacks": ["linear"],
            "protocol": FV.attack_protocol, "seed": FV.seed, "model_name": None,
            "inprocess": {}}


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    FV.unparse_flags()  # a second main() in one process starts from the defaults
    status = parse_flags(FV, argv)
    if status is not None:
        return status
    try:
        from bridging_tf import datasets
        from bridging_tf.attacks import AttackType
        from bridging_tf.serving import make_client
        from components.base import write_json

        if not FV.url:
            raise UserError("--url is required (http://host:port or grpc://host:port)")
        if FV.from_run:
            given = [f"--{n}" for n in RUN_FLAGS if FV[n].present]
            if given:
                raise UserError(f"--from_run takes {', '.join(given)} from the run's recorded "
                                "configuration; drop them (or drop --from_run)")
            job = read_run(FV.from_run)
            if FV.data_dir:
                job["options"]["data_dir"] = str(Path(FV.data_dir).expanduser().resolve())
            data_dir = job["options"].get("data_dir")
            if data_dir and not Path(data_dir).exists():
                raise UserError(f"--from_run: the run's data folder {data_dir} is gone; pass "
                                "--data_dir=WHERE_IT_IS_NOW")
        else:
            job = _job_from_flags()
            if FV.data_dir and not Path(FV.data_dir).exists():
                raise UserError(f"--data_dir={FV.data_dir}: no such folder")
        if FV.attacks is not None:
            job["attacks"] = [a.strip() for a in FV.attacks.split(",") if a.strip()]
        attacks = [AttackType.parse(a).value for a in job["attacks"]]
        if not attacks:
            raise UserError("--attacks is empty; choose from linear, mlp, decoder")
        datasets.get_loader(job["dataset"])  # an unknown name fails before any request
        client = make_client(FV.url, FV.model_name, fallback_name=job["model_name"],
                             version=FV.version, signature_name=FV.signature,
                             batch_size=FV.request_batch, timeout=FV.timeout,
                             retries=FV.retries)
        if hasattr(client, "status"):
            client.status()  # fail fast when the server is down or the model unknown
        bundle = datasets.load(job["dataset"], **job["options"])
        results, others, metrics = served_attacks(
            client, bundle, attacks=attacks, protocol=job["protocol"], seed=job["seed"],
            verbose=FV.verbose)
        summary = {"url": FV.url, "model_name": client.model_name, "dataset": job["dataset"],
                   "attack_protocol": job["protocol"], "seed": job["seed"],
                   "from_run": str(job["dir"]) if FV.from_run else None, **metrics}
        inprocess = job["inprocess"]
        for p in PROTOCOLS:
            served = metrics.get(f"private_accuracy_{p}")
            if served is None:
                continue
            line = (f"[attack_served] private accuracy, linear probe (the paper's attacker), "
                    f"{p} protocol: {served:.4f}")
            if p in inprocess:
                line += f" (in-process run: {inprocess[p]:.4f})"
                summary[f"inprocess_private_accuracy_{p}"] = inprocess[p]
            print(line, flush=True)
        if FV.output_dir:
            out = Path(FV.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            results.save(out / "attack")
            for p, r in others.items():
                r.save(out / f"protocol_{p}")
            write_json(out / "served_attack.json", summary)
            print(f"results: {out / 'served_attack.json'}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except OSError as err:  # e.g. --output_dir not writable
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    print(json.dumps({k: summary[k] for k in summary
                      if k.startswith(("private_", "inprocess_private_"))}))
    return 0


def entry_point() -> None:
    """Console script ``bridging-tf-attack-served``."""
    sys.exit(main())


if __name__ == "__main__":
    entry_point()
