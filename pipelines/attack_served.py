"""``python -m pipelines.attack_served``: attack an encoder you only reach over TF Serving.

Builds the dataset's attacker/eval splits locally, sends their raw uint8
images to the served model (REST ``http://`` or gRPC ``grpc://``), and runs
the attack suite on the embeddings that come back — the "external attack":
the attacker never holds the weights.

Example::

    python -m pipelines.attack_served --url=http://localhost:8501 \\
        --model_name=biased_mnist_end --dataset=biased_mnist \\
        --data_dir=../shared/data/mnist --output_dir=runs/served_attack

Use the same dataset flags (seed, sizes, protocol) as the training run to
reproduce its in-process private accuracy.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from absl import flags

from pipelines._cli import parse_flags
from pipelines._quiet import import_tensorflow_quietly

# TF's C++ start-up lines stay off stderr: user errors are one line there.
import_tensorflow_quietly()

from bridging_tf.errors import UserError  # noqa: E402

FV = flags.FlagValues()
flags.DEFINE_string("url", None, "http://host:port (REST) or grpc://host:port; may include "
                    "/v1/models/NAME[/versions/N]", flag_values=FV)
flags.DEFINE_string("model_name", None, "Served model name.", flag_values=FV)
flags.DEFINE_integer("version", None, "Model version (default: latest).", flag_values=FV)
flags.DEFINE_string("signature", "serving_default", "Signature to call.", flag_values=FV)
flags.DEFINE_string("dataset", "biased_mnist", "Dataset whose splits are attacked.", flag_values=FV)
flags.DEFINE_string("data_dir", None, "Dataset folder.", flag_values=FV)
flags.DEFINE_float("rho", 0.997, "Biased-MNIST training rho (decides the splits).", flag_values=FV)
flags.DEFINE_integer("seed", 0, "Seed (data splits and attacker).", flag_values=FV)
for _name in ("train_size", "val_size", "test_size", "attack_size", "image_size"):
    flags.DEFINE_integer(_name, None, f"Dataset option {_name}.", flag_values=FV)
for _name in ("target", "private", "split"):
    flags.DEFINE_string(_name, None, f"Dataset option {_name}.", flag_values=FV)
flags.DEFINE_string("attack_protocol", "sound", "sound | paper.", flag_values=FV)
flags.DEFINE_string("attacks", "linear", "Comma list: linear[,mlp,decoder].", flag_values=FV)
flags.DEFINE_string("output_dir", None, "Save the attack results here.", flag_values=FV)
flags.DEFINE_integer("request_batch", 256, "Images per request.", flag_values=FV)
flags.DEFINE_float("timeout", 30.0, "Seconds per request.", flag_values=FV)
flags.DEFINE_integer("retries", 3, "Retries of a failed request (with backoff).", flag_values=FV)
flags.DEFINE_integer("verbose", 1, "Keras verbosity.", flag_values=FV)


def served_attack(client, bundle, *, attacks=("linear",), protocol="sound", seed=0,
                  verbose=1, **options):
    """Run the attack suite on embeddings fetched from ``client`` for ``bundle``'s splits."""
    from bridging_tf.attacks import run_attacks
    from components.attack import make_input, split_images

    cache = {}

    def get(name):
        if name not in cache:
            split = bundle[name]
            t = time.time()
            z = client.embed(split_images(split))
            print(f"[attack_served] {name}: {z.shape[0]} embeddings over the wire "
                  f"({time.time() - t:.1f}s)", flush=True)
            cache[name] = (z, split.private())
        return cache[name]

    train = f"attack_train_{protocol}" if f"attack_train_{protocol}" in bundle.splits \
        else "attack_train"
    primary = bundle.primary_eval
    evals = [primary] + [s for s in bundle.eval_splits if s != primary]
    images = (lambda s: split_images(bundle[s])) if "decoder" in attacks else None
    data = make_input(get, train=train, eval_splits=evals, num_private=bundle.num_private,
                      private_names=bundle.private_names,
                      val="attack_val" if "attack_val" in bundle.splits else None, images=images)
    return run_attacks(data, list(attacks), seed=seed, verbose=verbose, **options)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    status = parse_flags(FV, argv)
    if status is not None:
        return status
    try:
        from bridging_tf import datasets
        from bridging_tf.serving import make_client
        from components.attack import headline
        from components.base import write_json

        if not FV.url:
            raise UserError("--url is required (http://host:port or grpc://host:port)")
        if FV.data_dir and not Path(FV.data_dir).exists():
            raise UserError(f"--data_dir={FV.data_dir}: no such folder")
        client = make_client(FV.url, FV.model_name, version=FV.version,
                             signature_name=FV.signature, batch_size=FV.request_batch,
                             timeout=FV.timeout, retries=FV.retries)
        if hasattr(client, "status"):
            client.status()  # fail fast when the server is down or the model unknown
        opts = {k: FV[k].value for k in ("data_dir", "rho", "seed", "train_size", "val_size",
                                          "test_size", "attack_size", "image_size", "target",
                                          "private", "split", "attack_protocol")
                if FV[k].value is not None}
        bundle = datasets.load(FV.dataset, **opts)
        attacks = [a.strip() for a in FV.attacks.split(",") if a.strip()]
        results = served_attack(client, bundle, attacks=attacks, protocol=FV.attack_protocol,
                                seed=FV.seed, verbose=FV.verbose)
        summary = {"url": FV.url, "model_name": client.model_name, "dataset": FV.dataset,
                   "attack_protocol": FV.attack_protocol, "seed": FV.seed,
                   **headline(results, bundle.primary_eval)}
        if FV.output_dir:
            out = Path(FV.output_dir)
            out.mkdir(parents=True, exist_ok=True)
            results.save(out / "attack")
            write_json(out / "served_attack.json", summary)
            print(f"results: {out / 'served_attack.json'}")
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    import json
    print(json.dumps({k: summary[k] for k in summary if k.startswith("private_")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
