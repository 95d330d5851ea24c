"""Option and data checks shared by the dataset loaders (one-line user errors).

- :func:`check_seed`: seeds are NumPy / Keras seeds, integers in ``[0, 2**32 - 1]``
  (``np.random.SeedSequence(-1)`` is a ``ValueError`` deep inside a loader otherwise);
- :func:`check_attack_size` / :func:`check_attack_split`: an attacker needs at
  least :data:`MIN_ATTACK_EXAMPLES` training examples and at least two private
  classes among them — fitted on one example it reported "100.0 %".

Example::

    seed = check_seed(flags_seed)                    # UserError for -1, 2**32, 1.5, "x"
    check_attack_size(attack_size)                   # UserError below 20
    check_attack_split(split.private(), "CelebA")    # DataError with a single private class
"""

from __future__ import annotations

import numpy as np

from bridging_tf.errors import DataError, UserError

#: Fewest attacker training examples ``--attack_size`` may ask for: 10 per class for a
#: binary private attribute. Below that a probe's accuracy says nothing.
MIN_ATTACK_EXAMPLES = 20
#: Largest seed: NumPy's legacy seeding (used by ``keras.utils.set_random_seed``) takes 32 bits.
MAX_SEED = 2 ** 32 - 1


def check_seed(seed, flag: str = "--seed") -> int:
    """``seed`` as an int in ``[0, MAX_SEED]``, else a one-line :class:`UserError`."""
    try:
        value = int(seed)
        if isinstance(seed, float) and value != seed:
            raise ValueError
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{flag}={seed!r} is not an integer") from None
    if not 0 <= value <= MAX_SEED:
        raise UserError(f"{flag}={seed} must be an integer in [0, {MAX_SEED}]")
    return value


def check_attack_size(attack_size, flag: str = "--attack_size") -> None:
    """``attack_size`` (when given) must be at least :data:`MIN_ATTACK_EXAMPLES`."""
    if attack_size is None:
        return
    try:
        n = int(attack_size)
    except (TypeError, ValueError):
        raise UserError(f"{flag}={attack_size!r} is not an integer") from None
    if n < MIN_ATTACK_EXAMPLES:
        raise UserError(f"{flag}={attack_size} is too small: an attacker needs at least "
                        f"{MIN_ATTACK_EXAMPLES} training examples (and two private classes "
                        f"among them)")


def check_attack_split(private, what: str) -> None:
    """The attacker's training set (its private labels ``private``) must hold two classes."""
    present = np.unique(np.asarray(private))
    if len(present) < 2:
        found = "no example" if not len(present) else f"only private class {int(present[0])}"
        raise DataError(f"the attacker set (attack_train) of {what} holds {found}; an attacker "
                        f"needs at least two private classes (raise --attack_size or use more "
                        f"data)")


__all__ = ["MAX_SEED", "MIN_ATTACK_EXAMPLES", "check_attack_size", "check_attack_split",
           "check_seed"]
