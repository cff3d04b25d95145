"""gen.py lines FILE MB | gen.py csource FILE KB: deterministic inputs for
the corpus. `lines`: MB megabytes of random text lines for sort. `csource`:
a C file of about KB kilobytes of generated functions (loops, switches and
arithmetic that keep gcc -O2's optimisers busy)."""
import random
import sys

kind, path, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
r = random.Random(11)
with open(path, "w") as f:
    if kind == "lines":
        alpha = "abcdefghijklmnopqrstuvwxyz0123456789"
        left = size * 1000000
        while left > 0:
            w = "".join(r.choice(alpha) for _ in range(r.randint(8, 40)))
            line = "%s %d\n" % (w, r.randint(0, 1 << 30))
            f.write(line)
            left -= len(line)
    else:
        left, i = size * 1000, 0
        f.write("int g[256];\n")
        while left > 0:
            body = ["int f%d(int a, int b) {" % i, "\tint s = 0;"]
            for j in range(r.randint(3, 8)):
                body.append(
                    "\tfor (int i%d = 0; i%d < a + %d; i%d++) s += (i%d * %d) ^ (b >> %d) ^ g[(i%d + s) & 255];"
                    % (j, j, r.randint(1, 99), j, j, r.randint(1, 999), r.randint(0, 7), j)
                )
            body.append("\tswitch (s & 7) {")
            for k in range(8):
                body.append("\tcase %d: s = s * %d + b; break;" % (k, r.randint(2, 97)))
            body.append("\t}")
            if i:
                body.append("\ts += f%d(b, s & 15);" % r.randint(0, i - 1))
            body.append("\treturn s;\n}\n")
            text = "\n".join(body)
            f.write(text)
            left -= len(text)
            i += 1
