"""The efficiency table of the user's checkpoints: parameters, GFLOPs and throughput relative to the plain ResNet.

    python analyses/efficiency_table.py [--checkpoint a b c] [--batch-size 16 --repeats 5] --out tables/

Each model is measured at its checkpoint's input size on the CPU, in turns with the others;
throughput is relative to the plain ResNet of the same depth among the checkpoints (none: no
ratio). For architectures at ImageNet size without checkpoints, ``python -m emca_vis.profile``
does the same from model names. Writes ``efficiency.md``, ``efficiency.csv`` and ``efficiency.json``.
"""

from __future__ import annotations


from emca_vis.errors import run_cli
from emca_vis.inputs import load_models
from emca_vis.options import Parser, positive_int
from emca_vis.outputs import check_out, write_dict_csv, write_json, write_text
from emca_vis.report.models import efficiency


def main(argv: list[str] | None = None) -> int:
    parser = Parser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", nargs="+", help="checkpoints (default: the demo checkpoints)")
    parser.add_argument("--batch-size", type=positive_int, default=16)
    parser.add_argument("--repeats", type=positive_int, default=5, help="timed turns per model (median)")
    parser.add_argument("--out", default="runs/analyses", help="output folder")
    args = parser.parse_args(argv)
    out = check_out(args.out, folder=True, files=["efficiency.md", "efficiency.json", "efficiency.csv"])
    models = load_models(args.checkpoint)
    rows = efficiency(models, args.batch_size, args.repeats)
    table = [{"model": m.label, "input_size": m.input_size, **rows[m.label]} for m in models]
    lines = [f"CPU, batch {args.batch_size}, median of {args.repeats}",
             "| model | input (px) | params | GFLOPs | img/s | vs plain |", "|---|---:|---:|---:|---:|---:|"]
    for row in table:
        ratio = "-" if row["relative_throughput"] is None else f"{row['relative_throughput']:.3f}x"
        lines.append(f"| {row['model']} | {row['input_size']} | {row['params']:,} | {row['gflops']:.4g} | "
                     f"{row['throughput']:.1f} | {ratio} |")
    markdown = "\n".join(lines)
    out.mkdir(parents=True, exist_ok=True)
    write_text(out / "efficiency.md", markdown + "\n")
    write_json(out / "efficiency.json", {"batch_size": args.batch_size, "repeats": args.repeats, "models": table})
    write_dict_csv(out / "efficiency.csv", table)
    print(markdown)
    print(f"wrote {out / 'efficiency.md'}\nwrote {out / 'efficiency.csv'}\nwrote {out / 'efficiency.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
