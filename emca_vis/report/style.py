"""The report's stylesheet: screen and print (A4 portrait, a page per section, no backgrounds).

A Python string rather than a .css file, so it ships with the package without package-data.
"""

CSS = """\
:root { --fg: #1b1b1b; --muted: #5b5b5b; --rule: #d4d4d4; --accent: #0072B2; --best: #e6f0f8; --wash: #f5f7f9; }
html { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; color: var(--fg); background: #fff; }
body { margin: 0; }
main { max-width: 1120px; margin: 0 auto; padding: 2rem 1.8rem 4rem; }
header { border-bottom: 3px solid var(--fg); padding-bottom: .8rem; margin-bottom: 1.2rem; }
h1 { font-size: 1.9rem; line-height: 1.2; margin: 0 0 .3rem; }
.subtitle { color: var(--muted); margin: 0; }
h2 { font-size: 1.4rem; margin: 2.6rem 0 .8rem; padding-bottom: .25rem; border-bottom: 1px solid var(--rule); }
h3 { font-size: 1.08rem; margin: 1.8rem 0 .5rem; }
p { margin: .5rem 0; max-width: 62rem; }
nav.toc { background: var(--wash); padding: .6rem 1rem; border-radius: 4px; margin: 1rem 0 1.4rem; font-size: .92rem; }
nav.toc ol { margin: .2rem 0; padding-left: 1.4rem; columns: 2; }
nav.toc a { color: var(--accent); text-decoration: none; }
.summary { background: var(--wash); border-left: 4px solid var(--accent); padding: .5rem 1.2rem .5rem 2.2rem; margin: .8rem 0; }
.summary li { margin: .35rem 0; max-width: 62rem; }
.table-figure { margin: 1.2rem 0 1.8rem; }
.table-figure figcaption { color: var(--fg); font-size: .9rem; margin: 0 0 .45rem; }
.table-wrap { overflow-x: auto; }
.table-wrap.wrap td { white-space: normal; overflow-wrap: anywhere; }
pre { background: var(--wash); padding: .6rem .8rem; border-radius: 4px; white-space: pre-wrap; overflow-wrap: anywhere; font-size: .85rem; }
table { border-collapse: collapse; font-size: .86rem; font-variant-numeric: tabular-nums; }
th, td { padding: .3rem .65rem; text-align: left; vertical-align: top; border-bottom: 1px solid var(--rule); white-space: nowrap; }
thead th { border-bottom: 1.5px solid var(--fg); font-weight: 600; vertical-align: bottom; }
thead tr:first-child th.group { text-align: center; color: var(--muted); font-weight: 600; border-bottom: 1px solid var(--rule); }
tbody th { font-weight: normal; }
tbody tr:last-child th, tbody tr:last-child td { border-bottom: 1.5px solid var(--fg); }
.num { text-align: right; }
td.best { background: var(--best); }
.ci { color: var(--muted); font-size: .86em; }
.table-note { color: var(--muted); font-size: .82rem; margin: .35rem 0 0; }
figure { margin: 1.2rem 0 2rem; }
figure img { display: block; max-width: 100%; height: auto; }
figcaption { color: var(--muted); font-size: .88rem; margin-top: .5rem; max-width: 62rem; }
figcaption b { color: var(--fg); }
code { font-family: ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; font-size: .9em; }
.notice { border-left: 4px solid #E69F00; background: #fdf6e9; padding: .5rem 1rem; }
.files li { margin: .15rem 0; }
footer { margin-top: 3rem; color: var(--muted); font-size: .82rem; border-top: 1px solid var(--rule); padding-top: .6rem; }
@media print {
  @page { size: A4; margin: 12mm 10mm; }
  html { font-size: 9.5pt; }
  main { max-width: none; padding: 0; }
  nav.toc { display: none; }
  h2 { break-before: page; break-after: avoid; margin-top: 0; }
  h3 { break-after: avoid; }
  #summary h2 { break-before: auto; margin-top: 1rem; }
  table, figure, .summary, .notice, pre { break-inside: avoid; }
  .table-wrap { overflow: visible; }
  table { font-size: 7pt; }
  th, td { padding: 1.4pt 3pt; }
  td.best { background: none; }
  .ci { font-size: 6.6pt; }
  a { color: inherit; text-decoration: none; }
  figure img { max-height: 255mm; object-fit: contain; }
}
"""
