"""The command line from the option schema (:mod:`bridging_tf.options`): absl flags, parsing.

:func:`define_flags` defines one flag per schema field (``DEFINE_enum`` with its choices,
``DEFINE_integer`` / ``DEFINE_float`` with its bounds, ``DEFINE_bool``, ``DEFINE_string``);
:func:`explicit_values` reads back the flags a user set; :func:`parse_flags` parses argv
and turns a bad value into the schema's one-line error.
"""

from __future__ import annotations

import re
import sys
from typing import Iterable, Optional

from absl import flags

from bridging_tf import options
from bridging_tf.errors import UserError


def define_flags(flag_values, module_name: str, skip: Iterable[str] = ()) -> list:
    """One flag per option and method hyper-parameter, defaults from the schema; the names."""
    skip, names, module_name = set(skip), [], _module(module_name)
    for name, f in options.all_fields().items():
        if name in skip:
            continue
        m, kw = f.metadata, {"flag_values": flag_values, "module_name": module_name}
        kind, help_text = m["kind"], m["help"]
        if kind == "enum":
            flags.DEFINE_enum(name, f.default, options.choices_of(f), help_text, **kw)
        elif kind == "bool":
            flags.DEFINE_bool(name, f.default, help_text, **kw)
        elif kind in ("int", "float"):
            define = flags.DEFINE_integer if kind == "int" else flags.DEFINE_float
            define(name, f.default, help_text, lower_bound=m.get("lower"),
                   upper_bound=m.get("upper"), **kw)
        else:
            flags.DEFINE_string(name, f.default, help_text, **kw)
        names.append(name)
    return names


def _module(name: str) -> str:
    return sys.argv[0] if name == "__main__" else name  # how absl names the main module


def explicit_values(flag_values, names: Iterable[str]) -> dict:
    """``{name: value}`` of the flags set on the command line (presets fill the rest)."""
    return {n: flag_values[n].value for n in names if flag_values[n].present}


def print_help(flag_values, argv, doc: str, module_name: str) -> bool:
    """``--help``: the doc and this command's flags; ``--helpfull``: every flag. Was it asked?"""
    asked = [a for a in argv[1:] if a in ("-h", "--help", "--helpshort", "--helpfull")]
    if not asked:
        return False
    print(doc)
    print(flag_values.get_help() if "--helpfull" in asked else
          flag_values.module_help(_module(module_name)))
    return True


def _explain(err: flags.Error) -> str:
    """The schema's message for a value absl refused (``flag --rho=2: ...`` -> ``--rho=2.0 is
    outside [0, 1]``); absl's own for anything else."""
    text = str(err)
    if isinstance(err, flags.UnrecognizedFlagError):
        return f"--{err.flagname} is not a flag of this command ({' '.join(text.split())})"
    match = re.match(r"flag --(\w+)=", text)
    cause = err.__context__
    if match and cause is not None and text.endswith(f": {cause}"):
        name, value = match.group(1), text[match.end():-len(f": {cause}")]
        try:
            options.check_value(name, value)
        except KeyError:
            pass
        except UserError as schema_err:
            return str(schema_err)
    return " ".join(text.split())


def parse_flags(flag_values, argv) -> Optional[int]:
    """Parse ``argv`` into ``flag_values``; on a user error print one line and return 2.

    Returns ``None`` when parsing succeeded (the caller goes on).
    """
    try:
        rest = flag_values(list(argv))
    except flags.Error as err:
        print(f"error: {_explain(err)}", file=sys.stderr)
        return 2
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if len(rest) > 1:
        print(f"error: unexpected argument(s) {' '.join(rest[1:])}; flags look like --name=value",
              file=sys.stderr)
        return 2
    return None
