"""The robustness table: CE per corruption, mCE, relative mCE and mean corruption accuracy per model.

    python analyses/robustness_table.py [--checkpoint a b c] [--data shapes --n 500] --out tables/
    python analyses/robustness_table.py --from runs/robustness/results.json --out tables/

Runs ``emca_vis.robustness.evaluate`` (15 ImageNet-C corruptions x 5 severities by default;
CE relative to the plain ResNet among the checkpoints, else the first; ``--baseline alexnet``
on ImageNet), or reads its results JSON. Writes ``robustness.md`` (the table),
``robustness.json``/``.csv`` (every error), ``robustness_families.png`` (error vs severity
per corruption family) and ``mce.png``.
"""

from __future__ import annotations


from emca_vis.errors import run_cli
from emca_vis.inputs import load_models
from emca_vis.options import Parser, positive_int
from emca_vis.outputs import check_out, strict, write_json, write_text
from emca_vis.report.figures import mce_figure, severity_figure
from emca_vis.report.models import architecture
from emca_vis.robustness import IMAGENET_C, evaluate, markdown_table
from emca_vis.robustness.results import read_results


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help="checkpoints (default: the demo checkpoints)")
    parser.add_argument("--from", dest="source", help="results JSON of python -m emca_vis.robustness")
    parser.add_argument("--data", default="shapes")
    parser.add_argument("--split", default="test")
    parser.add_argument("--n", type=positive_int, default=100, help="images per corruption and severity")
    parser.add_argument("--corruptions", nargs="+", default=list(IMAGENET_C))
    parser.add_argument("--severities", nargs="+", type=int, default=[1, 2, 3, 4, 5])
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--baseline", help="'alexnet' or a checkpoint (default: the plain ResNet, else the first)")
    parser.add_argument("--out", default="runs/analyses", help="output folder")
    args = parser.parse_args(argv)
    out = check_out(args.out, folder=True, files=["robustness.json", "robustness.md"])
    out.mkdir(parents=True, exist_ok=True)
    if args.source:
        results = read_results(args.source)
        write_json(out / "robustness.json", results)
    else:
        baseline = args.baseline
        if baseline is None:
            models = load_models(args.checkpoint)
            plain = [m.label for m in models if architecture(m.meta)["attention"] is None]
            baseline = plain[0] if plain and not args.data.startswith("imagenet") else None
        results = evaluate(checkpoint=args.checkpoint, data=args.data, split=args.split, n=args.n,
                           corruptions=args.corruptions, severities=args.severities, backend=args.backend,
                           baseline=baseline, out=str(out / "robustness.json"), overwrite=True)
    table = markdown_table(results)  # a CE over a baseline without errors shows as nan
    write_text(out / "robustness.md", table + "\n")
    results = strict(results)
    figures = [severity_figure(results, out / "robustness_families.png"), mce_figure(results, out / "mce.png")]
    print(table)
    for path in [out / "robustness.md", out / "robustness.json", *filter(None, figures)]:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
