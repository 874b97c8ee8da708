"""Print the requirements of pyproject.toml extras, one per line, for an image's dependency layer.

    python3 requirements.py PYPROJECT [--core] EXTRA...

Installing an image's dependencies from this list (with constraints.txt) before the project's
source is copied keeps the big layers cached while the code changes; pyproject.toml stays the one
place that says what each image needs. `--core` adds the operator's own dependencies.
"""

import re
import sys
import tomllib


def requirements(pyproject: dict, extras: list[str], core: bool) -> list[str]:
    project = pyproject["project"]
    name = project["name"]
    optional = project.get("optional-dependencies", {})
    out: list[str] = list(project.get("dependencies", [])) if core else []
    todo, seen = list(extras), set()
    while todo:
        extra = todo.pop(0)
        if extra in seen:
            continue
        if extra not in optional:
            raise SystemExit(f"pyproject.toml has no extra {extra!r} (it has: {', '.join(optional)})")
        seen.add(extra)
        for requirement in optional[extra]:
            own = re.fullmatch(rf"{re.escape(name)}\[([^\]]+)\]", requirement.replace(" ", ""))
            if own:
                todo += own.group(1).split(",")
            elif requirement not in out:
                out.append(requirement)
    return out


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    path, rest = argv[0], argv[1:]
    core = "--core" in rest
    with open(path, "rb") as handle:
        print("\n".join(requirements(tomllib.load(handle), [a for a in rest if a != "--core"], core)))


if __name__ == "__main__":
    main(sys.argv[1:])
