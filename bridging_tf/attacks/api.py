"""``run_attacks``: fit the requested attackers and evaluate them on every eval split."""

from __future__ import annotations

import time
from typing import Iterable, Optional

import numpy as np

from bridging_tf.attacks.data import AttackInputData, AttackType
from bridging_tf.attacks.gaussian import gaussian_pc_view
from bridging_tf.attacks.metrics import classification_metrics
from bridging_tf.attacks.results import AttackResult, AttackResults
from bridging_tf.errors import UserError

DEFAULT_OPTIONS = {
    # The paper's linear probe (METHODS.md §7.4).
    "linear_epochs": 50, "linear_lr": 0.01, "linear_batch_size": 256,
    "linear_step_size": 20, "linear_gamma": 0.1,
    # MLP probe.
    "mlp_hidden": (256, 256), "mlp_lr": 1e-3, "mlp_batch_size": 256,
    "mlp_max_epochs": 200, "mlp_patience": 10, "mlp_val_fraction": 0.2,
    # Decoder (unverified design, see bridging_tf.attacks.decoder).
    "decoder_epochs": 10, "decoder_batch_size": 128, "decoder_lr": 1e-3,
    "decoder_channels": 64, "decoder_samples": 16,
    # Colour palette for reading the background colour back (Biased-MNIST: COLOUR_MAP).
    "palette": None,
    # PCA / Gaussian view on the primary split (cheap, always on by default).
    "pca_view": True,
    # Keep per-example predictions/probabilities in the saved arrays.
    "save_predictions": True,
}


def run_attacks(data: AttackInputData,
                attack_types: Iterable = (AttackType.LINEAR,),
                seed: int = 0, verbose: int = 1, protocol: Optional[str] = None,
                attacker_set: Optional[str] = None, **options) -> AttackResults:
    """Train each requested attacker on ``data.train_*`` and report every eval split.

    Options (defaults in ``DEFAULT_OPTIONS``): ``linear_*`` (the paper's probe:
    epochs 50, lr 0.01, batch 256, StepLR 20/0.1), ``mlp_*`` (hidden sizes,
    lr, batch, max epochs, patience, validation fraction when no ``val_*``),
    ``decoder_*`` (epochs, batch, lr, channels, number of sample
    reconstructions kept), ``palette`` (``[K, 3]`` uint8 colours, enables the
    colour-from-reconstruction metric), ``pca_view``, ``save_predictions``.

    ``protocol`` (``"sound"`` / ``"paper"``) and ``attacker_set`` (how the
    attacker's training split was drawn, e.g. ``"independent ρ=0.1 attacker
    set"``) are only recorded in ``info`` and named in :meth:`AttackResults.summary`.

    Example::

        results = run_attacks(data, [AttackType.LINEAR, AttackType.MLP], seed=0)
        results.get(AttackType.LINEAR).per_split["unbiased"]["accuracy"]
    """
    if not isinstance(data, AttackInputData):
        raise TypeError(f"run_attacks needs an AttackInputData, got {type(data).__name__}")
    unknown = sorted(set(options) - set(DEFAULT_OPTIONS))
    if unknown:
        raise UserError(f"unknown attack option(s) {', '.join(unknown)}; known: "
                        f"{', '.join(sorted(DEFAULT_OPTIONS))}")
    opts = {**DEFAULT_OPTIONS, **options}
    types = []
    for t in ([attack_types] if isinstance(attack_types, (str, AttackType)) else attack_types):
        t = AttackType.parse(t)
        if t not in types:
            types.append(t)
    if not types:
        raise UserError("no attack requested; choose from linear, mlp, decoder")

    results = {}
    for t in types:
        start = time.time()
        if t is AttackType.LINEAR:
            r = _run_linear(data, opts, seed, verbose)
        elif t is AttackType.MLP:
            r = _run_mlp(data, opts, seed, verbose)
        else:
            r = _run_decoder(data, opts, seed, verbose)
        r.wall_time_s = time.time() - start
        results[t] = r
    views = {}
    primary = data.splits[0]
    if opts["pca_view"] and len(data.eval_embeddings[primary]) >= 2:
        views[primary] = gaussian_pc_view(data.eval_embeddings[primary],
                                          data.eval_private[primary], data.private_names)
    info = {"seed": int(seed), "primary_split": primary, "data": data.describe(),
            "private_names": list(data.private_names) if data.private_names else None}
    if protocol:
        info["protocol"] = str(protocol)
    if attacker_set:
        info["attacker_set"] = str(attacker_set)
    out = AttackResults(results, views, info)
    if verbose:
        print(out.summary())
    return out


def _probe_result(t, probe, data, config, history, opts, extra_arrays=None) -> AttackResult:
    per_split, arrays = {}, dict(extra_arrays or {})
    for split in data.splits:
        probs = probe.predict_proba(data.eval_embeddings[split])
        per_split[split] = classification_metrics(data.eval_private[split], probs,
                                                  data.num_private)
        if opts["save_predictions"]:
            arrays[f"probs:{split}"] = probs.astype(np.float16)
            arrays[f"private:{split}"] = data.eval_private[split]
    train = classification_metrics(data.train_private, probe.predict_proba(data.train_embeddings),
                                   data.num_private)
    return AttackResult(t, per_split, train, config, history, arrays)


def _run_linear(data, opts, seed, verbose) -> AttackResult:
    from bridging_tf.attacks.probes import train_linear_probe

    cfg = {"epochs": int(opts["linear_epochs"]), "lr": float(opts["linear_lr"]),
           "batch_size": int(opts["linear_batch_size"]),
           "step_size": int(opts["linear_step_size"]), "gamma": float(opts["linear_gamma"])}
    probe = train_linear_probe(data.train_embeddings, data.train_private, data.num_private,
                               seed=seed, verbose=verbose, **cfg)
    cfg.update(optimizer="SGD (no momentum, no weight decay)", schedule="StepLR per epoch",
               reference="METHODS.md §7.4")
    return _probe_result(AttackType.LINEAR, probe, data, cfg, probe.history, opts,
                         {"kernel": probe.kernel, "bias": probe.bias})


def _run_mlp(data, opts, seed, verbose) -> AttackResult:
    from bridging_tf.attacks.probes import train_mlp_probe

    cfg = {"hidden": [int(h) for h in opts["mlp_hidden"]], "lr": float(opts["mlp_lr"]),
           "batch_size": int(opts["mlp_batch_size"]), "max_epochs": int(opts["mlp_max_epochs"]),
           "patience": int(opts["mlp_patience"]), "val_fraction": float(opts["mlp_val_fraction"])}
    probe = train_mlp_probe(data.train_embeddings, data.train_private, data.num_private,
                            x_val=data.val_embeddings, y_val=data.val_private, seed=seed,
                            verbose=verbose, **cfg)
    cfg.update(best_epoch=probe.best_epoch, optimizer="Adam",
               validation="val split" if data.val_embeddings is not None
               else f"{cfg['val_fraction']:.0%} of train (stratified)")
    return _probe_result(AttackType.MLP, probe, data, cfg, probe.history, opts)


def _run_decoder(data, opts, seed, verbose) -> AttackResult:
    from bridging_tf.attacks import decoder as dec

    if data.train_images is None or not data.eval_images:
        raise UserError("the decoder attack needs train_images and eval_images "
                        "(uint8 [N, H, W, C]) in AttackInputData")
    palette = opts["palette"]
    if palette is not None:
        palette = np.asarray(palette)
        if palette.ndim != 2 or palette.shape[0] < data.num_private:
            raise UserError(f"palette must be [K >= num_private, C], got shape {palette.shape}")
        if palette.shape[1] != data.train_images.shape[-1]:
            raise UserError(f"palette has {palette.shape[1]} channels, images have "
                            f"{data.train_images.shape[-1]}")
    cfg = {"epochs": int(opts["decoder_epochs"]), "batch_size": int(opts["decoder_batch_size"]),
           "lr": float(opts["decoder_lr"]), "base_channels": int(opts["decoder_channels"])}
    model = dec.train_decoder(data.train_embeddings, data.train_images, seed=seed,
                              verbose=verbose, **cfg)
    cfg.update(architecture="Dense -> reshape(H/4, W/4) -> 2x Conv2DTranspose(stride 2) -> "
                            "Conv2D sigmoid; MSE on [0,1]; Adam", verified=False,
               palette=None if palette is None else palette.tolist())
    mean_image = data.train_images.astype(np.float32).mean(axis=0) / 255.0
    per_split, arrays = {}, {}
    k = int(opts["decoder_samples"])
    for split, images in data.eval_images.items():
        recon = model.reconstruct(data.eval_embeddings[split])
        mse = dec.image_mse(recon, images)
        base = dec.image_mse(np.broadcast_to(mean_image, images.shape), images)
        m = {"mse": float(mse.mean()), "psnr": float(dec.psnr(mse).mean()),
             "baseline_mse": float(base.mean()), "baseline_psnr": float(dec.psnr(base).mean()),
             "n": int(len(images))}
        if palette is not None:
            private = data.eval_private[split]
            col = dec.colour_from_reconstruction(recon, images, palette, private)
            counts = np.bincount(private, minlength=data.num_private)
            m.update(colour_accuracy=col["colour_accuracy"],
                     colour_balanced_accuracy=col["colour_balanced_accuracy"],
                     colour_chance_uniform=1.0 / data.num_private,
                     colour_chance_majority=float(counts.max() / len(private)))
            arrays[f"colour_pred:{split}"] = col["predicted"]
        per_split[split] = m
        if k > 0:
            arrays[f"images:{split}"] = images[:k]
            arrays[f"recon:{split}"] = np.round(recon[:k] * 255.0).astype(np.uint8)
            arrays[f"private:{split}"] = data.eval_private[split][:k]
    train_recon = model.reconstruct(data.train_embeddings[:2048])
    train = {"mse": float(dec.image_mse(train_recon, data.train_images[:2048]).mean())}
    return AttackResult(AttackType.DECODER, per_split, train, cfg, model.history, arrays)
