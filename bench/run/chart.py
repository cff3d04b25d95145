#!/usr/bin/python3
"""bench/run/chart.py RUN.CSV OUT.SVG - bars of wall time per program from
run.sh's CSV: plain, under `ethermem run`, under swap, on a log scale (the
programs' times differ by 100x). A run cut off at the time limit is drawn
to the limit, hatched, and labelled '>'. Standard library only."""
import csv
import math
import sys

if len(sys.argv) != 3:
    sys.exit("usage: chart.py RUN.CSV OUT.SVG")
rows = list(csv.DictReader(open(sys.argv[1])))
if not rows:
    sys.exit("chart.py: no rows in " + sys.argv[1])
modes = [("plain", "plain_s", None, "#777777"),
         ("ethermem run", "pool_s", "pool_status", "#2a7ab9"),
         ("swap", "swap_s", "swap_status", "#d9822b")]
vals = [float(r[k]) for r in rows for _, k, _, _ in modes if float(r[k]) > 0]
lo = 10 ** math.floor(math.log10(min(vals)))
hi = 10 ** math.ceil(math.log10(max(vals)))
W, H, left, top, bottom = 90 + 110 * len(rows), 360, 60, 40, 60
ph = H - top - bottom


def y(v):
    v = min(max(v, lo), hi)
    return top + ph - ph * (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo))


out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="11">',
       '<defs><pattern id="cut" width="6" height="6" patternUnits="userSpaceOnUse" patternTransform="rotate(45)">'
       '<rect width="6" height="6" fill="white"/><rect width="3" height="6" fill="#999"/></pattern></defs>',
       f'<text x="{left}" y="18" font-size="13">Wall time per program, seconds (log scale)</text>']
d = lo
while d <= hi:
    out.append(f'<line x1="{left}" x2="{W - 10}" y1="{y(d):.1f}" y2="{y(d):.1f}" stroke="#ddd"/>'
               f'<text x="{left - 6}" y="{y(d) + 4:.1f}" text-anchor="end">{d:g}</text>')
    d *= 10
for i, r in enumerate(rows):
    x0 = left + 20 + 110 * i
    for j, (name, key, st, color) in enumerate(modes):
        v = float(r[key])
        cut = r.get("plain_cut") == "1" if st is None else r[st] == "cut"
        x = x0 + 26 * j
        fill = "url(#cut)" if cut else color
        out.append(f'<rect x="{x}" y="{y(v):.1f}" width="24" height="{top + ph - y(v):.1f}" fill="{fill}" stroke="{color}"/>')
        out.append(f'<text x="{x + 12}" y="{y(v) - 3:.1f}" text-anchor="middle" font-size="9">{">" if cut else ""}{v:.0f}</text>')
    out.append(f'<text x="{x0 + 38}" y="{top + ph + 16}" text-anchor="middle">{r["case"]}</text>')
for j, (name, _, _, color) in enumerate(modes):
    lx = left + 150 * j
    out.append(f'<rect x="{lx}" y="{H - 22}" width="12" height="12" fill="{color}"/>'
               f'<text x="{lx + 16}" y="{H - 12}">{name}</text>')
out.append(f'<text x="{left + 450}" y="{H - 12}">hatched: cut off at the time limit</text>')
out.append("</svg>")
open(sys.argv[2], "w").write("\n".join(out) + "\n")
