"""``--resume-flag``: the template that says how the job is told where to resume from.

Scripts take a checkpoint in three shapes, and the template names the shape:

- ``--resume-from`` (no ``=``, no ``{path}``): the flag, then the path, as two arguments
  (argparse's ``--resume PATH``; the default, and what every earlier version did);
- ``--resume={path}``: one argument, the path put in place of ``{path}`` (``--key=value``
  parsers, Hydra overrides);
- ``--init_from=resume`` (an ``=``, no ``{path}``): one argument as written, the path not
  passed: the script finds its own file (nanoGPT reads ``out_dir/ckpt.pt``);
- ``''``: nothing; the job reads ``RUNAI_ENTRY_RESUME_FROM`` instead.

``{{`` and ``}}`` stand for a literal brace. The template is checked once, at start-up
(:func:`check`), so that a typo fails the first start rather than the first resume, which
comes only after the first preemption. Imports nothing: options.py parses with it at start-up.
"""

from __future__ import annotations

PLACEHOLDER = "{path}"


def _pieces(template: str) -> tuple[list[str], int]:
    """The template's literal text between placeholders, and how many placeholders; raises
    ValueError naming the first brace that is neither ``{path}``, ``{{`` nor ``}}``."""
    pieces, current, i = [], [], 0
    while i < len(template):
        char = template[i]
        if template.startswith(("{{", "}}"), i):
            current.append(char)
            i += 2
        elif template.startswith(PLACEHOLDER, i):
            pieces.append("".join(current))
            current = []
            i += len(PLACEHOLDER)
        elif char == "{":
            end = template.find("}", i)
            if end < 0:
                raise ValueError(f"{template!r}: an unclosed '{{' (the placeholder is "
                                 f"{PLACEHOLDER}; '{{{{' is a literal brace)")
            raise ValueError(f"{template!r}: unknown placeholder {template[i:end + 1]!r} "
                             f"(the only one is {PLACEHOLDER})")
        elif char == "}":
            raise ValueError(f"{template!r}: a '}}' without its '{{' ('}}}}' is a literal "
                             "brace)")
        else:
            current.append(char)
            i += 1
    pieces.append("".join(current))
    return pieces, len(pieces) - 1


def check(template: str) -> str:
    """The template, unchanged, when it can produce the arguments a script expects; else
    ValueError with what is wrong and what was probably meant."""
    _, placeholders = _pieces(template)
    if any(c.isspace() for c in template):
        raise ValueError(f"{template!r} contains whitespace, and would reach the job as one "
                         "argument with it; for a flag then the path, give the flag alone "
                         "(--resume); for one argument, --resume={path}")
    if not placeholders and template.endswith("="):
        raise ValueError(f"{template!r} ends in '=' and would reach the job with an empty "
                         f"value; write {template}{PLACEHOLDER} to pass the path in it")
    return template


def resume_args(template: str, path: str) -> list[str]:
    """What the job's argv gets for a resume from ``path``: the one place the template is
    applied (the start, and ``--inspect``'s "the command gets")."""
    if not template:
        return []
    pieces, placeholders = _pieces(template)
    if placeholders:
        return [path.join(pieces)]
    if "=" in template:
        return ["".join(pieces)]
    return ["".join(pieces), path]
