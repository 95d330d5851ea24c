"""``python -m components.ingest_siim``: SIIM competition folder -> de-identified TFRecord shards.

A standalone command for :func:`bridging_tf.datasets.siim.prepare_siim` (the
pipeline's ``ingest`` component calls the same function through
``bridging_tf.datasets.get_preparer("siim")``). Prints the manifest counts;
a user error is one line on stderr and exit status 2.

Example::

    python -m components.ingest_siim --data_dir=/data/siim --output_dir=/data/siim_448 \\
        --image_size=448 --workers=8 --salt="$SECRET"
    python -m pipelines.run --dataset=siim --data_dir=/data/siim ...   # or let the pipeline ingest
"""

from __future__ import annotations

import dataclasses
import json
import sys

from absl import flags

from bridging_tf.errors import UserError
from bridging_tf.options import SiimPrepareOptions as _OPTS

_HELP = {f.name: f.metadata["help"] for f in dataclasses.fields(_OPTS)}

# A private flag registry: importing this module beside pipelines.run defines nothing global.
FLAGS = flags.FlagValues()
flags.DEFINE_string("data_dir", None, "Competition folder (CSVs + train/).", flag_values=FLAGS)
flags.DEFINE_string("output_dir", None, "Where the shards and manifest.json go.", flag_values=FLAGS)
flags.DEFINE_integer("image_size", _OPTS.image_size, _HELP["image_size"], flag_values=FLAGS)
flags.DEFINE_integer("bit_depth", _OPTS.bit_depth, _HELP["bit_depth"], flag_values=FLAGS)
flags.DEFINE_bool("voi", _OPTS.voi, _HELP["voi"], flag_values=FLAGS)
flags.DEFINE_integer("workers", 0, "Worker processes (0 = CPU count, at most 8; they exit "
                     "if this process dies).",
                     flag_values=FLAGS)
flags.DEFINE_integer("seed", _OPTS.seed, _HELP["seed"], flag_values=FLAGS)
flags.DEFINE_string("salt", None, "Study-hash key (default $BRIDGING_TF_SIIM_SALT, else random "
                    "and not stored).", flag_values=FLAGS)
flags.DEFINE_integer("examples_per_shard", _OPTS.examples_per_shard,
                     _HELP["examples_per_shard"], flag_values=FLAGS)


def main(argv=None) -> int:
    argv = list(sys.argv if argv is None else argv)
    if any(a in ("-h", "--help", "--helpshort", "--helpfull") for a in argv[1:]):
        print(__doc__)
        print(FLAGS.get_help())
        return 0
    FLAGS.unparse_flags()  # a second call in one process starts from the defaults again
    try:
        FLAGS(argv)
    except flags.Error as err:
        print(f"error: {' '.join(str(err).split())}", file=sys.stderr)
        return 2
    try:
        if not FLAGS.data_dir or not FLAGS.output_dir:
            raise UserError("--data_dir and --output_dir are required")
        from bridging_tf.datasets.siim import prepare_siim
        manifest = prepare_siim(FLAGS.data_dir, FLAGS.output_dir, image_size=FLAGS.image_size,
                                bit_depth=FLAGS.bit_depth, voi=FLAGS.voi,
                                workers=FLAGS.workers or None, seed=FLAGS.seed, salt=FLAGS.salt,
                                examples_per_shard=FLAGS.examples_per_shard)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"counts": manifest["counts"],
                      "unsupported_transfer_syntaxes": manifest["unsupported_transfer_syntaxes"],
                      "images_per_s": manifest["images_per_s"]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
