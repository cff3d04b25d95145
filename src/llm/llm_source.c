/*
 * Weight sources: where the forward pass gets its tensors from.
 *
 * Pointer sources hold the whole checkpoint at one address: a malloc'ed copy
 * (local), an mmap of the file, or a pool region mapped by the transparent
 * paging layer (llm_weights_from_pointer()).  They hand out pointers into it
 * and the kernel or the paging layer decides what is resident.
 *
 * The streaming source does that deciding itself, within an explicit local
 * budget, as offloading engines (FlexGen, ZeRO-Inference) do:
 *  - the model is cut into units of a few MiB, slices of whole rows of a
 *    matrix (with the norm vector used just before it), in the order the
 *    forward pass uses them; small units keep the staging buffers a small
 *    share of the budget, so nearly all of it holds weights;
 *  - units that fit the budget are pinned (loaded once at open), spread evenly
 *    over the sequence so that prefetching always has a streamed unit to work
 *    on; the others cycle through two staging buffers, the next one fetched
 *    while the current one is computed on;
 *  - MoE experts are fetched when the router picks them, into a cache of
 *    whole experts that takes the rest of the budget (LRU, or next-use
 *    order when it holds less than one token's experts: llm_s_victim()).
 * Every token then moves only the bytes that did not fit, which is the point:
 * LRU paging of a model read front to back in the same order every token keeps
 * nothing useful once the model exceeds memory.
 */
#include "llm/llm.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

void llm_group_tensors(enum llm_format fmt, int g, int *vec, int *mat)
{
	static const int dense[LLM_GROUPS_DENSE][2] = {
		{ LLM_T_RMS_ATT, LLM_T_WQ }, { -1, LLM_T_WK }, { -1, LLM_T_WV }, { -1, LLM_T_WO },
		{ LLM_T_RMS_FFN, LLM_T_W1 }, { -1, LLM_T_W3 }, { -1, LLM_T_W2 },
	};
	static const int moe[LLM_GROUPS_MOE][2] = {
		{ LLM_T_RMS_ATT, LLM_T_WQ },
		{ -1, LLM_T_WK },
		{ -1, LLM_T_WV },
		{ -1, LLM_T_WO },
		{ LLM_T_RMS_FFN, LLM_T_ROUTER },
	};
	const int *p = fmt == LLM_FMT_MOE ? moe[g] : dense[g];

	*vec = p[0];
	*mat = p[1];
}

void llm_tensor_shape(const struct llm_config *c, int t, int *rows, int *cols)
{
	*cols = t == LLM_T_W2 ? c->hidden : c->dim;
	switch (t) {
	case LLM_T_WK:
	case LLM_T_WV:
		*rows = c->kv_dim;
		break;
	case LLM_T_W1:
	case LLM_T_W3:
		*rows = c->hidden;
		break;
	case LLM_T_ROUTER:
		*rows = c->n_experts;
		break;
	default:
		*rows = c->dim;
		break;
	}
}

static uint64_t llm_toff(const struct llm_layout *lay, int l, int t)
{
	if (lay->fmt != LLM_FMT_MOE)
		return lay->t_base[t] + (uint64_t)l * lay->t_size[t];
	return lay->layer_base + (uint64_t)l * lay->layer_stride + lay->t_base[t];
}

static uint64_t llm_eoff(const struct llm_layout *lay, int l, int e)
{
	return lay->layer_base + (uint64_t)l * lay->layer_stride + lay->expert_base +
	       (uint64_t)e * lay->expert_stride;
}

static void llm_expert_ptrs(const struct llm_config *c, const unsigned char *p,
			    struct llm_expert_w *w)
{
	size_t m = (size_t)c->hidden * (size_t)c->dim;

	w->w1 = (const float *)p;
	w->w2 = w->w1 + m;
	w->w3 = w->w2 + m;
}

static int llm_src_init(struct llm_src *s, const void *hdr, size_t hdr_len, uint64_t size,
			char *err, size_t errlen)
{
	int rc = llm_parse_header(hdr, hdr_len, size, &s->cfg, &s->lay, err, errlen);

	if (rc)
		return rc;
	s->n_groups = s->lay.fmt == LLM_FMT_MOE ? LLM_GROUPS_MOE : LLM_GROUPS_DENSE;
	return 0;
}

/* Where group g of layer l (or the classifier, l == n_layers) lives. */
struct llm_geom {
	uint64_t voff, vlen; /* norm vector; vlen 0 if none */
	uint64_t moff;       /* matrix */
	int rows, cols;
};

static void llm_geom(const struct llm_src *s, int l, int g, struct llm_geom *o)
{
	int vt, mt;

	if (l == s->cfg.n_layers) {
		o->voff = s->lay.rms_final;
		o->vlen = (uint64_t)s->cfg.dim * sizeof(float);
		o->moff = s->lay.wcls;
		o->rows = s->cfg.vocab;
		o->cols = s->cfg.dim;
		return;
	}
	llm_group_tensors(s->lay.fmt, g, &vt, &mt);
	o->voff = vt < 0 ? 0 : llm_toff(&s->lay, l, vt);
	o->vlen = vt < 0 ? 0 : s->lay.t_size[vt];
	o->moff = llm_toff(&s->lay, l, mt);
	llm_tensor_shape(&s->cfg, mt, &o->rows, &o->cols);
}

/* Bytes of one matrix row (int8: values plus their share of scales). */
static uint64_t llm_row_bytes(const struct llm_config *c, int cols)
{
	uint64_t gs = (uint64_t)c->group_size;

	return gs ? (uint64_t)cols + (uint64_t)cols / gs * 4 : (uint64_t)cols * 4;
}

/* File ranges holding rows [r0, r1) of a matrix at moff, in the order they
 * sit in memory: fp32 rows, or int8 rows then their scales.  Returns the
 * number of ranges (1 or 2). */
static int llm_row_ranges(const struct llm_config *c, const struct llm_geom *g, int r0, int r1,
			  uint64_t *off, uint64_t *len)
{
	uint64_t gs = (uint64_t)c->group_size, C = (uint64_t)g->cols, n = (uint64_t)(r1 - r0);

	if (!gs) {
		off[0] = g->moff + (uint64_t)r0 * C * 4;
		len[0] = n * C * 4;
		return 1;
	}
	off[0] = g->moff + (uint64_t)r0 * C;
	len[0] = n * C;
	off[1] = g->moff + (uint64_t)g->rows * C + (uint64_t)r0 * C / gs * 4;
	len[1] = n * C / gs * 4;
	return 2;
}

static int llm_s_note_cold(struct llm_src_stats *st, double ms);

/* ---- pointer sources ---------------------------------------------------- */

struct llm_psrc {
	struct llm_src s;
	const unsigned char *base;
	void (*release)(void *cookie);
	void *cookie;
	/* Whether experts may be non-resident (mmap, pool mapping), so their
	 * residency is probed and cold loads timed; mincore() result buffer. */
	int probe;
	unsigned char *vec;
	size_t vec_len;
};

/* Embedding row `token` from a table at emb holding `vocab` rows. */
static void llm_emb_row(const struct llm_config *c, const unsigned char *emb, int vocab, int token,
			float *out)
{
	size_t D = (size_t)c->dim;

	if (!c->group_size) {
		memcpy(out, emb + (size_t)token * D * sizeof(float), D * sizeof(float));
		return;
	}
	llm_dequant(out, (const int8_t *)emb + (size_t)token * D,
		    (const float *)(const void *)(emb + (size_t)vocab * D) +
			    (size_t)token * D / (size_t)c->group_size,
		    c->dim, c->group_size);
}

static int llm_p_embed(struct llm_src *s, int token, float *out)
{
	struct llm_psrc *p = (struct llm_psrc *)s;

	llm_emb_row(&s->cfg, p->base + s->lay.tok_emb, s->cfg.vocab, token, out);
	return 0;
}

static int llm_p_part(struct llm_src *s, int l, int g, int p, struct llm_part *out)
{
	struct llm_psrc *ps = (struct llm_psrc *)s;
	struct llm_geom ge;

	if (p != 0)
		return -EINVAL;
	llm_geom(s, l, g, &ge);
	out->vec = ge.vlen ? (const float *)(const void *)(ps->base + ge.voff) : NULL;
	out->mat = ps->base + ge.moff;
	out->r0 = 0;
	out->r1 = ge.rows;
	return 0;
}

/*
 * Make an expert resident if it is not, timing it: the cold-load time of
 * an expert from disk (mmap) or from the pool (mapped region), comparable
 * with the streaming source's.  Residency comes from mincore(): page cache
 * for a file, present pages for a userfaultfd mapping.  Touching one byte a
 * page faults the expert in at once instead of during its matmuls; the
 * bytes moved are the same.
 */
static int llm_p_probe(struct llm_psrc *p, const unsigned char *at, uint64_t len)
{
	uintptr_t pg = (uintptr_t)sysconf(_SC_PAGESIZE);
	uintptr_t a0 = (uintptr_t)at & ~(pg - 1);
	size_t span = (size_t)((uintptr_t)at + len - a0), n = (span + pg - 1) / pg;
	int cold = 0;
	double t0;

	if (n > p->vec_len) {
		unsigned char *v = realloc(p->vec, n);

		if (!v)
			return -ENOMEM;
		p->vec = v;
		p->vec_len = n;
	}
	if (mincore((void *)a0, span, p->vec) < 0)
		return 0; /* cannot tell: not counted either way */
	for (size_t i = 0; i < n && !cold; i++)
		cold = !(p->vec[i] & 1);
	if (!cold) {
		p->s.st.expert_hits++;
		return 0;
	}
	t0 = llm_now_ms();
	for (size_t i = 0; i < n; i++)
		(void)*(volatile const unsigned char *)(a0 + i * pg);
	p->s.st.expert_misses++;
	return llm_s_note_cold(&p->s.st, llm_now_ms() - t0);
}

static int llm_p_experts(struct llm_src *s, int l, const int *ids, int k, struct llm_expert_w *w)
{
	struct llm_psrc *p = (struct llm_psrc *)s;

	for (int j = 0; j < k; j++) {
		const unsigned char *at = p->base + llm_eoff(&s->lay, l, ids[j]);

		if (p->probe) {
			int rc = llm_p_probe(p, at, s->lay.expert_bytes);

			if (rc)
				return rc;
		}
		llm_expert_ptrs(&s->cfg, at, &w[j]);
	}
	return 0;
}

static void llm_p_close(struct llm_src *s)
{
	struct llm_psrc *p = (struct llm_psrc *)s;

	if (p->release)
		p->release(p->cookie);
	free(s->st.cold_ms);
	free(p->vec);
	free(p);
}

static const struct llm_src_ops llm_psrc_ops = {
	.embed = llm_p_embed,
	.part = llm_p_part,
	.experts = llm_p_experts,
	.close = llm_p_close,
};

int llm_weights_from_pointer(const void *base, size_t len, void (*release)(void *cookie),
			     void *cookie, struct llm_src **out, char *err, size_t errlen)
{
	struct llm_psrc *p = calloc(1, sizeof(*p));
	size_t hl = len < LLM_MOE_HEADER ? len : LLM_MOE_HEADER;
	int rc;

	if (!p)
		return -ENOMEM;
	rc = llm_src_init(&p->s, base, hl, len, err, errlen);
	if (rc) {
		free(p);
		return rc;
	}
	p->s.ops = &llm_psrc_ops;
	p->probe = p->s.cfg.n_experts > 0;
	p->base = base;
	p->release = release;
	p->cookie = cookie;
	*out = &p->s;
	return 0;
}

static int llm_open_file(const char *path, int *fd, uint64_t *size, char *err, size_t errlen)
{
	struct stat sb;
	int rc;

	*fd = open(path, O_RDONLY | O_CLOEXEC);
	if (*fd < 0) {
		rc = -errno;
		snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
		return rc;
	}
	if (fstat(*fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
		snprintf(err, errlen, "%s is not a regular file", path);
		close(*fd);
		return -EINVAL;
	}
	*size = (uint64_t)sb.st_size;
	if (*size < LLM_V0_HEADER || *size > SIZE_MAX) {
		snprintf(err, errlen, "%s: %llu bytes is not a checkpoint", path,
			 (unsigned long long)*size);
		close(*fd);
		return -EINVAL;
	}
	return 0;
}

int llm_weights_local(const char *path, struct llm_src **out, char *err, size_t errlen)
{
	uint64_t size = 0, done = 0;
	unsigned char *buf;
	int fd, rc;

	rc = llm_open_file(path, &fd, &size, err, errlen);
	if (rc)
		return rc;
	buf = malloc(size);
	if (!buf) {
		snprintf(err, errlen, "cannot allocate %llu bytes for %s", (unsigned long long)size,
			 path);
		close(fd);
		return -ENOMEM;
	}
	while (done < size) {
		/* Bounded chunks: read() of more than ~2 GiB is short anyway. */
		size_t want = size - done > (1u << 30) ? (1u << 30) : size - done;
		ssize_t n = read(fd, buf + done, want);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			rc = n < 0 ? -errno : -EIO;
			snprintf(err, errlen, "reading %s: %s", path,
				 n < 0 ? strerror(errno) : "file shrank");
			free(buf);
			close(fd);
			return rc;
		}
		done += (uint64_t)n;
	}
	close(fd);
	rc = llm_weights_from_pointer(buf, size, free, buf, out, err, errlen);
	if (rc)
		free(buf);
	else
		((struct llm_psrc *)*out)->probe = 0; /* all of it was just read */
	return rc;
}

struct llm_mapping {
	void *addr;
	size_t len;
};

static void llm_unmap(void *cookie)
{
	struct llm_mapping *m = cookie;

	munmap(m->addr, m->len);
	free(m);
}

int llm_weights_mmap(const char *path, struct llm_src **out, char *err, size_t errlen)
{
	struct llm_mapping *m;
	uint64_t size = 0;
	int fd, rc;

	rc = llm_open_file(path, &fd, &size, err, errlen);
	if (rc)
		return rc;
	m = malloc(sizeof(*m));
	if (!m) {
		close(fd);
		return -ENOMEM;
	}
	m->len = size;
	m->addr = mmap(NULL, m->len, PROT_READ, MAP_PRIVATE, fd, 0);
	rc = m->addr == MAP_FAILED ? -errno : 0;
	close(fd);
	if (rc) {
		snprintf(err, errlen, "mmap %s: %s", path, strerror(-rc));
		free(m);
		return rc;
	}
	rc = llm_weights_from_pointer(m->addr, m->len, llm_unmap, m, out, err, errlen);
	if (rc)
		llm_unmap(m);
	return rc;
}

void llm_src_close(struct llm_src *s)
{
	if (s)
		s->ops->close(s);
}

/* ---- streaming source --------------------------------------------------- */

#define LLM_STAGING 2

/* One streamed or pinned unit, a part of a group: up to three file ranges
 * placed back to back (norm vector, int8 rows, their scales). */
#define LLM_UNIT_RANGES 3
struct llm_unit {
	uint64_t off[LLM_UNIT_RANGES], len[LLM_UNIT_RANGES];
	int nr;
	int r0, r1;    /* matrix rows held */
	uint64_t vlen; /* bytes of norm vector ahead of the rows */
	uint64_t bytes;
	unsigned char *pin; /* resident copy, or NULL if streamed */
	int next;           /* next streamed unit after this one, cyclically */
};

enum { LLM_BUF_EMPTY, LLM_BUF_INFLIGHT, LLM_BUF_READY };

struct llm_stage {
	unsigned char *mem;
	int unit, state, nr;
	uint64_t tag[LLM_UNIT_RANGES];
};

struct llm_slot {
	int key; /* layer * n_experts + expert, -1 when empty */
	uint64_t last_use;
	unsigned char *mem;
};

struct llm_ssrc {
	struct llm_src s;
	struct llm_fetcher f;
	uint64_t next_tag;
	uint64_t chunk;
	int n_units;
	struct llm_unit *units;
	/* Group g of layer l has parts[g] units starting at unit
	 * l * per_layer + first[g]; the classifier (g = n_groups) starts at
	 * n_layers * per_layer. */
	int parts[LLM_GROUPS_DENSE + 1], first[LLM_GROUPS_DENSE + 1];
	int per_layer, part_rows[LLM_GROUPS_DENSE + 1];
	unsigned char *pin_arena, *stage_arena, *cache_arena;
	struct llm_stage stage[LLM_STAGING];
	struct llm_slot *slots;
	int n_slots;
	int *slot_of; /* key -> slot index or -1 */
	uint64_t clock;
	float *row;           /* embedding row bounce: dim floats, or int8 values + scales */
	unsigned char *inuse; /* per slot, during one experts() call */
};

static int llm_s_fetch_sync(struct llm_ssrc *ss, uint64_t off, void *dst, size_t len)
{
	uint64_t tag = ss->next_tag++;
	int rc = ss->f.ops->submit(ss->f.ctx, off, dst, len, tag);

	if (rc)
		return rc;
	return ss->f.ops->wait(ss->f.ctx, tag);
}

static int llm_s_stage_wait(struct llm_ssrc *ss, struct llm_stage *b)
{
	double t0 = llm_now_ms();
	int rc = 0;

	for (int i = 0; i < b->nr; i++) {
		int r = ss->f.ops->wait(ss->f.ctx, b->tag[i]);

		if (r && !rc)
			rc = r;
	}
	ss->s.st.stall_ms += llm_now_ms() - t0;
	b->state = rc ? LLM_BUF_EMPTY : LLM_BUF_READY;
	b->nr = 0;
	return rc;
}

static int llm_s_stage_load(struct llm_ssrc *ss, struct llm_stage *b, int u)
{
	struct llm_unit *un = &ss->units[u];
	uint64_t at = 0;
	int rc;

	if (b->state == LLM_BUF_INFLIGHT) {
		rc = llm_s_stage_wait(ss, b);
		if (rc)
			return rc;
	}
	b->unit = u;
	b->nr = 0;
	for (int i = 0; i < un->nr; i++) {
		b->tag[i] = ss->next_tag++;
		rc = ss->f.ops->submit(ss->f.ctx, un->off[i], b->mem + at, un->len[i], b->tag[i]);
		if (rc) {
			/* Reap what did go out before the buffer can be reused. */
			llm_s_stage_wait(ss, b);
			b->state = LLM_BUF_EMPTY;
			return rc;
		}
		b->nr++;
		at += un->len[i];
		ss->s.st.bytes_fetched += un->len[i];
		ss->s.st.fetches++;
	}
	b->state = LLM_BUF_INFLIGHT;
	return 0;
}

static struct llm_stage *llm_s_holding(struct llm_ssrc *ss, int u)
{
	for (int i = 0; i < LLM_STAGING; i++)
		if (ss->stage[i].state != LLM_BUF_EMPTY && ss->stage[i].unit == u)
			return &ss->stage[i];
	return NULL;
}

/* Makes unit u addressable and starts fetching the next streamed unit;
 * returns its bytes through *mem. */
static int llm_s_unit(struct llm_ssrc *ss, int u, const unsigned char **mem)
{
	struct llm_unit *un = &ss->units[u];
	struct llm_stage *b = NULL;
	int rc, n;

	if (un->pin) {
		*mem = un->pin;
	} else {
		b = llm_s_holding(ss, u);
		if (!b) {
			/* Not prefetched (first token, or a pinned run ended
			 * the lookahead): any buffer is free now. */
			b = &ss->stage[0];
			if (ss->stage[0].state == LLM_BUF_INFLIGHT)
				b = &ss->stage[1];
			rc = llm_s_stage_load(ss, b, u);
			if (rc)
				return rc;
		}
		if (b->state == LLM_BUF_INFLIGHT) {
			rc = llm_s_stage_wait(ss, b);
			if (rc)
				return rc;
		}
		*mem = b->mem;
	}
	n = un->next;
	if (n >= 0 && n != u && !llm_s_holding(ss, n)) {
		struct llm_stage *o = b == &ss->stage[0] ? &ss->stage[1] : &ss->stage[0];

		if (!b && ss->stage[0].state == LLM_BUF_INFLIGHT)
			o = &ss->stage[1];
		rc = llm_s_stage_load(ss, o, n);
		if (rc)
			return rc;
	}
	return 0;
}

static int llm_s_unit_of(const struct llm_ssrc *ss, int l, int g, int p)
{
	if (l == ss->s.cfg.n_layers)
		return l * ss->per_layer + p;
	return l * ss->per_layer + ss->first[g] + p;
}

static int llm_s_part(struct llm_src *s, int l, int g, int p, struct llm_part *out)
{
	struct llm_ssrc *ss = (struct llm_ssrc *)s;
	int gi = l == s->cfg.n_layers ? s->n_groups : g;
	const unsigned char *mem;
	struct llm_unit *un;
	int u, rc;

	if (p < 0 || p >= ss->parts[gi])
		return -EINVAL;
	u = llm_s_unit_of(ss, l, g, p);
	rc = llm_s_unit(ss, u, &mem);
	if (rc)
		return rc;
	un = &ss->units[u];
	out->vec = un->vlen ? (const float *)(const void *)mem : NULL;
	out->mat = mem + un->vlen;
	out->r0 = un->r0;
	out->r1 = un->r1;
	return 0;
}

static int llm_s_embed(struct llm_src *s, int token, float *out)
{
	struct llm_ssrc *ss = (struct llm_ssrc *)s;
	size_t row = (size_t)s->cfg.dim * sizeof(float);
	int c = token / ss->part_rows[s->n_groups], rc;
	struct llm_unit *un = &ss->units[llm_s_unit_of(ss, s->cfg.n_layers, 0, c)];

	if (s->cfg.shared_cls && un->pin) {
		/* The row sits in a pinned classifier part, whose rows are
		 * laid out like a whole table. */
		llm_emb_row(&s->cfg, un->pin + un->vlen, un->r1 - un->r0, token - un->r0, out);
		return 0;
	}
	if (!s->cfg.group_size) {
		rc = llm_s_fetch_sync(ss, s->lay.tok_emb + (uint64_t)token * row, out, row);
		if (!rc)
			ss->s.st.bytes_fetched += row;
	} else {
		uint64_t D = (uint64_t)s->cfg.dim, V = (uint64_t)s->cfg.vocab;
		uint64_t gs = (uint64_t)s->cfg.group_size, ns = D / gs * 4;
		int8_t *q = (int8_t *)(void *)ss->row;
		float *sc = ss->row + D / 4;

		rc = llm_s_fetch_sync(ss, s->lay.tok_emb + (uint64_t)token * D, q, D);
		if (!rc)
			rc = llm_s_fetch_sync(
				ss, s->lay.tok_emb + V * D + (uint64_t)token * D / gs * 4, sc, ns);
		if (!rc) {
			llm_dequant(out, q, sc, s->cfg.dim, s->cfg.group_size);
			ss->s.st.bytes_fetched += D + ns;
		}
	}
	if (!rc)
		ss->s.st.fetches++;
	return rc;
}

static int llm_s_note_cold(struct llm_src_stats *st, double ms)
{
	if (st->n_cold == st->cap_cold) {
		size_t cap = st->cap_cold ? st->cap_cold * 2 : 1024;
		double *p = realloc(st->cold_ms, cap * sizeof(*p));

		if (!p)
			return -ENOMEM;
		st->cold_ms = p;
		st->cap_cold = cap;
	}
	st->cold_ms[st->n_cold++] = ms;
	return 0;
}

/*
 * The slot to evict for a miss in layer l, never one holding this layer's
 * picks (n_slots >= k guarantees a candidate).  Least recently used while
 * the cache holds a token's worth of experts (n_layers x k).  Below that,
 * layers are visited cyclically, so LRU evicts every entry just before its
 * reuse and hits nothing; evicting instead the entry whose layer comes up
 * last (this layer's other experts, then the previous layer's, ...) keeps
 * the upcoming layers' experts, Belady-fashion.  Simulated on the Zipf
 * router: 6 layers x 8 experts, top-2, 8 slots: 0% hits with LRU, 45% so.
 */
static int llm_s_victim(const struct llm_ssrc *ss, int l, const unsigned char *inuse)
{
	int L = ss->s.cfg.n_layers, v = -1, vd = -1;
	int cyclic = ss->n_slots < L * ss->s.cfg.top_k;

	for (int i = 0; i < ss->n_slots; i++) {
		const struct llm_slot *sl = &ss->slots[i];
		int d;

		if (inuse[i])
			continue;
		if (sl->key < 0)
			return i;
		/* Layer steps until this entry's layer runs again. */
		d = cyclic ? ((sl->key / ss->s.cfg.n_experts) - l - 1 + L) % L : 0;
		if (v < 0 || d > vd || (d == vd && sl->last_use < ss->slots[v].last_use)) {
			v = i;
			vd = d;
		}
	}
	return v;
}

static int llm_s_experts(struct llm_src *s, int l, const int *ids, int k, struct llm_expert_w *w)
{
	struct llm_ssrc *ss = (struct llm_ssrc *)s;
	int E = s->cfg.n_experts, slot[LLM_MAX_EXPERTS], miss[LLM_MAX_EXPERTS];
	uint64_t tag[LLM_MAX_EXPERTS];
	unsigned char *inuse = ss->inuse;
	int nmiss = 0, rc = 0;
	double t0;

	memset(inuse, 0, (size_t)ss->n_slots);
	for (int j = 0; j < k; j++) {
		slot[j] = ss->slot_of[l * E + ids[j]];
		if (slot[j] >= 0) {
			inuse[slot[j]] = 1;
			ss->slots[slot[j]].last_use = ++ss->clock;
			s->st.expert_hits++;
		}
	}
	t0 = llm_now_ms();
	for (int j = 0; j < k; j++) {
		int v = -1, key = l * E + ids[j];

		if (slot[j] >= 0)
			continue;
		v = llm_s_victim(ss, l, inuse);
		if (ss->slots[v].key >= 0)
			ss->slot_of[ss->slots[v].key] = -1;
		ss->slots[v].key = key;
		ss->slots[v].last_use = ++ss->clock;
		ss->slot_of[key] = v;
		inuse[v] = 1;
		slot[j] = v;
		tag[nmiss] = ss->next_tag++;
		miss[nmiss] = j;
		rc = ss->f.ops->submit(ss->f.ctx, llm_eoff(&s->lay, l, ids[j]), ss->slots[v].mem,
				       s->lay.expert_bytes, tag[nmiss]);
		if (rc) {
			ss->slot_of[key] = -1;
			ss->slots[v].key = -1;
			break;
		}
		nmiss++;
		s->st.expert_misses++;
		s->st.bytes_fetched += s->lay.expert_bytes;
		s->st.fetches++;
	}
	/* Misses are waited for in order before any expert computes, so each
	 * wait measures the true cold-load latency under this concurrency. */
	for (int i = 0; i < nmiss; i++) {
		int r = ss->f.ops->wait(ss->f.ctx, tag[i]);
		double ms = llm_now_ms() - t0;

		if (r) {
			int j = miss[i];

			ss->slot_of[l * E + ids[j]] = -1;
			ss->slots[slot[j]].key = -1;
			if (!rc)
				rc = r;
			continue;
		}
		if (llm_s_note_cold(&s->st, ms) && !rc)
			rc = -ENOMEM;
	}
	if (rc)
		return rc;
	for (int j = 0; j < k; j++)
		llm_expert_ptrs(&s->cfg, ss->slots[slot[j]].mem, &w[j]);
	return 0;
}

static void llm_s_close(struct llm_src *s)
{
	struct llm_ssrc *ss = (struct llm_ssrc *)s;

	for (int i = 0; i < LLM_STAGING; i++)
		if (ss->stage[i].state == LLM_BUF_INFLIGHT)
			llm_s_stage_wait(ss, &ss->stage[i]);
	if (ss->f.ops)
		ss->f.ops->close(ss->f.ctx);
	free(ss->units);
	free(ss->pin_arena);
	free(ss->stage_arena);
	free(ss->cache_arena);
	free(ss->slots);
	free(ss->slot_of);
	free(ss->inuse);
	free(ss->row);
	free(s->st.cold_ms);
	free(ss);
}

static const struct llm_src_ops llm_ssrc_ops = {
	.embed = llm_s_embed,
	.part = llm_s_part,
	.experts = llm_s_experts,
	.close = llm_s_close,
};

static uint64_t llm_round64(uint64_t v)
{
	return (v + 63) & ~(uint64_t)63;
}

/* Cut the model into units in forward order: every group of every layer,
 * then the classifier, each in parts of whole rows of at most ss->chunk
 * bytes (at least one row). */
static int llm_s_units(struct llm_ssrc *ss)
{
	uint64_t biggest = 0;
	struct llm_src *s = &ss->s;
	int G = s->n_groups, L = s->cfg.n_layers, u = 0;

	if (!ss->chunk) {
		/* Default: 8 MiB, or the largest layer matrix if smaller, so a
		 * small model's classifier is cut like its layers. */
		ss->chunk = LLM_STREAM_CHUNK;
		for (int g = 0; g < G; g++) {
			struct llm_geom ge;
			uint64_t b;

			llm_geom(s, 0, g, &ge);
			b = (uint64_t)ge.rows * llm_row_bytes(&s->cfg, ge.cols);
			if (g == 0 || b > biggest)
				biggest = b;
		}
		if (biggest < ss->chunk)
			ss->chunk = biggest;
	}
	for (int g = 0; g <= G; g++) {
		struct llm_geom ge;
		uint64_t rows;

		llm_geom(s, g == G ? L : 0, g == G ? 0 : g, &ge);
		rows = ss->chunk / llm_row_bytes(&s->cfg, ge.cols);
		if (rows < 1)
			rows = 1;
		if (rows > (uint64_t)ge.rows)
			rows = (uint64_t)ge.rows;
		ss->part_rows[g] = (int)rows;
		ss->parts[g] = (int)(((uint64_t)ge.rows + rows - 1) / rows);
		ss->first[g] = g ? ss->first[g - 1] + ss->parts[g - 1] : 0;
	}
	ss->per_layer = ss->first[G];
	if ((uint64_t)L * (uint64_t)ss->per_layer + (uint64_t)ss->parts[G] > (1u << 30))
		return -E2BIG;
	ss->n_units = L * ss->per_layer + ss->parts[G];
	ss->units = calloc((size_t)ss->n_units, sizeof(*ss->units));
	if (!ss->units)
		return -ENOMEM;
	for (int l = 0; l <= L; l++) {
		for (int g = 0; g < (l == L ? 1 : G); g++) {
			int gi = l == L ? G : g;
			struct llm_geom ge;

			llm_geom(s, l, g, &ge);
			for (int p = 0; p < ss->parts[gi]; p++, u++) {
				struct llm_unit *un = &ss->units[u];
				int r0 = p * ss->part_rows[gi];
				int r1 = r0 + ss->part_rows[gi] > ge.rows ? ge.rows
									  : r0 + ss->part_rows[gi];

				if (p == 0 && ge.vlen) {
					un->off[0] = ge.voff;
					un->len[0] = un->vlen = ge.vlen;
					un->nr = 1;
				}
				un->nr += llm_row_ranges(&s->cfg, &ge, r0, r1, un->off + un->nr,
							 un->len + un->nr);
				un->r0 = r0;
				un->r1 = r1;
				for (int i = 0; i < un->nr; i++)
					un->bytes += un->len[i];
			}
		}
	}
	return 0;
}

static int llm_s_plan(struct llm_ssrc *ss, uint64_t budget, char *err, size_t errlen)
{
	struct llm_src *s = &ss->s;
	uint64_t total = 0, maxu = 0, maxs = 0, min_cache = 0, avail, pinned = 0;
	uint64_t cum = 0, staging = 0, at, ebytes = s->lay.expert_bytes;
	int E = s->cfg.n_experts, L = s->cfg.n_layers;

	for (int u = 0; u < ss->n_units; u++) {
		total += llm_round64(ss->units[u].bytes);
		if (ss->units[u].bytes > maxu)
			maxu = ss->units[u].bytes;
	}
	if (E)
		min_cache = (uint64_t)s->cfg.top_k * ebytes;
	if (budget < min_cache) {
		snprintf(err, errlen,
			 "--local-mem %llu is below the %d experts one layer needs (%llu bytes)",
			 (unsigned long long)budget, s->cfg.top_k, (unsigned long long)min_cache);
		return -ENOBUFS;
	}
	avail = budget - min_cache;
	if (total > avail) {
		staging = LLM_STAGING * llm_round64(maxu);
		if (avail < staging) {
			snprintf(
				err, errlen,
				"--local-mem %llu is too small: streaming this model needs at least %llu bytes",
				(unsigned long long)budget,
				(unsigned long long)(min_cache + staging));
			return -ENOBUFS;
		}
		avail -= staging;
		/* Spread the pinned share evenly along the sequence. */
		for (int u = 0; u < ss->n_units; u++) {
			uint64_t b = llm_round64(ss->units[u].bytes);
			double ideal = (double)avail / (double)total * (double)(cum + b);

			cum += b;
			if ((double)(pinned + b) <= ideal + (double)b / 2 && pinned + b <= avail) {
				ss->units[u].pin = (unsigned char *)1;
				pinned += b;
			}
		}
		for (int u = 0; u < ss->n_units; u++) {
			uint64_t b = llm_round64(ss->units[u].bytes);

			if (!ss->units[u].pin && pinned + b <= avail) {
				ss->units[u].pin = (unsigned char *)1;
				pinned += b;
			}
		}
	} else {
		for (int u = 0; u < ss->n_units; u++)
			ss->units[u].pin = (unsigned char *)1;
		pinned = total;
	}
	for (int u = 0; u < ss->n_units; u++)
		if (!ss->units[u].pin && ss->units[u].bytes > maxs)
			maxs = ss->units[u].bytes;
	staging = maxs ? LLM_STAGING * llm_round64(maxs) : 0;

	if (pinned) {
		ss->pin_arena = malloc(pinned);
		if (!ss->pin_arena)
			return -ENOMEM;
	}
	at = 0;
	for (int u = 0; u < ss->n_units; u++) {
		if (!ss->units[u].pin)
			continue;
		ss->units[u].pin = ss->pin_arena + at;
		at += llm_round64(ss->units[u].bytes);
	}
	if (staging) {
		ss->stage_arena = malloc(staging);
		if (!ss->stage_arena)
			return -ENOMEM;
		/* Touch now: first-touch faults would otherwise be billed to
		 * the first tokens as if streaming caused them.  Not zero:
		 * the compiler turns malloc + memset 0 into calloc, which
		 * touches nothing. */
		memset(ss->stage_arena, 0x5a, staging);
		for (int i = 0; i < LLM_STAGING; i++) {
			ss->stage[i].mem = ss->stage_arena + (uint64_t)i * llm_round64(maxs);
			ss->stage[i].unit = -1;
		}
	}
	/* Next streamed unit after each unit, cyclically: what to prefetch.
	 * The first backward pass finds the first streamed unit, for the
	 * wrap-around of the second. */
	for (int pass = 0, nxt = -1; pass < 2; pass++) {
		for (int u = ss->n_units - 1; u >= 0; u--) {
			ss->units[u].next = nxt;
			if (!ss->units[u].pin)
				nxt = u;
		}
	}

	if (E) {
		uint64_t left = budget - staging - pinned;
		uint64_t n = left / ebytes, all = (uint64_t)L * (uint64_t)E;

		if (n > all)
			n = all;
		if (n > (1u << 20)) /* slot scans are linear; far beyond any budget */
			n = 1u << 20;
		ss->n_slots = (int)n;
		ss->cache_arena = malloc(n * ebytes);
		ss->slots = calloc(n, sizeof(*ss->slots));
		ss->slot_of = malloc(all * sizeof(int));
		ss->inuse = malloc(n);
		if (!ss->cache_arena || !ss->slots || !ss->slot_of || !ss->inuse)
			return -ENOMEM;
		memset(ss->cache_arena, 0x5a, n * ebytes);
		for (uint64_t i = 0; i < all; i++)
			ss->slot_of[i] = -1;
		for (int i = 0; i < ss->n_slots; i++) {
			ss->slots[i].key = -1;
			ss->slots[i].mem = ss->cache_arena + (uint64_t)i * ebytes;
		}
		s->st.cache_bytes = n * ebytes;
		s->st.cache_slots = ss->n_slots;
	}
	s->st.pinned_bytes = pinned;
	s->st.staging_bytes = staging;
	return 0;
}

int llm_weights_stream(struct llm_fetcher *f, uint64_t budget, uint64_t chunk, struct llm_src **out,
		       char *err, size_t errlen)
{
	struct llm_ssrc *ss = calloc(1, sizeof(*ss));
	unsigned char hdr[LLM_MOE_HEADER];
	size_t hl = f->size < LLM_MOE_HEADER ? f->size : LLM_MOE_HEADER;
	int rc;

	if (!ss) {
		f->ops->close(f->ctx);
		return -ENOMEM;
	}
	ss->f = *f;
	ss->s.ops = &llm_ssrc_ops;
	ss->chunk = chunk;
	memset(hdr, 0, sizeof(hdr));
	rc = hl ? llm_s_fetch_sync(ss, 0, hdr, hl) : 0;
	if (rc) {
		snprintf(err, errlen, "reading the checkpoint header: %s", strerror(-rc));
		goto fail;
	}
	rc = llm_src_init(&ss->s, hdr, hl, f->size, err, errlen);
	if (rc)
		goto fail;
	rc = llm_s_units(ss);
	if (!rc)
		rc = llm_s_plan(ss, budget, err, errlen);
	if (rc) {
		if (rc == -ENOMEM || rc == -E2BIG)
			snprintf(err, errlen, "%s planning the stream buffers",
				 rc == -E2BIG ? "too many parts (raise --stream-chunk)"
					      : "out of memory");
		goto fail;
	}
	ss->row = malloc((size_t)ss->s.cfg.dim * sizeof(float));
	if (!ss->row) {
		rc = -ENOMEM;
		goto fail;
	}
	/* Pinned units load once, here, and are never fetched again. */
	for (int u = 0; u < ss->n_units; u++) {
		struct llm_unit *un = &ss->units[u];
		uint64_t at = 0;

		if (!un->pin)
			continue;
		for (int i = 0; i < un->nr; i++) {
			rc = llm_s_fetch_sync(ss, un->off[i], un->pin + at, un->len[i]);
			if (rc) {
				snprintf(err, errlen, "loading pinned weights: %s", strerror(-rc));
				goto fail;
			}
			at += un->len[i];
		}
	}
	*out = &ss->s;
	return 0;
fail:
	llm_s_close(&ss->s);
	return rc;
}
