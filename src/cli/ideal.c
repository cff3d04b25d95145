/*
 * ideal.c - `ethermem-ideal --cache BYTES [--unit BYTES] [-v] TRACE`: the
 * bytes an optimal offline replacement policy would fetch for the units a
 * mapping installed, so that a policy is judged against the limit and not
 * only against another policy.
 *
 * TRACE is what ETHERMEM_MAP_TRACE writes (slots.c): 8-byte records, a
 * mapping's serial (its top 5 bits: log2 of the unit size - 11) and a unit
 * index whose top bit marks a zero-filled unit. The cache holds --cache /
 * unit units; --unit is for traces that do not record it (top bits 0).
 * A trace whose mappings had different units is computed at the smallest. The policy is Belady's MIN: on a miss with the cache full, evict
 * the unit whose next reference is farthest away. No policy that has to
 * install a unit to use it fetches less. A miss costs a fetch unless the
 * record says the unit was zero-filled: the pool held nothing for it then.
 *
 * What the trace cannot give: userfaultfd reports misses only, so the
 * references that hit in the measured run are not in it. MIN over a
 * subsequence of the references fetches no more than over all of them, so
 * the figure is a lower bound of the true ideal (and fetched / ideal an
 * upper bound of how far a policy is from it).
 *
 * Prints the ideal bytes on stdout; --distinct adds a second line, the bytes
 * of distinct units in the trace (what the mappings put through the cache);
 * -v: records, distinct units, misses on stderr. Exit 0, 1 on an unreadable trace, 2 on bad arguments.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ethermem.h"

/* An open-addressing map from unit key to an int64 value. */
struct imap {
	uint64_t *key; /* key + 1; 0 is empty */
	int64_t *val;
	size_t cap;
};

static uint64_t ihash(uint64_t k)
{
	k ^= k >> 33;
	k *= 0xff51afd7ed558ccdull;
	k ^= k >> 33;
	return k;
}

static int imap_init(struct imap *m, size_t n)
{
	m->cap = 16;
	while (m->cap < 2 * n)
		m->cap <<= 1;
	m->key = calloc(m->cap, sizeof(*m->key));
	m->val = calloc(m->cap, sizeof(*m->val));
	return m->key && m->val ? 0 : -ENOMEM;
}

/* The slot of k, empty (key 0) when it is not there. */
static size_t imap_slot(const struct imap *m, uint64_t k)
{
	size_t i = ihash(k) & (m->cap - 1);

	while (m->key[i] && m->key[i] != k + 1)
		i = (i + 1) & (m->cap - 1);
	return i;
}

/* A max-heap of (next reference, key); stale entries are skipped when the
 * key's current next reference (in the map) differs. */
struct hent {
	int64_t next;
	uint64_t key;
};

static void heap_push(struct hent *h, size_t *n, struct hent e)
{
	size_t i = (*n)++;

	while (i && h[(i - 1) / 2].next < e.next) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = e;
}

static struct hent heap_pop(struct hent *h, size_t *n)
{
	struct hent top = h[0], last = h[--*n];
	size_t i = 0;

	for (;;) {
		size_t c = 2 * i + 1;

		if (c >= *n)
			break;
		if (c + 1 < *n && h[c + 1].next > h[c].next)
			c++;
		if (h[c].next <= last.next)
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n)
		h[i] = last;
	return top;
}

static void usage(FILE *f)
{
	fprintf(f, "usage: ethermem-ideal --cache BYTES [--unit BYTES] [--distinct] [-v] TRACE\n");
}

int main(int argc, char **argv)
{
	uint64_t cache = 0, unit = 64 << 10, misses = 0, cost = 0, distinct = 0;
	const char *path = NULL;
	int verbose = 0, show_distinct = 0, unit_given = 0;

	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--cache") && i + 1 < argc) {
			if (em_parse_size(argv[++i], &cache) || !cache)
				return usage(stderr), 2;
		} else if (!strcmp(argv[i], "--unit") && i + 1 < argc) {
			if (em_parse_size(argv[++i], &unit) || !unit)
				return usage(stderr), 2;
			unit_given = 1;
		} else if (!strcmp(argv[i], "--distinct")) {
			show_distinct = 1;
		} else if (!strcmp(argv[i], "-v")) {
			verbose = 1;
		} else if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
			return usage(stdout), 0;
		} else if (argv[i][0] != '-' && !path) {
			path = argv[i];
		} else {
			return usage(stderr), 2;
		}
	}
	if (!path || !cache)
		return usage(stderr), 2;
	FILE *f = fopen(path, "rb");

	if (!f) {
		fprintf(stderr, "ethermem-ideal: %s: %s\n", path, strerror(errno));
		return 1;
	}
	/* the whole trace in memory: a record per 4..64 KiB fetched */
	size_t n = 0, room = 1 << 16;
	uint32_t(*rec)[2] = malloc(room * sizeof(*rec));

	while (rec) {
		size_t got = fread(rec + n, sizeof(*rec), room - n, f);

		n += got;
		if (n < room)
			break;
		room *= 2;
		void *more = realloc(rec, room * sizeof(*rec));

		if (!more) {
			free(rec);
			rec = NULL;
		} else {
			rec = more;
		}
	}
	if (!rec || ferror(f)) {
		fprintf(stderr, "ethermem-ideal: %s: %s\n", path, rec ? "read error" : "no memory");
		fclose(f);
		return 1;
	}
	fclose(f);

	/* the mapping's unit, when the engine recorded it, in the serial's top
	 * bits (log2 - 11); records without it take --unit. Where mappings
	 * had different units (a program's own allocator's blocks beside the
	 * shim's), every record is cut into records of the smallest: MIN at
	 * the finer unit needs no more than at the coarser, so the figure
	 * stays a lower bound. */
	unsigned lmin = 0, lmax = 0, lu = 0;

	for (uint64_t u = unit; u > 1; u >>= 1)
		lu++;
	for (size_t i = 0; i < n; i++) {
		unsigned l = rec[i][0] >> 27 ? (rec[i][0] >> 27) + 11 : lu;

		if (unit_given && l != lu) {
			fprintf(stderr,
				"ethermem-ideal: %s: recorded with %llu-byte units, not --unit\n",
				path, 1ull << l);
			return 1;
		}
		lmin = !lmin || l < lmin ? l : lmin;
		lmax = l > lmax ? l : lmax;
	}
	if (n)
		unit = 1ull << lmin;
	if (n && lmax > lmin) {
		size_t m = 0;

		for (size_t i = 0; i < n; i++)
			m += (size_t)1
			     << (((rec[i][0] >> 27 ? (rec[i][0] >> 27) + 11 : lu)) - lmin);
		uint32_t(*fine)[2] = malloc(m * sizeof(*fine));

		if (!fine) {
			fprintf(stderr, "ethermem-ideal: no memory for %zu records\n", m);
			return 1;
		}
		m = 0;
		for (size_t i = 0; i < n; i++) {
			unsigned l = rec[i][0] >> 27 ? (rec[i][0] >> 27) + 11 : lu;
			uint32_t k = 1u << (l - lmin), idx = rec[i][1] & 0x7fffffffu;

			for (uint32_t j = 0; j < k; j++) {
				fine[m][0] = rec[i][0];
				fine[m][1] = ((idx * k + j) & 0x7fffffffu) |
					     (rec[i][1] & (1u << 31));
				m++;
			}
		}
		free(rec);
		rec = fine;
		n = m;
	}
	for (size_t i = 0; i < n; i++)
		rec[i][0] &= (1u << 27) - 1;
	uint64_t cap = cache / unit;

	if (!cap) {
		fprintf(stderr, "ethermem-ideal: the cache holds no unit of %" PRIu64 " bytes\n",
			unit);
		return 2;
	}

	/* next[i]: the index of the next record of the same unit (n: none) */
	int64_t *next = malloc((n ? n : 1) * sizeof(*next));
	struct hent *heap = malloc((n ? n : 1) * sizeof(*heap));
	struct imap last, in;

	if (!next || !heap || imap_init(&last, n) || imap_init(&in, n)) {
		fprintf(stderr, "ethermem-ideal: no memory for %zu records\n", n);
		return 1;
	}
#define KEY(r) (((uint64_t)(r)[0] << 31) | ((r)[1] & 0x7fffffffu))
	for (size_t i = n; i-- > 0;) {
		size_t s = imap_slot(&last, KEY(rec[i]));

		if (!last.key[s]) {
			last.key[s] = KEY(rec[i]) + 1;
			distinct++;
			next[i] = (int64_t)n;
		} else {
			next[i] = last.val[s];
		}
		last.val[s] = (int64_t)i;
	}

	/* in: a unit's current next reference while it is cached, -1 after
	 * eviction (a slot once used keeps its key, so lookups stay simple) */
	size_t hn = 0;
	uint64_t held = 0;

	for (size_t i = 0; i < n; i++) {
		uint64_t k = KEY(rec[i]);
		size_t s = imap_slot(&in, k);

		if (!in.key[s] || in.val[s] < 0) {
			misses++;
			if (!(rec[i][1] >> 31))
				cost++;
			if (held == cap) {
				for (;;) {
					struct hent e = heap_pop(heap, &hn);
					size_t es = imap_slot(&in, e.key);

					if (in.val[es] == e.next) {
						in.val[es] = -1;
						break;
					}
				}
			} else {
				held++;
			}
			in.key[s] = k + 1;
		}
		in.val[s] = next[i];
		heap_push(heap, &hn, (struct hent){ .next = next[i], .key = k });
	}
	if (verbose)
		fprintf(stderr,
			"ethermem-ideal: %zu records, %" PRIu64 " units, cache %" PRIu64
			" units: %" PRIu64 " misses, %" PRIu64 " fetches\n",
			n, distinct, cap, misses, cost);
	printf("%" PRIu64 "\n", cost * unit);
	if (show_distinct)
		printf("%" PRIu64 "\n", distinct * unit);
	free(rec);
	free(next);
	free(heap);
	free(last.key);
	free(last.val);
	free(in.key);
	free(in.val);
	return 0;
}
