"""`dlstudy datasets`: every registered dataset, where it is looked for, whether it is there, classes, image size."""

from __future__ import annotations

import argparse

from dlstudy.data.registry import DATASETS, DatasetSpec, locate


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-root", default=None,
                        help="folder to look in instead of the defaults ($DLSTUDY_DATA, ./data, <cache>/data)")
    parser.add_argument("--paths", action="store_true", help="also list every path searched for each dataset")


def _shape(spec: DatasetSpec) -> str:
    if spec.image_shape is None:
        return "first image / data.image_size"
    c, h, w = spec.image_shape
    return f"{h}x{w}x{c}"


def rows(data_root: str | None) -> list[dict]:
    """One dict per registered dataset: name, found, location, classes, image size, test split, description."""
    out = []
    for spec in DATASETS.values():
        found, searched = locate(spec, data_root)
        where = str(found) if found else (f"not in {searched[0]}" + (f" or {len(searched) - 1} more" if len(searched) > 1 else "") if searched
                                          else "needs --data-root")
        out.append({"dataset": spec.name, "found": "yes" if found else "no", "location": where,
                    "classes": str(spec.num_classes or "from folders"), "image (HxWxC)": _shape(spec),
                    "test split": "official" if spec.official_test else "held out", "searched": searched,
                    "description": spec.description})
    return out


def format_table(table: list[dict], columns: list[str]) -> str:
    widths = {c: max(len(c), *(len(r[c]) for r in table)) for c in columns}
    lines = ["  ".join(c.ljust(widths[c]) for c in columns), "  ".join("-" * widths[c] for c in columns)]
    lines += ["  ".join(r[c].ljust(widths[c]) for c in columns) for r in table]
    return "\n".join(line.rstrip() for line in lines)


def run(args: argparse.Namespace) -> int:
    table = rows(args.data_root)
    print(format_table(table, ["dataset", "found", "classes", "image (HxWxC)", "test split", "location"]))
    print()
    for r in table:
        print(f"{r['dataset']}: {r['description']}")
        if args.paths:
            print("".join(f"    searched {p}\n" for p in r["searched"]) or "    (needs --data-root)\n", end="")
    if not args.paths:
        print("\n(--paths lists every place searched; `--data-root DIR` or $DLSTUDY_DATA adds your own)")
    return 0
