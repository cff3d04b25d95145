/*
 * _ethermem.c - the C half of the Python package: thin types over the public
 * API of libethermem (ethermem.h and nothing else).
 *
 * Pool, Region, Queue and Mapping wrap em_pool, em_region, em_queue and a
 * mapped address. Data moves through the buffer protocol: read() fills a new
 * bytes object in place, readinto()/write() hand the caller's own memory to
 * em_read/em_write, and a Mapping exports the mapped pages themselves, so
 * NumPy and PyTorch view pool memory with no copy at all. Every call that
 * waits on the network releases the GIL.
 *
 * Lifetimes: a Region keeps its Pool alive and a Mapping its Region, so the
 * library's handles are never freed under a live view. close() (and a `with`
 * block's end) closes what nothing still uses; a mapping that buffers still
 * view, and the region and pool under it, stay open until the last view is
 * released and the objects are collected, instead of pulling memory from
 * under a tensor. An object is "busy" while a call on it runs without the
 * GIL; closing it then raises rather than freeing what the call is using.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>

#include <errno.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "ethermem.h"
#include "llm/kvstore.h"

static PyObject *ErrorType;
static PyTypeObject CompletionType;

typedef struct RegionObject RegionObject;
typedef struct MapObject MapObject;
typedef struct QueueObject QueueObject;

typedef struct {
	PyObject_HEAD em_pool *pool; /* NULL once closed for good */
	int closed;                  /* no new work; the handle may linger for live views */
	int children;                /* open region and queue handles */
	int busy;                    /* calls running without the GIL */
	RegionObject *regions;
	QueueObject *queues;
} PoolObject;

struct RegionObject {
	PyObject_HEAD PoolObject *pool; /* strong */
	em_region *r;                   /* NULL once closed */
	uint64_t size;
	char name[EM_NAME_MAX + 1];
	int busy; /* calls and queued operations in flight */
	MapObject *maps;
	RegionObject *prev, *next; /* in pool->regions */
};

struct MapObject {
	PyObject_HEAD RegionObject *region; /* strong */
	void *addr;                         /* NULL once unmapped */
	size_t len;
	int readonly;
	Py_ssize_t exports;     /* buffer views handed out and not released */
	MapObject *prev, *next; /* in region->maps */
};

struct slot {
	Py_buffer view;
	int has_view;
	PyObject *user_data;  /* strong */
	RegionObject *region; /* strong */
};

struct QueueObject {
	PyObject_HEAD PoolObject *pool; /* strong */
	em_queue *q;                    /* NULL once closed */
	unsigned depth;
	struct slot *slots;
	unsigned *free; /* stack of free slot numbers */
	unsigned nfree;
	int busy;
	QueueObject *prev, *next; /* in pool->queues */
};

static PyTypeObject PoolType, RegionType, MapType, QueueType;

/* ---- errors and argument conversion ---- */

static PyObject *raise_em(int rc)
{
	int e = rc < 0 ? -rc : rc;
	PyObject *args = Py_BuildValue("(is)", e, em_strerror(e));

	if (args) {
		PyErr_SetObject(ErrorType, args);
		Py_DECREF(args);
	}
	return NULL;
}

/* O& converter: a non-negative int that fits 64 bits. */
static int to_u64(PyObject *o, void *out)
{
	unsigned long long v;

	if (!PyLong_Check(o)) {
		PyErr_Format(PyExc_TypeError, "expected an int, not %.100s", Py_TYPE(o)->tp_name);
		return 0;
	}
	v = PyLong_AsUnsignedLongLong(o);
	if (v == (unsigned long long)-1 && PyErr_Occurred()) {
		PyErr_SetString(PyExc_ValueError, "expected an int in [0, 2**64)");
		return 0;
	}
	*(uint64_t *)out = v;
	return 1;
}

/* O& converter: an int that fits a C int (a bad one is a ValueError, not
 * the OverflowError PyArg's own formats would give). */
static int to_int(PyObject *o, void *out)
{
	long v;
	int overflow;

	if (!PyLong_Check(o)) {
		PyErr_Format(PyExc_TypeError, "expected an int, not %.100s", Py_TYPE(o)->tp_name);
		return 0;
	}
	v = PyLong_AsLongAndOverflow(o, &overflow);
	if (overflow || v < INT_MIN || v > INT_MAX) {
		PyErr_SetString(PyExc_ValueError, "int out of range");
		return 0;
	}
	*(int *)out = (int)v;
	return 1;
}

/* O& converter: an int in [0, 2**32). */
static int to_uint(PyObject *o, void *out)
{
	uint64_t v;

	if (!to_u64(o, &v))
		return 0;
	if (v > UINT_MAX) {
		PyErr_SetString(PyExc_ValueError, "int out of range");
		return 0;
	}
	*(unsigned *)out = (unsigned)v;
	return 1;
}

/* O& converter for atomic operands: [-2**63, 2**64), kept as its 64 bits. */
static int to_word(PyObject *o, void *out)
{
	long long s;

	if (!PyLong_Check(o)) {
		PyErr_Format(PyExc_TypeError, "expected an int, not %.100s", Py_TYPE(o)->tp_name);
		return 0;
	}
	s = PyLong_AsLongLong(o);
	if (s == -1 && PyErr_Occurred()) {
		PyErr_Clear();
		return to_u64(o, out);
	}
	*(uint64_t *)out = (uint64_t)s;
	return 1;
}

/* O& converter for sizes: an int, or a string such as "512M" or "1.5G". */
static int to_size(PyObject *o, void *out)
{
	if (PyUnicode_Check(o)) {
		const char *s = PyUnicode_AsUTF8(o);
		if (!s)
			return 0;
		if (em_parse_size(s, out)) {
			PyErr_Format(PyExc_ValueError, "bad size '%s' (an int, or like 512M, 2G)",
				     s);
			return 0;
		}
		return 1;
	}
	return to_u64(o, out);
}

/* O& converter for optional strings: None or str. */
static int to_cstr(PyObject *o, void *out)
{
	if (o == Py_None) {
		*(const char **)out = NULL;
		return 1;
	}
	if (!PyUnicode_Check(o)) {
		PyErr_Format(PyExc_TypeError, "expected str or None, not %.100s",
			     Py_TYPE(o)->tp_name);
		return 0;
	}
	*(const char **)out = PyUnicode_AsUTF8(o);
	return *(const char **)out != NULL;
}

static const char *const atomic_names[EM_ATOMIC__COUNT] = {
	"cas", "fadd", "swap", "smin", "smax", "umin", "umax", "and", "or", "xor",
};

static int to_atomic_op(PyObject *o, void *out)
{
	if (PyUnicode_Check(o)) {
		const char *s = PyUnicode_AsUTF8(o);
		if (!s)
			return 0;
		for (int i = 0; i < EM_ATOMIC__COUNT; i++)
			if (!strcmp(s, atomic_names[i])) {
				*(int *)out = i;
				return 1;
			}
		PyErr_Format(PyExc_ValueError,
			     "unknown atomic operation '%s' (cas, fadd, swap, "
			     "smin, smax, umin, umax, and, or, xor)",
			     s);
		return 0;
	}
	if (PyLong_Check(o)) {
		long v = PyLong_AsLong(o);
		if (v >= 0 && v < EM_ATOMIC__COUNT) {
			*(int *)out = (int)v;
			return 1;
		}
		PyErr_Clear();
		PyErr_SetString(PyExc_ValueError, "atomic operation out of range");
		return 0;
	}
	PyErr_SetString(PyExc_TypeError, "atomic operation: a name such as 'fadd', or an int");
	return 0;
}

/* The caller's memory, C- or Fortran-contiguous; a wrong kind of object
 * is a TypeError, as for any other bad argument. */
static int get_buffer(PyObject *o, Py_buffer *view, int writable)
{
	if (PyObject_GetBuffer(o, view, PyBUF_ANY_CONTIGUOUS | (writable ? PyBUF_WRITABLE : 0))) {
		PyErr_Clear();
		PyErr_Format(PyExc_TypeError,
			     "expected a %scontiguous object with the buffer "
			     "protocol (bytearray, memoryview, numpy array ...), not %.100s",
			     writable ? "writable " : "", Py_TYPE(o)->tp_name);
		return -1;
	}
	return 0;
}

/* ---- Pool ---- */

static void pool_finish(PoolObject *p)
{
	if (p->pool && p->closed && p->children == 0) {
		em_pool *pool = p->pool;
		p->pool = NULL;
		Py_BEGIN_ALLOW_THREADS em_pool_close(pool);
		Py_END_ALLOW_THREADS
	}
}

static int pool_usable(PoolObject *p)
{
	if (p->closed || !p->pool) {
		PyErr_SetString(PyExc_ValueError, "the pool is closed");
		return -1;
	}
	return 0;
}

static int pool_init(PoolObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "nodes",    "secret_file", "config_file", "timeout_ms", "transport",
			       "ox_iface", "etcd",        "cluster",     "encrypt",    NULL };
	PyObject *nodes = Py_None, *joined = NULL, *encrypt = Py_None;
	const char *secret = NULL, *config = NULL, *transport = NULL, *iface = NULL;
	const char *etcd = NULL, *cluster = NULL;
	struct em_pool_opts o = { .size = sizeof(o) };
	int timeout = 0, rc;
	em_pool *pool;

	if (self->pool) {
		PyErr_SetString(PyExc_RuntimeError, "Pool is already initialised");
		return -1;
	}
	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O$O&O&O&O&O&O&O&O:Pool", kwl, &nodes, to_cstr,
					 &secret, to_cstr, &config, to_int, &timeout, to_cstr,
					 &transport, to_cstr, &iface, to_cstr, &etcd, to_cstr,
					 &cluster, &encrypt))
		return -1;
	/* None defers to ETHERMEM_ENCRYPT and the config file; False must say
	 * "off" explicitly, since 0 in the struct means "not said" */
	if (encrypt == Py_None) {
		o.encrypt = 0;
	} else if (PyBool_Check(encrypt)) {
		o.encrypt = encrypt == Py_True ? 1 : -1;
	} else {
		PyErr_SetString(PyExc_TypeError, "encrypt: True, False or None");
		return -1;
	}
	if (timeout < 0) {
		PyErr_SetString(PyExc_ValueError, "timeout_ms must be >= 0");
		return -1;
	}
	if (PyUnicode_Check(nodes)) {
		joined = Py_NewRef(nodes);
	} else if (nodes != Py_None) {
		PyObject *sep = PyUnicode_FromString(","), *seq;
		if (!sep)
			return -1;
		seq = PySequence_Fast(nodes, "nodes: a string or a sequence of strings");
		if (!seq) {
			Py_DECREF(sep);
			PyErr_SetString(PyExc_TypeError,
					"nodes: a string or a sequence of strings");
			return -1;
		}
		joined = PyUnicode_Join(sep, seq);
		Py_DECREF(sep);
		Py_DECREF(seq);
		if (!joined) {
			PyErr_SetString(PyExc_TypeError,
					"nodes: a string or a sequence of strings");
			return -1;
		}
	}
	if (joined && !(o.nodes = PyUnicode_AsUTF8(joined))) {
		Py_DECREF(joined);
		return -1;
	}
	if (!transport)
		o.transport = EM_TRANSPORT_DEFAULT;
	else if (!strcmp(transport, "tcp"))
		o.transport = EM_TRANSPORT_TCP;
	else if (!strcmp(transport, "ox"))
		o.transport = EM_TRANSPORT_OX;
	else {
		Py_XDECREF(joined);
		PyErr_Format(PyExc_ValueError, "transport: 'tcp', 'ox' or None, not '%s'",
			     transport);
		return -1;
	}
	o.secret_file = secret;
	o.config_file = config;
	o.timeout_ms = timeout;
	o.ox_iface = iface;
	o.etcd = etcd;
	o.cluster = cluster;
	Py_BEGIN_ALLOW_THREADS rc = em_pool_connect(&pool, &o);
	Py_END_ALLOW_THREADS Py_XDECREF(joined);
	if (rc) {
		raise_em(rc);
		return -1;
	}
	self->pool = pool;
	self->closed = 0;
	return 0;
}

static int region_close_impl(RegionObject *r, int quiet);
static int queue_close_impl(QueueObject *q, int quiet);

static PyObject *pool_close(PoolObject *self, PyObject *unused)
{
	if (self->busy) {
		PyErr_SetString(PyExc_RuntimeError, "the pool is in use by another thread");
		return NULL;
	}
	self->closed = 1;
	/* Close what nothing still uses; pinned regions keep the handle open
	 * until they go (pool_finish then runs from their close). */
	for (QueueObject *q = self->queues, *n; q; q = n) {
		n = q->next;
		queue_close_impl(q, 1);
	}
	for (RegionObject *r = self->regions, *n; r; r = n) {
		n = r->next;
		region_close_impl(r, 1);
	}
	pool_finish(self);
	Py_RETURN_NONE;
}

static PyObject *pool_enter(PyObject *self, PyObject *unused)
{
	return Py_NewRef(self);
}

static PyObject *pool_exit(PyObject *self, PyObject *args)
{
	PyObject *r = pool_close((PoolObject *)self, NULL);
	if (!r)
		return NULL;
	Py_DECREF(r);
	Py_RETURN_FALSE;
}

static void pool_dealloc(PoolObject *self)
{
	/* regions and queues hold references, so none is left here */
	self->closed = 1;
	pool_finish(self);
	Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *region_new(PoolObject *p, em_region *r, const char *name)
{
	RegionObject *o = PyObject_New(RegionObject, &RegionType);

	if (!o) {
		em_region_close(r);
		return NULL;
	}
	o->pool = (PoolObject *)Py_NewRef(p);
	o->r = r;
	o->size = em_region_size(r);
	snprintf(o->name, sizeof(o->name), "%s", name ? name : "");
	o->busy = 0;
	o->maps = NULL;
	o->prev = NULL;
	o->next = p->regions;
	if (p->regions)
		p->regions->prev = o;
	p->regions = o;
	p->children++;
	return (PyObject *)o;
}

static int check_name(const char *name)
{
	if (name && (!*name || strlen(name) > EM_NAME_MAX)) {
		PyErr_Format(PyExc_ValueError, "a region name has 1 to %d bytes", EM_NAME_MAX);
		return -1;
	}
	return 0;
}

static PyObject *pool_create(PoolObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "size", "name", "chunk_size", "exclusive", "redundancy", NULL };
	struct em_region_opts o = { .size = sizeof(o) };
	uint64_t size = 0, chunk = 0;
	const char *name = NULL, *red = NULL;
	int excl = 0, rc;
	em_region *r;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O&$O&pz:create", kwl, to_size, &size,
					 to_cstr, &name, to_size, &chunk, &excl, &red))
		return NULL;
	if (pool_usable(self) || check_name(name))
		return NULL;
	if (!size) {
		PyErr_SetString(PyExc_ValueError, "size must be > 0");
		return NULL;
	}
	if (red && em_parse_redundancy(red, &o)) {
		PyErr_Format(PyExc_ValueError,
			     "redundancy is 'none', 'replicate:N' (2..16) or 'ec:K+M', not '%s'",
			     red);
		return NULL;
	}
	o.chunk_size = chunk;
	o.flags = excl ? EM_REGION_EXCL : 0;
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_region_create(self->pool, name, size, &o, &r);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc)
		return raise_em(rc);
	return region_new(self, r, name);
}

static PyObject *pool_open(PoolObject *self, PyObject *args)
{
	const char *name;
	em_region *r;
	int rc;

	if (!PyArg_ParseTuple(args, "s:open", &name))
		return NULL;
	if (pool_usable(self) || check_name(name))
		return NULL;
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_region_open(self->pool, name, &r);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc)
		return raise_em(rc);
	return region_new(self, r, name);
}

static PyObject *pool_delete(PoolObject *self, PyObject *args)
{
	const char *name;
	int rc;

	if (!PyArg_ParseTuple(args, "s:delete", &name))
		return NULL;
	if (pool_usable(self) || check_name(name))
		return NULL;
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_region_delete(self->pool, name);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc)
		return raise_em(rc);
	Py_RETURN_NONE;
}

static PyObject *pool_regions(PoolObject *self, PyObject *unused)
{
	struct em_region_info *info = NULL;
	unsigned max = 64;
	int n;
	PyObject *list;

	if (pool_usable(self))
		return NULL;
	for (;;) {
		struct em_region_info *ni = PyMem_Realloc(info, max * sizeof(*info));
		if (!ni) {
			PyMem_Free(info);
			return PyErr_NoMemory();
		}
		info = ni;
		info[0].size = sizeof(info[0]); /* the array's stride, see ethermem.h */
		self->busy++;
		Py_BEGIN_ALLOW_THREADS n = em_region_list(self->pool, info, max);
		Py_END_ALLOW_THREADS self->busy--;
		if (n < 0) {
			PyMem_Free(info);
			return raise_em(n);
		}
		if ((unsigned)n <= max)
			break;
		max = (unsigned)n + 16; /* grew meanwhile: ask again */
	}
	list = PyList_New(0);
	for (int i = 0; list && i < n; i++) {
		static const char *const states[] = { "healthy", "degraded", "repairing" };
		char red[32];
		PyObject *d;

		if (info[i].redundancy == EM_RED_REPLICATE)
			snprintf(red, sizeof(red), "replicate:%u", info[i].red_k);
		else if (info[i].redundancy == EM_RED_EC)
			snprintf(red, sizeof(red), "ec:%u+%u", info[i].red_k, info[i].red_m);
		else
			snprintf(red, sizeof(red), "none");
		d = Py_BuildValue("{s:s,s:K,s:K,s:I,s:s,s:s,s:I}", "name", info[i].name, "size",
				  (unsigned long long)info[i].bytes, "chunk_size",
				  (unsigned long long)info[i].chunk_size, "nodes", info[i].nodes,
				  "redundancy", red, "state",
				  info[i].state < 3 ? states[info[i].state] : "unknown", "epoch",
				  info[i].epoch);
		if (!d || PyList_Append(list, d)) {
			Py_XDECREF(d);
			Py_CLEAR(list);
			break;
		}
		Py_DECREF(d);
	}
	PyMem_Free(info);
	return list;
}

static const char *const op_names[EM_STAT_OPS] = {
	"read", "write", "atomic", "create", "open", "delete", "list", "status",
};

static PyObject *node_dict(const struct em_node_status *s)
{
	PyObject *d = PyDict_New(), *ops = PyDict_New(), *errs = PyDict_New(), *lat = PyDict_New();
	PyObject *v;
	int bad = !d || !ops || !errs || !lat;

#define PUT(dict, key, val)                                             \
	do {                                                            \
		if (!bad) {                                             \
			v = (val);                                      \
			bad = !v || PyDict_SetItemString(dict, key, v); \
			Py_XDECREF(v);                                  \
		}                                                       \
	} while (0)
#define U(x) PyLong_FromUnsignedLongLong((unsigned long long)(x))
	PUT(d, "addr", PyUnicode_FromString(s->addr));
	PUT(d, "capacity", U(s->capacity));
	PUT(d, "used", U(s->used));
	PUT(d, "regions", U(s->regions));
	PUT(d, "named_regions", U(s->named_regions));
	PUT(d, "clients", U(s->clients));
	PUT(d, "huge_pages", PyBool_FromLong(s->huge_pages));
	PUT(d, "uptime_s", U(s->uptime_s));
	for (int i = 0; i < EM_STAT_OPS; i++) {
		PUT(ops, op_names[i], U(s->ops[i]));
		PUT(errs, op_names[i], U(s->errors[i]));
	}
	for (int i = 0; i < 3; i++)
		PUT(lat, op_names[i],
		    Py_BuildValue("{s:K,s:K,s:K}", "p50", (unsigned long long)s->lat_p50_ns[i],
				  "p99", (unsigned long long)s->lat_p99_ns[i], "p999",
				  (unsigned long long)s->lat_p999_ns[i]));
	PUT(d, "ops", Py_NewRef(ops));
	PUT(d, "errors", Py_NewRef(errs));
	PUT(d, "latency_ns", Py_NewRef(lat));
	PUT(d, "bytes_in", U(s->bytes_in));
	PUT(d, "bytes_out", U(s->bytes_out));
	PUT(d, "auth_failures", U(s->auth_failures));
	PUT(d, "ox",
	    Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K,s:I}", "rx_frames",
			  (unsigned long long)s->ox_rx_frames, "tx_frames",
			  (unsigned long long)s->ox_tx_frames, "retransmits",
			  (unsigned long long)s->ox_retransmits, "denied",
			  (unsigned long long)s->ox_denied, "unknown",
			  (unsigned long long)s->ox_unknown, "malformed",
			  (unsigned long long)s->ox_malformed, "attached", s->ox_attached));
#undef U
#undef PUT
	Py_XDECREF(ops);
	Py_XDECREF(errs);
	Py_XDECREF(lat);
	if (bad) {
		Py_XDECREF(d);
		return NULL;
	}
	return d;
}

static PyObject *pool_status(PoolObject *self, PyObject *unused)
{
	struct em_node_status *st;
	unsigned max;
	PyObject *list;
	int n;

	if (pool_usable(self))
		return NULL;
	max = (unsigned)em_pool_nodes(self->pool);
	st = PyMem_Calloc(max ? max : 1, sizeof(*st));
	if (!st)
		return PyErr_NoMemory();
	st[0].size = sizeof(st[0]);
	self->busy++;
	Py_BEGIN_ALLOW_THREADS n = em_pool_status(self->pool, st, max);
	Py_END_ALLOW_THREADS self->busy--;
	if (n < 0) {
		PyMem_Free(st);
		return raise_em(n);
	}
	list = PyList_New(0);
	for (int i = 0; list && i < n && (unsigned)i < max; i++) {
		PyObject *d = node_dict(&st[i]);
		if (!d || PyList_Append(list, d))
			Py_CLEAR(list);
		Py_XDECREF(d);
	}
	PyMem_Free(st);
	return list;
}

static PyObject *pool_queue(PoolObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "depth", NULL };
	unsigned depth = 64;
	QueueObject *q;
	em_queue *eq;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O&:queue", kwl, to_uint, &depth))
		return NULL;
	if (pool_usable(self))
		return NULL;
	if (depth == 0 || depth > 65536) {
		PyErr_SetString(PyExc_ValueError, "depth must be in [1, 65536]");
		return NULL;
	}
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_queue_create(self->pool, depth, &eq);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc)
		return raise_em(rc);
	q = PyObject_New(QueueObject, &QueueType);
	if (!q) {
		em_queue_destroy(eq);
		return NULL;
	}
	q->pool = (PoolObject *)Py_NewRef(self);
	q->q = eq;
	q->depth = depth;
	q->busy = 0;
	q->slots = PyMem_Calloc(depth, sizeof(*q->slots));
	q->free = PyMem_Calloc(depth, sizeof(*q->free));
	q->nfree = depth;
	for (unsigned i = 0; q->free && i < depth; i++)
		q->free[i] = depth - 1 - i;
	q->prev = NULL;
	q->next = self->queues;
	if (self->queues)
		self->queues->prev = q;
	self->queues = q;
	self->children++;
	if (!q->slots || !q->free) {
		Py_DECREF(q);
		return PyErr_NoMemory();
	}
	return (PyObject *)q;
}

static PyObject *pool_get_nodes(PoolObject *self, void *c)
{
	if (pool_usable(self))
		return NULL;
	return PyLong_FromLong(em_pool_nodes(self->pool));
}

static PyObject *pool_get_closed(PoolObject *self, void *c)
{
	return PyBool_FromLong(self->closed);
}

static PyObject *pool_kv_store(PoolObject *self, PyObject *args, PyObject *kw);

static PyMethodDef pool_methods[] = {
	{ "create", (PyCFunction)(void (*)(void))pool_create, METH_VARARGS | METH_KEYWORDS,
	  "create(size, name=None, *, chunk_size=0, exclusive=False, redundancy=None) -> Region\n\n"
	  "Creates a region of size bytes (an int or a string like '512M'). Without a\n"
	  "name it is anonymous and freed when the pool closes; with one it persists\n"
	  "until delete(name), and creating an existing name of the same size opens it\n"
	  "unless exclusive is true. chunk_size is the striping unit over nodes;\n"
	  "redundancy is 'none', 'replicate:N' or 'ec:K+M' (default: the pool's)." },
	{ "open", (PyCFunction)pool_open, METH_VARARGS,
	  "open(name) -> Region\n\nOpens an existing named region." },
	{ "delete", (PyCFunction)pool_delete, METH_VARARGS,
	  "delete(name)\n\nDeletes a named region on every node; handles open elsewhere\n"
	  "get ENOENT on their next access." },
	{ "regions", (PyCFunction)pool_regions, METH_NOARGS,
	  "regions() -> list of dict\n\nThe named regions: name, size, chunk_size, nodes,\n"
	  "redundancy ('none', 'replicate:N', 'ec:K+M'), state ('healthy', 'degraded',\n"
	  "'repairing') and epoch." },
	{ "status", (PyCFunction)pool_status, METH_NOARGS,
	  "status() -> list of dict\n\nOne dict per node: capacity, used, regions, clients,\n"
	  "per-operation counters (ops, errors), latency_ns percentiles, bytes_in/out,\n"
	  "auth_failures and OmniXtend counters (ox)." },
	{ "queue", (PyCFunction)(void (*)(void))pool_queue, METH_VARARGS | METH_KEYWORDS,
	  "queue(depth=64) -> Queue\n\nA queue of up to depth asynchronous operations in\n"
	  "flight, over its own connections to the nodes." },
	{ "kv_store", (PyCFunction)(void (*)(void))pool_kv_store, METH_VARARGS | METH_KEYWORDS,
	  "kv_store(name, capacity=0, value_max=0, create=True, *, redundancy=None) -> KVStore\n\n"
	  "Opens the block store in named region name, creating it (capacity bytes of\n"
	  "values, default 64M; values up to value_max bytes, default 64K) if absent and\n"
	  "create is true. An existing store keeps its own geometry. redundancy when\n"
	  "creating: 'none' or 'replicate:N' (default: the pool's); an EC store is\n"
	  "refused (EOPNOTSUPP: EC regions have no atomics)." },
	{ "close", (PyCFunction)pool_close, METH_NOARGS,
	  "close()\n\nCloses the pool's queues and regions, then the pool. A mapping still\n"
	  "viewed by buffers (numpy arrays, tensors) keeps its region and the connection\n"
	  "open until the last view is gone; everything else is closed now." },
	{ "__enter__", pool_enter, METH_NOARGS, NULL },
	{ "__exit__", pool_exit, METH_VARARGS, NULL },
	{ NULL },
};

static PyGetSetDef pool_getset[] = {
	{ "nodes", (getter)pool_get_nodes, NULL, "number of nodes in the pool", NULL },
	{ "closed", (getter)pool_get_closed, NULL, "True once close() was called", NULL },
	{ NULL },
};

static PyTypeObject PoolType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ethermem.Pool",
	.tp_basicsize = sizeof(PoolObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Pool(nodes=None, *, secret_file=None, config_file=None, timeout_ms=0,\n"
		  "     transport=None, ox_iface=None, etcd=None, cluster=None, encrypt=None)\n\n"
		  "A connection to the memory nodes of a pool. Arguments left out come from\n"
		  "the environment (ETHERMEM_NODES, ETHERMEM_SECRET_FILE, ETHERMEM_CONFIG,\n"
		  "ETHERMEM_TIMEOUT_MS, ETHERMEM_TRANSPORT, ETHERMEM_ETCD, ETHERMEM_CLUSTER,\n"
		  "ETHERMEM_ENCRYPT) or the client config file.\n"
		  "nodes: 'tcp://h1:7420,tcp://h2:7420' or a list of such URLs; transport:\n"
		  "'tcp' or 'ox'. etcd: 'http://h:2379[,...]': the nodes are those registered\n"
		  "in etcd under cluster (default 'ethermem') and named regions live in its\n"
		  "directory. encrypt: True encrypts every connection (a node that cannot\n"
		  "fails the connect), False never does, None follows the environment.\n"
		  "A context manager: leaving the block closes it.",
	.tp_new = PyType_GenericNew,
	.tp_init = (initproc)pool_init,
	.tp_dealloc = (destructor)pool_dealloc,
	.tp_methods = pool_methods,
	.tp_getset = pool_getset,
};

/* ---- Region ---- */

static int region_usable(RegionObject *r)
{
	if (!r->r) {
		PyErr_SetString(PyExc_ValueError, "the region is closed");
		return -1;
	}
	return pool_usable(r->pool);
}

static int map_unmap(MapObject *m, int quiet);

/* quiet: called from Pool.close, which skips what is still in use. */
static int region_close_impl(RegionObject *r, int quiet)
{
	em_region *h = r->r;
	int rc;

	if (!h)
		return 0;
	if (r->busy) {
		if (!quiet)
			PyErr_SetString(PyExc_RuntimeError,
					"the region has calls or queued operations in flight");
		return -1;
	}
	for (MapObject *m = r->maps; m; m = m->next)
		if (m->exports) {
			if (!quiet)
				PyErr_Format(
					PyExc_BufferError,
					"a mapping of the region is still viewed by %zd buffer(s)",
					m->exports);
			return -1;
		}
	for (MapObject *m = r->maps, *n; m; m = n) {
		n = m->next;
		map_unmap(m, 1);
	}
	r->r = NULL;
	Py_BEGIN_ALLOW_THREADS rc = em_region_close(h);
	Py_END_ALLOW_THREADS if (r->prev) r->prev->next = r->next;
	else r->pool->regions = r->next;
	if (r->next)
		r->next->prev = r->prev;
	r->prev = r->next = NULL;
	r->pool->children--;
	pool_finish(r->pool);
	if (rc && !quiet) {
		raise_em(rc);
		return -1;
	}
	return 0;
}

static PyObject *region_close(RegionObject *self, PyObject *unused)
{
	if (region_close_impl(self, 0))
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *region_exit(PyObject *self, PyObject *args)
{
	if (region_close_impl((RegionObject *)self, 0))
		return NULL;
	Py_RETURN_FALSE;
}

static void region_dealloc(RegionObject *self)
{
	/* mappings hold references, so none is left; nothing is in flight */
	region_close_impl(self, 1);
	Py_DECREF(self->pool);
	PyObject_Free(self);
}

static int check_range(RegionObject *r, uint64_t off, uint64_t len)
{
	if (off > r->size || len > r->size - off) {
		PyErr_Format(PyExc_ValueError,
			     "offset %llu + length %llu is past the region's end (%llu bytes)",
			     (unsigned long long)off, (unsigned long long)len,
			     (unsigned long long)r->size);
		return -1;
	}
	return 0;
}

static PyObject *region_read(RegionObject *self, PyObject *args)
{
	uint64_t off, n;
	PyObject *out;
	int rc;

	if (!PyArg_ParseTuple(args, "O&O&:read", to_u64, &off, to_u64, &n))
		return NULL;
	if (region_usable(self) || check_range(self, off, n))
		return NULL;
	if (n > PY_SSIZE_T_MAX)
		return PyErr_NoMemory();
	out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)n);
	if (!out)
		return NULL;
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_read(self->r, off, PyBytes_AS_STRING(out), n);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc) {
		Py_DECREF(out);
		return raise_em(rc);
	}
	return out;
}

static PyObject *region_rw(RegionObject *self, PyObject *args, int write)
{
	uint64_t off;
	PyObject *obj;
	Py_buffer view;
	int rc;

	if (!PyArg_ParseTuple(args, write ? "O&O:write" : "O&O:readinto", to_u64, &off, &obj))
		return NULL;
	if (region_usable(self) || get_buffer(obj, &view, !write))
		return NULL;
	if (check_range(self, off, (uint64_t)view.len)) {
		PyBuffer_Release(&view);
		return NULL;
	}
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = write ? em_write(self->r, off, view.buf, (size_t)view.len)
					  : em_read(self->r, off, view.buf, (size_t)view.len);
	Py_END_ALLOW_THREADS self->busy--;
	PyBuffer_Release(&view);
	if (rc)
		return raise_em(rc);
	return PyLong_FromSsize_t(view.len);
}

static PyObject *region_readinto(RegionObject *self, PyObject *args)
{
	return region_rw(self, args, 0);
}

static PyObject *region_write(RegionObject *self, PyObject *args)
{
	return region_rw(self, args, 1);
}

static PyObject *do_atomic(RegionObject *self, uint64_t off, int op, uint64_t operand,
			   uint64_t compare)
{
	uint64_t old = 0;
	int rc;

	if (region_usable(self) || check_range(self, off, 8))
		return NULL;
	if (off % 8) {
		PyErr_SetString(PyExc_ValueError, "atomics need an offset aligned to 8 bytes");
		return NULL;
	}
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc =
		em_atomic(self->r, off, (enum em_atomic_op)op, operand, compare, &old);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc)
		return raise_em(rc);
	return PyLong_FromUnsignedLongLong(old);
}

static PyObject *region_atomic(RegionObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "offset", "op", "operand", "compare", NULL };
	uint64_t off, operand = 0, compare = 0;
	int op;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O&O&|O&O&:atomic", kwl, to_u64, &off,
					 to_atomic_op, &op, to_word, &operand, to_word, &compare))
		return NULL;
	return do_atomic(self, off, op, operand, compare);
}

static PyObject *region_fetch_add(RegionObject *self, PyObject *args)
{
	uint64_t off, v;

	if (!PyArg_ParseTuple(args, "O&O&:fetch_add", to_u64, &off, to_word, &v))
		return NULL;
	return do_atomic(self, off, EM_ATOMIC_FADD, v, 0);
}

static PyObject *region_cas(RegionObject *self, PyObject *args)
{
	uint64_t off, expected, desired;

	if (!PyArg_ParseTuple(args, "O&O&O&:cas", to_u64, &off, to_word, &expected, to_word,
			      &desired))
		return NULL;
	return do_atomic(self, off, EM_ATOMIC_CAS, desired, expected);
}

static PyObject *region_map(RegionObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "offset",   "length", "cache",   "fetch_unit", "readonly",
			       "prefetch", "fresh",  "scratch", "timeout_ms", NULL };
	struct em_map_opts o = { .size = sizeof(o) };
	uint64_t off = 0, len = 0, unit = 0, cache = 0;
	PyObject *cache_obj = Py_None;
	int ro = 0, prefetch = 1, fresh = 0, scratch = 0, timeout = 0, rc;
	void *addr;
	MapObject *m;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O&O&$OO&ppppO&:map", kwl, to_u64, &off,
					 to_size, &len, &cache_obj, to_size, &unit, &ro, &prefetch,
					 &fresh, &scratch, to_int, &timeout))
		return NULL;
	if (region_usable(self))
		return NULL;
	if (cache_obj != Py_None && !to_size(cache_obj, &cache))
		return NULL;
	if (off % 4096) {
		PyErr_SetString(PyExc_ValueError, "offset must be a multiple of 4096");
		return NULL;
	}
	if (check_range(self, off, len))
		return NULL;
	if (!len)
		len = self->size - off;
	if (!len || len > PY_SSIZE_T_MAX) {
		PyErr_SetString(PyExc_ValueError, "nothing to map");
		return NULL;
	}
	if (unit && (unit < 4096 || unit > (2u << 20) || (unit & (unit - 1)))) {
		PyErr_SetString(PyExc_ValueError, "fetch_unit: a power of two from 4K to 2M");
		return NULL;
	}
	if (timeout < 0) {
		PyErr_SetString(PyExc_ValueError, "timeout_ms must be >= 0");
		return NULL;
	}
	if (cache_obj != Py_None && (rc = em_map_cache_size(cache)))
		return raise_em(rc);
	o.offset = off;
	o.length = len;
	o.fetch_unit = unit;
	o.timeout_ms = timeout;
	o.flags = (ro ? EM_MAP_READONLY : 0) | (prefetch ? 0 : EM_MAP_NOPREFETCH) |
		  (fresh ? EM_MAP_FRESH : 0) | (scratch ? EM_MAP_SCRATCH : 0);
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_map(self->r, &o, &addr);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc)
		return raise_em(rc);
	m = PyObject_New(MapObject, &MapType);
	if (!m) {
		em_unmap(addr);
		return NULL;
	}
	m->region = (RegionObject *)Py_NewRef(self);
	m->addr = addr;
	m->len = (size_t)len;
	m->readonly = ro;
	m->exports = 0;
	m->prev = NULL;
	m->next = self->maps;
	if (self->maps)
		self->maps->prev = m;
	self->maps = m;
	return (PyObject *)m;
}

static PyObject *region_get_size(RegionObject *self, void *c)
{
	return PyLong_FromUnsignedLongLong(self->size);
}

static PyObject *region_get_name(RegionObject *self, void *c)
{
	if (!self->name[0])
		Py_RETURN_NONE;
	return PyUnicode_FromString(self->name);
}

static PyObject *region_get_closed(RegionObject *self, void *c)
{
	return PyBool_FromLong(!self->r);
}

static PyObject *region_get_pool(RegionObject *self, void *c)
{
	return Py_NewRef(self->pool);
}

static PyObject *region_repr(RegionObject *self)
{
	return PyUnicode_FromFormat("<ethermem.Region %s%s%s size=%llu%s>",
				    self->name[0] ? "'" : "",
				    self->name[0] ? self->name : "anonymous",
				    self->name[0] ? "'" : "", (unsigned long long)self->size,
				    self->r ? "" : " closed");
}

/* Not API: the C loop that the benchmark sets beside readinto(), run in
 * the same process on the same region. */
static PyObject *region_c_read_loop(RegionObject *self, PyObject *args)
{
	uint64_t off, len, iters;
	struct timespec t0, t1;
	void *buf;
	int rc = 0;

	if (!PyArg_ParseTuple(args, "O&O&O&", to_u64, &off, to_u64, &len, to_u64, &iters))
		return NULL;
	if (region_usable(self) || check_range(self, off, len))
		return NULL;
	buf = PyMem_RawMalloc(len ? len : 1);
	if (!buf)
		return PyErr_NoMemory();
	self->busy++;
	Py_BEGIN_ALLOW_THREADS clock_gettime(CLOCK_MONOTONIC, &t0);
	for (uint64_t i = 0; i < iters && !rc; i++)
		rc = em_read(self->r, off, buf, len);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	Py_END_ALLOW_THREADS self->busy--;
	PyMem_RawFree(buf);
	if (rc)
		return raise_em(rc);
	return PyFloat_FromDouble((double)(t1.tv_sec - t0.tv_sec) +
				  (double)(t1.tv_nsec - t0.tv_nsec) / 1e9);
}

static PyMethodDef region_methods[] = {
	{ "read", (PyCFunction)region_read, METH_VARARGS,
	  "read(offset, n) -> bytes\n\nReads n bytes at offset into a new bytes object." },
	{ "readinto", (PyCFunction)region_readinto, METH_VARARGS,
	  "readinto(offset, buffer) -> int\n\nFills a writable contiguous buffer (bytearray,\n"
	  "memoryview, numpy array, tensor.numpy()) from offset, straight into its memory;\n"
	  "returns the number of bytes read." },
	{ "write", (PyCFunction)region_write, METH_VARARGS,
	  "write(offset, buffer) -> int\n\nWrites a contiguous buffer at offset from its own\n"
	  "memory; returns the number of bytes written." },
	{ "atomic", (PyCFunction)(void (*)(void))region_atomic, METH_VARARGS | METH_KEYWORDS,
	  "atomic(offset, op, operand=0, compare=0) -> int\n\nA remote atomic on the 64-bit\n"
	  "word at offset (8-byte aligned): op is 'cas', 'fadd', 'swap', 'smin', 'smax',\n"
	  "'umin', 'umax', 'and', 'or' or 'xor'. Returns the old value, unsigned." },
	{ "fetch_add", (PyCFunction)region_fetch_add, METH_VARARGS,
	  "fetch_add(offset, value) -> int\n\nAdds value to the word at offset; returns the old value." },
	{ "cas", (PyCFunction)region_cas, METH_VARARGS,
	  "cas(offset, expected, desired) -> int\n\nStores desired if the word equals expected;\n"
	  "returns the old value (equal to expected when it swapped)." },
	{ "map", (PyCFunction)(void (*)(void))region_map, METH_VARARGS | METH_KEYWORDS,
	  "map(offset=0, length=0, *, cache=None, fetch_unit=0, readonly=False,\n"
	  "    prefetch=True, fresh=False, scratch=False, timeout_ms=0) -> Mapping\n\n"
	  "Maps the region (or length bytes from offset, a multiple of 4096) into memory;\n"
	  "pages are fetched from the pool on first touch. cache sets the process-wide\n"
	  "local cache budget (bytes or '2G'); fetch_unit is 4K..2M (default 64K). The\n"
	  "Mapping has the buffer protocol: numpy.frombuffer(m, dtype) and\n"
	  "torch.frombuffer(m, dtype=...) view pool memory directly. close() refuses\n"
	  "while buffer views exist; torch.frombuffer(m) keeps the object but no view,\n"
	  "so give it memoryview(m) (or keep m open while such tensors live)." },
	{ "close", (PyCFunction)region_close, METH_NOARGS,
	  "close()\n\nDrops this handle (an anonymous region is freed). Unmaps its mappings;\n"
	  "raises BufferError while one is still viewed by buffers." },
	{ "_c_read_loop", (PyCFunction)region_c_read_loop, METH_VARARGS,
	  "_c_read_loop(offset, length, iterations) -> seconds\n\nBenchmark baseline: em_read\n"
	  "in a C loop, no Python in between." },
	{ "__enter__", pool_enter, METH_NOARGS, NULL },
	{ "__exit__", region_exit, METH_VARARGS, NULL },
	{ NULL },
};

static PyGetSetDef region_getset[] = {
	{ "size", (getter)region_get_size, NULL, "bytes in the region", NULL },
	{ "name", (getter)region_get_name, NULL, "the name, or None when anonymous", NULL },
	{ "closed", (getter)region_get_closed, NULL, "True once closed", NULL },
	{ "pool", (getter)region_get_pool, NULL, "the Pool it belongs to", NULL },
	{ NULL },
};

static PyTypeObject RegionType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ethermem.Region",
	.tp_basicsize = sizeof(RegionObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A byte range in the pool, from Pool.create() or Pool.open(). A context\n"
		  "manager: leaving the block closes it.",
	.tp_dealloc = (destructor)region_dealloc,
	.tp_methods = region_methods,
	.tp_getset = region_getset,
	.tp_repr = (reprfunc)region_repr,
};

/* ---- Mapping ---- */

static int map_unmap(MapObject *m, int quiet)
{
	void *addr = m->addr;
	int rc;

	if (!addr)
		return 0;
	if (m->exports) {
		if (!quiet)
			PyErr_Format(PyExc_BufferError,
				     "the mapping is still viewed by %zd buffer(s)", m->exports);
		return -1;
	}
	m->addr = NULL;
	Py_BEGIN_ALLOW_THREADS rc = em_unmap(addr); /* writes back what is dirty */
	Py_END_ALLOW_THREADS if (m->prev) m->prev->next = m->next;
	else m->region->maps = m->next;
	if (m->next)
		m->next->prev = m->prev;
	m->prev = m->next = NULL;
	if (rc && !quiet) {
		raise_em(rc);
		return -1;
	}
	return 0;
}

static int map_getbuffer(MapObject *self, Py_buffer *view, int flags)
{
	if (!self->addr) {
		PyErr_SetString(PyExc_BufferError, "the mapping is closed");
		view->obj = NULL;
		return -1;
	}
	if (PyBuffer_FillInfo(view, (PyObject *)self, self->addr, (Py_ssize_t)self->len,
			      self->readonly, flags))
		return -1;
	self->exports++;
	return 0;
}

static void map_releasebuffer(MapObject *self, Py_buffer *view)
{
	self->exports--;
}

static PyBufferProcs map_as_buffer = {
	.bf_getbuffer = (getbufferproc)map_getbuffer,
	.bf_releasebuffer = (releasebufferproc)map_releasebuffer,
};

static PyObject *map_close(MapObject *self, PyObject *unused)
{
	if (map_unmap(self, 0))
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *map_exit(PyObject *self, PyObject *args)
{
	if (map_unmap((MapObject *)self, 0))
		return NULL;
	Py_RETURN_FALSE;
}

static PyObject *map_sync(MapObject *self, PyObject *unused)
{
	void *addr = self->addr;
	int rc;

	if (!addr) {
		PyErr_SetString(PyExc_ValueError, "the mapping is closed");
		return NULL;
	}
	Py_BEGIN_ALLOW_THREADS rc = em_sync(addr, 0);
	Py_END_ALLOW_THREADS if (rc) return raise_em(rc);
	Py_RETURN_NONE;
}

static PyObject *stats_dict(void *addr)
{
	struct em_map_stats st = { .size = sizeof(st) };
	int rc = em_map_stats(addr, &st);

	if (rc)
		return raise_em(rc);
	return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K,s:K}", "faults", (unsigned long long)st.faults,
			     "bytes_fetched", (unsigned long long)st.bytes_fetched, "bytes_written",
			     (unsigned long long)st.bytes_written, "prefetched",
			     (unsigned long long)st.prefetched, "evictions",
			     (unsigned long long)st.evictions, "resident",
			     (unsigned long long)st.resident);
}

static PyObject *map_stats(MapObject *self, PyObject *unused)
{
	if (!self->addr) {
		PyErr_SetString(PyExc_ValueError, "the mapping is closed");
		return NULL;
	}
	return stats_dict(self->addr);
}

static void map_dealloc(MapObject *self)
{
	map_unmap(self, 1); /* no export is left, or we would not be here */
	Py_DECREF(self->region);
	PyObject_Free(self);
}

static Py_ssize_t map_length(MapObject *self)
{
	return self->addr ? (Py_ssize_t)self->len : 0;
}

static PyObject *map_get_address(MapObject *self, void *c)
{
	return PyLong_FromVoidPtr(self->addr);
}

static PyObject *map_get_readonly(MapObject *self, void *c)
{
	return PyBool_FromLong(self->readonly);
}

static PyObject *map_get_closed(MapObject *self, void *c)
{
	return PyBool_FromLong(!self->addr);
}

static PyObject *map_get_region(MapObject *self, void *c)
{
	return Py_NewRef(self->region);
}

static PyMethodDef map_methods[] = {
	{ "stats", (PyCFunction)map_stats, METH_NOARGS,
	  "stats() -> dict\n\nThis mapping's faults, bytes_fetched, bytes_written, prefetched and\n"
	  "evictions; resident is the process-wide cache occupancy." },
	{ "sync", (PyCFunction)map_sync, METH_NOARGS,
	  "sync()\n\nWrites dirty pages back to the pool." },
	{ "close", (PyCFunction)map_close, METH_NOARGS,
	  "close()\n\nWrites back what is dirty and unmaps; BufferError while buffers\n"
	  "(numpy arrays, tensors, memoryviews) still view it." },
	{ "__enter__", pool_enter, METH_NOARGS, NULL },
	{ "__exit__", map_exit, METH_VARARGS, NULL },
	{ NULL },
};

static PyGetSetDef map_getset[] = {
	{ "address", (getter)map_get_address, NULL, "where it is mapped (0 once closed)", NULL },
	{ "readonly", (getter)map_get_readonly, NULL, "True when mapped read-only", NULL },
	{ "closed", (getter)map_get_closed, NULL, "True once unmapped", NULL },
	{ "region", (getter)map_get_region, NULL, "the Region it maps", NULL },
	{ NULL },
};

static PySequenceMethods map_as_sequence = {
	.sq_length = (lenfunc)map_length,
};

static PyTypeObject MapType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ethermem.Mapping",
	.tp_basicsize = sizeof(MapObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Pool memory in this address space, from Region.map(). Has the buffer\n"
		  "protocol (unsigned bytes); len() is its length in bytes. A context\n"
		  "manager: leaving the block unmaps it.",
	.tp_dealloc = (destructor)map_dealloc,
	.tp_as_buffer = &map_as_buffer,
	.tp_as_sequence = &map_as_sequence,
	.tp_methods = map_methods,
	.tp_getset = map_getset,
};

/* ---- Queue ---- */

static void slot_release(QueueObject *q, unsigned i)
{
	struct slot *s = &q->slots[i];

	if (s->has_view)
		PyBuffer_Release(&s->view);
	s->has_view = 0;
	if (s->region) {
		s->region->busy--;
		Py_CLEAR(s->region);
	}
	Py_CLEAR(s->user_data);
	q->free[q->nfree++] = i;
}

/* Operations submitted and not yet reaped: the slots they hold. (The
 * library's em_queue_inflight leaves out completions that arrived and
 * wait to be reaped, which wait() and close() must still reap.) */
static unsigned outstanding(const QueueObject *q)
{
	return q->depth - q->nfree;
}

static int queue_usable(QueueObject *q)
{
	if (!q->q) {
		PyErr_SetString(PyExc_ValueError, "the queue is closed");
		return -1;
	}
	if (q->busy) {
		PyErr_SetString(PyExc_RuntimeError, "the queue is in use by another thread");
		return -1;
	}
	return pool_usable(q->pool);
}

/* Parses one operation tuple into op, taking slot i. */
static int parse_op(QueueObject *q, PyObject *t, unsigned i, struct em_op *op)
{
	struct slot *s = &q->slots[i];
	PyObject *kind, *reg, *ud = Py_None;
	const char *k;
	RegionObject *r;
	uint64_t off, operand = 0, compare = 0;
	Py_ssize_t n;
	int aop = 0;

	if (!PyTuple_Check(t) || (n = PyTuple_GET_SIZE(t)) < 4) {
		PyErr_SetString(PyExc_TypeError,
				"an operation is a tuple: ('read'|'write', region, "
				"offset, buffer[, user_data]) or ('atomic', region, offset, op, "
				"operand[, compare[, user_data]])");
		return -1;
	}
	kind = PyTuple_GET_ITEM(t, 0);
	reg = PyTuple_GET_ITEM(t, 1);
	if (!PyUnicode_Check(kind) || !(k = PyUnicode_AsUTF8(kind))) {
		PyErr_SetString(PyExc_TypeError,
				"an operation's kind is 'read', 'write' or 'atomic'");
		return -1;
	}
	if (!PyObject_TypeCheck(reg, &RegionType)) {
		PyErr_SetString(PyExc_TypeError, "an operation's second item is a Region");
		return -1;
	}
	r = (RegionObject *)reg;
	if (r->pool != q->pool) {
		PyErr_SetString(PyExc_ValueError, "the region belongs to another pool");
		return -1;
	}
	if (region_usable(r) || !to_u64(PyTuple_GET_ITEM(t, 2), &off))
		return -1;
	memset(op, 0, sizeof(*op));
	if (!strcmp(k, "read") || !strcmp(k, "write")) {
		int w = k[0] == 'w';
		if (n > 5) {
			PyErr_SetString(PyExc_TypeError,
					"('read'|'write', region, offset, buffer[, user_data])");
			return -1;
		}
		if (get_buffer(PyTuple_GET_ITEM(t, 3), &s->view, !w))
			return -1;
		if (check_range(r, off, (uint64_t)s->view.len)) {
			PyBuffer_Release(&s->view);
			return -1;
		}
		s->has_view = 1;
		op->opcode = w ? EM_OP_WRITE : EM_OP_READ;
		op->buf = s->view.buf;
		op->len = (size_t)s->view.len;
		if (n == 5)
			ud = PyTuple_GET_ITEM(t, 4);
	} else if (!strcmp(k, "atomic")) {
		if (n < 5 || n > 7) {
			PyErr_SetString(
				PyExc_TypeError,
				"('atomic', region, offset, op, operand[, compare[, user_data]])");
			return -1;
		}
		if (!to_atomic_op(PyTuple_GET_ITEM(t, 3), &aop) ||
		    !to_word(PyTuple_GET_ITEM(t, 4), &operand) ||
		    (n > 5 && !to_word(PyTuple_GET_ITEM(t, 5), &compare)))
			return -1;
		if (check_range(r, off, 8))
			return -1;
		if (off % 8) {
			PyErr_SetString(PyExc_ValueError,
					"atomics need an offset aligned to 8 bytes");
			return -1;
		}
		op->opcode = EM_OP_ATOMIC;
		op->atomic_op = (uint8_t)aop;
		op->operand = operand;
		op->compare = compare;
		if (n == 7)
			ud = PyTuple_GET_ITEM(t, 6);
	} else {
		PyErr_Format(PyExc_ValueError, "unknown operation '%s' ('read', 'write', 'atomic')",
			     k);
		return -1;
	}
	op->region = r->r;
	op->offset = off;
	op->user_data = i;
	s->user_data = Py_NewRef(ud);
	s->region = (RegionObject *)Py_NewRef(r);
	r->busy++; /* the region cannot close under a queued operation */
	return 0;
}

static PyObject *queue_submit(QueueObject *self, PyObject *arg)
{
	PyObject *seq;
	struct em_op *ops;
	Py_ssize_t n, take;
	int rc;

	if (queue_usable(self))
		return NULL;
	seq = PySequence_Fast(arg, "submit() takes a sequence of operation tuples");
	if (!seq)
		return NULL;
	n = PySequence_Fast_GET_SIZE(seq);
	take = n < (Py_ssize_t)self->nfree ? n : (Py_ssize_t)self->nfree;
	ops = PyMem_Calloc(take ? (size_t)take : 1, sizeof(*ops));
	if (!ops) {
		Py_DECREF(seq);
		return PyErr_NoMemory();
	}
	for (Py_ssize_t i = 0; i < take; i++) {
		unsigned slot = self->free[--self->nfree];
		if (parse_op(self, PySequence_Fast_GET_ITEM(seq, i), slot, &ops[i])) {
			self->free[self->nfree++] = slot; /* never taken */
			while (i-- > 0)
				slot_release(self, (unsigned)ops[i].user_data);
			PyMem_Free(ops);
			Py_DECREF(seq);
			return NULL;
		}
	}
	Py_DECREF(seq);
	if (!take) {
		PyMem_Free(ops);
		return PyLong_FromLong(0);
	}
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_submit(self->q, ops, (unsigned)take);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc == -EAGAIN)
		rc = 0;
	/* what was not posted gives its slot back */
	for (Py_ssize_t i = rc < 0 ? 0 : rc; i < take; i++)
		slot_release(self, (unsigned)ops[i].user_data);
	PyMem_Free(ops);
	if (rc < 0)
		return raise_em(rc);
	return PyLong_FromLong(rc);
}

/* Turns reaped completions into Completion tuples; raises Error for the
 * first failure with every completion in its .completions. */
static PyObject *reap(QueueObject *self, struct em_completion *c, int n)
{
	PyObject *list = PyList_New(n);
	int first_err = 0;

	for (int i = 0; i < n; i++) {
		unsigned si = (unsigned)c[i].user_data;
		struct slot *s;
		PyObject *t;

		if (si >= self->depth) { /* cannot happen: we posted every user_data */
			if (list)
				PyList_SET_ITEM(list, i, Py_NewRef(Py_None));
			continue;
		}
		s = &self->slots[si];
		t = list ? PyStructSequence_New(&CompletionType) : NULL;
		if (t) {
			PyStructSequence_SET_ITEM(t, 0,
						  Py_NewRef(s->user_data ? s->user_data : Py_None));
			PyStructSequence_SET_ITEM(
				t, 1, PyLong_FromLong(c[i].result < 0 ? -c[i].result : 0));
			PyStructSequence_SET_ITEM(t, 2, PyLong_FromUnsignedLongLong(c[i].value));
			PyList_SET_ITEM(list, i, t);
		} else {
			Py_CLEAR(list);
		}
		if (c[i].result < 0 && !first_err)
			first_err = c[i].result;
		slot_release(self, si);
	}
	if (!list)
		return NULL;
	if (first_err) {
		PyObject *type, *value, *tb;

		raise_em(first_err);
		PyErr_Fetch(&type, &value, &tb);
		PyErr_NormalizeException(&type, &value, &tb);
		if (value)
			PyObject_SetAttrString(value, "completions", list);
		PyErr_Restore(type, value, tb);
		Py_DECREF(list);
		return NULL;
	}
	return list;
}

static PyObject *queue_wait(QueueObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "min", "max", "timeout_ms", NULL };
	unsigned inflight, min = 1, max = 0;
	int timeout = -1, n;
	struct em_completion *c;
	PyObject *ret;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O&O&O&:wait", kwl, to_uint, &min, to_uint,
					 &max, to_int, &timeout))
		return NULL;
	if (queue_usable(self))
		return NULL;
	if (timeout < -1) {
		PyErr_SetString(PyExc_ValueError, "timeout_ms: -1 (the pool's timeout) or >= 0");
		return NULL;
	}
	inflight = outstanding(self);
	if (!max || max > inflight)
		max = inflight;
	if (min > max)
		min = max;
	if (!max)
		return PyList_New(0);
	c = PyMem_Calloc(max, sizeof(*c));
	if (!c)
		return PyErr_NoMemory();
	self->busy++;
	Py_BEGIN_ALLOW_THREADS n = em_wait(self->q, c, min, max, timeout);
	Py_END_ALLOW_THREADS self->busy--;
	ret = n < 0 ? raise_em(n) : reap(self, c, n);
	PyMem_Free(c);
	return ret;
}

static PyObject *queue_poll(QueueObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "max", NULL };
	unsigned max = 0, inflight;
	struct em_completion *c;
	PyObject *ret;
	int n;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "|O&:poll", kwl, to_uint, &max))
		return NULL;
	if (queue_usable(self))
		return NULL;
	inflight = outstanding(self);
	if (!max || max > inflight)
		max = inflight;
	if (!max)
		return PyList_New(0);
	c = PyMem_Calloc(max, sizeof(*c));
	if (!c)
		return PyErr_NoMemory();
	n = em_poll(self->q, c, max);
	ret = n < 0 ? raise_em(n) : reap(self, c, n);
	PyMem_Free(c);
	return ret;
}

static int queue_close_impl(QueueObject *q, int quiet)
{
	em_queue *h = q->q;

	if (!h)
		return 0;
	if (q->busy) {
		if (!quiet)
			PyErr_SetString(PyExc_RuntimeError,
					"the queue is in use by another thread");
		return -1;
	}
	/* Operations in flight still own their buffers: let them finish (or
	 * time out) before the buffers and the queue go. */
	while (outstanding(q)) {
		struct em_completion c[64];
		int n;
		Py_BEGIN_ALLOW_THREADS n = em_wait(h, c, 1, 64, -1);
		Py_END_ALLOW_THREADS if (n <= 0) break;
		for (int i = 0; i < n; i++)
			if (c[i].user_data < q->depth)
				slot_release(q, (unsigned)c[i].user_data);
	}
	q->q = NULL;
	Py_BEGIN_ALLOW_THREADS em_queue_destroy(h);
	Py_END_ALLOW_THREADS
		/* anything never reaped (a wait that failed) is released now */
		for (unsigned i = 0; i < q->depth;
		     i++) if (q->slots[i].region || q->slots[i].has_view) slot_release(q, i);
	if (q->prev)
		q->prev->next = q->next;
	else
		q->pool->queues = q->next;
	if (q->next)
		q->next->prev = q->prev;
	q->prev = q->next = NULL;
	q->pool->children--;
	pool_finish(q->pool);
	return 0;
}

static PyObject *queue_close(QueueObject *self, PyObject *unused)
{
	if (queue_close_impl(self, 0))
		return NULL;
	Py_RETURN_NONE;
}

static PyObject *queue_exit(PyObject *self, PyObject *args)
{
	if (queue_close_impl((QueueObject *)self, 0))
		return NULL;
	Py_RETURN_FALSE;
}

static void queue_dealloc(QueueObject *self)
{
	queue_close_impl(self, 1);
	PyMem_Free(self->slots);
	PyMem_Free(self->free);
	Py_DECREF(self->pool);
	PyObject_Free(self);
}

static PyObject *queue_fileno(QueueObject *self, PyObject *unused)
{
	int fd;

	if (queue_usable(self))
		return NULL;
	fd = em_queue_fd(self->q);
	if (fd < 0)
		return raise_em(fd);
	return PyLong_FromLong(fd);
}

static PyObject *queue_get_inflight(QueueObject *self, void *c)
{
	return PyLong_FromUnsignedLong(outstanding(self));
}

static PyObject *queue_get_depth(QueueObject *self, void *c)
{
	return PyLong_FromUnsignedLong(self->depth);
}

static PyMethodDef queue_methods[] = {
	{ "submit", (PyCFunction)queue_submit, METH_O,
	  "submit(ops) -> int\n\nPosts a sequence of operations, one system call per node for\n"
	  "the batch:\n"
	  "  ('read', region, offset, writable_buffer[, user_data])\n"
	  "  ('write', region, offset, buffer[, user_data])\n"
	  "  ('atomic', region, offset, op, operand[, compare[, user_data]])\n"
	  "Buffers stay referenced until their completion is reaped. Returns how many were\n"
	  "posted: fewer than given when the queue is full (submit the rest later)." },
	{ "wait", (PyCFunction)(void (*)(void))queue_wait, METH_VARARGS | METH_KEYWORDS,
	  "wait(min=1, max=0, timeout_ms=-1) -> list of Completion\n\nWaits, without the GIL,\n"
	  "for at least min completions (bounded by what is in flight) and reaps up to max\n"
	  "(0: all in flight). If an operation failed, raises Error for the first failure\n"
	  "with every reaped Completion in its .completions." },
	{ "poll", (PyCFunction)(void (*)(void))queue_poll, METH_VARARGS | METH_KEYWORDS,
	  "poll(max=0) -> list of Completion\n\nReaps what has completed, without waiting." },
	{ "fileno", (PyCFunction)queue_fileno, METH_NOARGS,
	  "fileno() -> int\n\nA descriptor that is readable while completions may be waiting\n"
	  "(level-triggered, may wake spuriously): an event loop sleeps on it, e.g.\n"
	  "asyncio's loop.add_reader(q.fileno(), ...), then calls poll(). Owned by the\n"
	  "queue: never read or close it." },
	{ "close", (PyCFunction)queue_close, METH_NOARGS,
	  "close()\n\nWaits for operations in flight, then destroys the queue." },
	{ "__enter__", pool_enter, METH_NOARGS, NULL },
	{ "__exit__", queue_exit, METH_VARARGS, NULL },
	{ NULL },
};

static PyGetSetDef queue_getset[] = {
	{ "inflight", (getter)queue_get_inflight, NULL, "operations submitted and not yet reaped",
	  NULL },
	{ "depth", (getter)queue_get_depth, NULL, "most operations in flight at once", NULL },
	{ NULL },
};

static PyTypeObject QueueType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ethermem.Queue",
	.tp_basicsize = sizeof(QueueObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "Asynchronous batched operations, from Pool.queue(). Used by one thread at\n"
		  "a time. A context manager: leaving the block closes it.",
	.tp_dealloc = (destructor)queue_dealloc,
	.tp_methods = queue_methods,
	.tp_getset = queue_getset,
};

static PyStructSequence_Field completion_fields[] = {
	{ "user_data", "the operation's user_data (None when not given)" },
	{ "errno", "0, or the errno of a failed operation" },
	{ "value", "atomics: the old value" },
	{ NULL },
};

static PyStructSequence_Desc completion_desc = {
	"ethermem.Completion",
	"One finished operation, from Queue.wait() or Queue.poll().",
	completion_fields,
	3,
};

/* ---- module functions ---- */

/* ---- KVStore: libemkv's block store (src/llm/kvstore.h) ---- */

/* A store keeps its pool's handle open (as a region does) until it is
 * closed; a closed pool refuses its calls.  libemkv handles are not
 * thread-safe, so a call running without the GIL makes the store busy. */
typedef struct {
	PyObject_HEAD PoolObject *pool; /* strong */
	em_kv *kv;                      /* NULL once closed */
	int busy;
} KVStoreObject;

static PyTypeObject KVStoreType;

/* O& converter: a 16-byte key (two little-endian 64-bit words). */
static int to_kv_key(PyObject *o, void *out)
{
	struct em_kv_key *k = out;
	Py_buffer b;

	if (PyObject_GetBuffer(o, &b, PyBUF_SIMPLE))
		return 0;
	if (b.len != 16) {
		PyBuffer_Release(&b);
		PyErr_Format(PyExc_ValueError, "a key is 16 bytes, not %zd (kv_key() makes one)",
			     b.len);
		return 0;
	}
	for (int w = 0; w < 2; w++) {
		uint64_t v = 0;

		for (int i = 7; i >= 0; i--)
			v = v << 8 | ((const unsigned char *)b.buf)[w * 8 + i];
		k->k[w] = v;
	}
	PyBuffer_Release(&b);
	return 1;
}

static int kv_usable(KVStoreObject *s)
{
	if (!s->kv) {
		PyErr_SetString(PyExc_ValueError, "the store is closed");
		return -1;
	}
	if (s->busy) {
		PyErr_SetString(PyExc_RuntimeError, "the store is in use by another thread");
		return -1;
	}
	return pool_usable(s->pool);
}

static PyObject *pool_kv_store(PoolObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "name", "capacity", "value_max", "create", "redundancy", NULL };
	struct em_region_opts ro = { .size = sizeof(ro) };
	const char *name, *red = NULL;
	uint64_t cap = 0, vmax = 0;
	int create = 1, rc;
	struct em_kv_opts o;
	KVStoreObject *s;
	em_kv *kv;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "s|O&O&p$z:kv_store", kwl, &name, to_size, &cap,
					 to_size, &vmax, &create, &red))
		return NULL;
	if (pool_usable(self) || check_name(name))
		return NULL;
	if (red && em_parse_redundancy(red, &ro)) {
		PyErr_Format(PyExc_ValueError,
			     "redundancy is 'none' or 'replicate:N' (2..16), not '%s'", red);
		return NULL;
	}
	if (vmax > UINT32_MAX) {
		PyErr_SetString(PyExc_ValueError, "value_max: at most 4 GiB");
		return NULL;
	}
	o = (struct em_kv_opts){ .size = sizeof(o),
				 .capacity = cap,
				 .value_max = (uint32_t)vmax,
				 .create = create,
				 .region = red ? &ro : NULL };
	self->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_kv_open(self->pool, name, &o, &kv);
	Py_END_ALLOW_THREADS self->busy--;
	if (rc)
		return raise_em(rc);
	s = PyObject_New(KVStoreObject, &KVStoreType);
	if (!s) {
		em_kv_close(kv);
		return NULL;
	}
	s->pool = (PoolObject *)Py_NewRef(self);
	s->kv = kv;
	s->busy = 0;
	self->children++;
	return (PyObject *)s;
}

static void kv_close_impl(KVStoreObject *s)
{
	em_kv *kv = s->kv;

	if (!kv)
		return;
	s->kv = NULL;
	Py_BEGIN_ALLOW_THREADS em_kv_close(kv);
	Py_END_ALLOW_THREADS s->pool->children--;
	pool_finish(s->pool);
}

static PyObject *kv_close(KVStoreObject *self, PyObject *unused)
{
	if (self->busy) {
		PyErr_SetString(PyExc_RuntimeError, "the store is in use by another thread");
		return NULL;
	}
	kv_close_impl(self);
	Py_RETURN_NONE;
}

static PyObject *kv_exit(PyObject *self, PyObject *args)
{
	PyObject *r = kv_close((KVStoreObject *)self, NULL);

	if (!r)
		return NULL;
	Py_DECREF(r);
	Py_RETURN_FALSE;
}

static void kv_dealloc(KVStoreObject *self)
{
	kv_close_impl(self);
	Py_DECREF(self->pool);
	PyObject_Free(self);
}

static PyObject *kv_put(KVStoreObject *self, PyObject *args)
{
	struct em_kv_key k;
	Py_buffer b;
	int rc;

	if (!PyArg_ParseTuple(args, "O&y*:put", to_kv_key, &k, &b))
		return NULL;
	if (kv_usable(self)) {
		PyBuffer_Release(&b);
		return NULL;
	}
	self->busy = 1;
	self->pool->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_kv_put(self->kv, &k, b.buf, (size_t)b.len);
	Py_END_ALLOW_THREADS self->pool->busy--;
	self->busy = 0;
	PyBuffer_Release(&b);
	if (rc < 0)
		return raise_em(rc);
	return PyBool_FromLong(rc == 0);
}

static PyObject *kv_get(KVStoreObject *self, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "key", "into", NULL };
	struct em_kv_key k;
	PyObject *into = Py_None, *out = NULL;
	Py_buffer b = { 0 };
	void *buf;
	size_t cap;
	int rc;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "O&|O:get", kwl, to_kv_key, &k, &into))
		return NULL;
	if (kv_usable(self))
		return NULL;
	if (into != Py_None) {
		if (PyObject_GetBuffer(into, &b, PyBUF_WRITABLE | PyBUF_C_CONTIGUOUS))
			return NULL;
		buf = b.buf;
		cap = (size_t)b.len;
	} else {
		cap = em_kv_value_max(self->kv);
		if (!(out = PyBytes_FromStringAndSize(NULL, (Py_ssize_t)cap)))
			return NULL;
		buf = PyBytes_AS_STRING(out);
	}
	self->busy = 1;
	self->pool->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_kv_get(self->kv, &k, buf, cap);
	Py_END_ALLOW_THREADS self->pool->busy--;
	self->busy = 0;
	if (into != Py_None)
		PyBuffer_Release(&b);
	if (rc == -ENOENT) {
		Py_XDECREF(out);
		Py_RETURN_NONE;
	}
	if (rc < 0) {
		Py_XDECREF(out);
		return raise_em(rc);
	}
	if (!out)
		return PyLong_FromLong(rc);
	if (_PyBytes_Resize(&out, rc))
		return NULL;
	return out;
}

static PyObject *kv_exists(KVStoreObject *self, PyObject *args)
{
	struct em_kv_key k;
	int rc;

	if (!PyArg_ParseTuple(args, "O&:exists", to_kv_key, &k))
		return NULL;
	if (kv_usable(self))
		return NULL;
	self->busy = 1;
	self->pool->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_kv_exists(self->kv, &k);
	Py_END_ALLOW_THREADS self->pool->busy--;
	self->busy = 0;
	if (rc < 0)
		return raise_em(rc);
	return PyBool_FromLong(rc);
}

static PyObject *kv_stats(KVStoreObject *self, PyObject *unused)
{
	struct em_kv_stats st = { .size = sizeof(st) };
	int rc;

	if (kv_usable(self))
		return NULL;
	self->busy = 1;
	self->pool->busy++;
	Py_BEGIN_ALLOW_THREADS rc = em_kv_stats(self->kv, &st);
	Py_END_ALLOW_THREADS self->pool->busy--;
	self->busy = 0;
	if (rc < 0)
		return raise_em(rc);
	return Py_BuildValue("{sKsKsKsKsKsKsKsKsKsK}", "entries", (unsigned long long)st.entries,
			     "value_max", (unsigned long long)st.value_max, "used",
			     (unsigned long long)st.used, "bytes", (unsigned long long)st.bytes,
			     "hits", (unsigned long long)st.hits, "misses",
			     (unsigned long long)st.misses, "puts", (unsigned long long)st.puts,
			     "present", (unsigned long long)st.present, "evictions",
			     (unsigned long long)st.evictions, "corrupt",
			     (unsigned long long)st.corrupt);
}

static PyObject *kv_get_value_max(KVStoreObject *self, void *c)
{
	if (!self->kv) {
		PyErr_SetString(PyExc_ValueError, "the store is closed");
		return NULL;
	}
	return PyLong_FromUnsignedLong(em_kv_value_max(self->kv));
}

static PyObject *kv_get_closed(KVStoreObject *self, void *c)
{
	return PyBool_FromLong(self->kv == NULL);
}

static PyMethodDef kv_methods[] = {
	{ "put", (PyCFunction)kv_put, METH_VARARGS,
	  "put(key, data) -> bool\n\nStores data (a bytes-like object of at most value_max bytes)\n"
	  "under key: True if stored, False if the key was already present (the first\n"
	  "writer wins; values are immutable)." },
	{ "get", (PyCFunction)(void (*)(void))kv_get, METH_VARARGS | METH_KEYWORDS,
	  "get(key, into=None) -> bytes | int | None\n\nThe value under key, None when absent or\n"
	  "evicted. With into (a writable buffer) the value is read there and its length\n"
	  "returned. A value failing its checksum raises Error (EBADMSG)." },
	{ "exists", (PyCFunction)kv_exists, METH_VARARGS,
	  "exists(key) -> bool\n\nWhether a value is stored under key." },
	{ "stats", (PyCFunction)kv_stats, METH_NOARGS,
	  "stats() -> dict\n\nentries, value_max, used, bytes, and pool-wide counters since\n"
	  "the store was created: hits, misses, puts, present, evictions, corrupt." },
	{ "close", (PyCFunction)kv_close, METH_NOARGS, "close()\n\nCloses the store's handle." },
	{ "__enter__", pool_enter, METH_NOARGS, NULL },
	{ "__exit__", kv_exit, METH_VARARGS, NULL },
	{ NULL },
};

static PyGetSetDef kv_getset[] = {
	{ "value_max", (getter)kv_get_value_max, NULL, "largest value the store holds, bytes",
	  NULL },
	{ "closed", (getter)kv_get_closed, NULL, "True once close() was called", NULL },
	{ NULL },
};

static PyTypeObject KVStoreType = {
	PyVarObject_HEAD_INIT(NULL, 0).tp_name = "ethermem.KVStore",
	.tp_basicsize = sizeof(KVStoreObject),
	.tp_flags = Py_TPFLAGS_DEFAULT,
	.tp_doc = "A store of immutable blocks in the pool by 16-byte key, shared by every\n"
		  "process that opens it by name (libemkv): Pool.kv_store(name, capacity=0,\n"
		  "value_max=0, create=True). Eviction is least recently used within each set\n"
		  "of the directory. A context manager: leaving the block closes it.",
	.tp_dealloc = (destructor)kv_dealloc,
	.tp_methods = kv_methods,
	.tp_getset = kv_getset,
};

static PyObject *mod_kv_key(PyObject *m, PyObject *args, PyObject *kw)
{
	static char *kwl[] = { "data", "seed", NULL };
	struct em_kv_key k;
	uint64_t seed = 0;
	unsigned char out[16];
	Py_buffer b;

	if (!PyArg_ParseTupleAndKeywords(args, kw, "y*|O&:kv_key", kwl, &b, to_u64, &seed))
		return NULL;
	em_kv_hash(b.buf, (size_t)b.len, seed, &k);
	PyBuffer_Release(&b);
	for (int w = 0; w < 2; w++)
		for (int i = 0; i < 8; i++)
			out[w * 8 + i] = (unsigned char)(k.k[w] >> (8 * i));
	return PyBytes_FromStringAndSize((const char *)out, 16);
}

static PyObject *mod_strerror(PyObject *m, PyObject *args)
{
	int e;

	if (!PyArg_ParseTuple(args, "O&:strerror", to_int, &e))
		return NULL;
	return PyUnicode_FromString(em_strerror(e));
}

static PyObject *mod_parse_size(PyObject *m, PyObject *args)
{
	uint64_t v;

	if (!PyArg_ParseTuple(args, "O&:parse_size", to_size, &v))
		return NULL;
	return PyLong_FromUnsignedLongLong(v);
}

static PyObject *mod_map_cache_size(PyObject *m, PyObject *args)
{
	uint64_t v;
	int rc;

	if (!PyArg_ParseTuple(args, "O&:map_cache_size", to_size, &v))
		return NULL;
	if ((rc = em_map_cache_size(v)))
		return raise_em(rc);
	Py_RETURN_NONE;
}

static PyObject *mod_map_stats(PyObject *m, PyObject *unused)
{
	return stats_dict(NULL);
}

static PyMethodDef module_methods[] = {
	{ "strerror", mod_strerror, METH_VARARGS,
	  "strerror(code) -> str\n\nem_strerror(): text for an errno or ethermem error code." },
	{ "parse_size", mod_parse_size, METH_VARARGS,
	  "parse_size(s) -> int\n\nParses '512M', '64G', '1.5G', '4096' (binary units)." },
	{ "map_cache_size", mod_map_cache_size, METH_VARARGS,
	  "map_cache_size(size)\n\nSets the process-wide cache budget of all mappings." },
	{ "map_stats", mod_map_stats, METH_NOARGS,
	  "map_stats() -> dict\n\nMapping counters, totals of the process." },
	{ "kv_key", (PyCFunction)(void (*)(void))mod_kv_key, METH_VARARGS | METH_KEYWORDS,
	  "kv_key(data, seed=0) -> bytes\n\nA 16-byte KVStore key: libemkv's 128-bit hash (not\n"
	  "cryptographic) of data; chain keys by seeding with a part of the previous one." },
	{ NULL },
};

static struct PyModuleDef module_def = {
	PyModuleDef_HEAD_INIT,
	"ethermem._ethermem",
	"C types over libethermem; import the ethermem package instead.",
	-1,
	module_methods,
};

PyMODINIT_FUNC PyInit__ethermem(void)
{
	PyObject *m;
	PyTypeObject *types[] = { &PoolType, &RegionType, &MapType, &QueueType, &KVStoreType };
	const char *names[] = { "Pool", "Region", "Mapping", "Queue", "KVStore" };

	for (int i = 0; i < 5; i++)
		if (PyType_Ready(types[i]))
			return NULL;
	if (!CompletionType.tp_name &&
	    PyStructSequence_InitType2(&CompletionType, &completion_desc))
		return NULL;
	m = PyModule_Create(&module_def);
	if (!m)
		return NULL;
	ErrorType = PyErr_NewExceptionWithDoc(
		"ethermem.Error",
		"A call into the pool failed: errno and strerror (em_strerror's text) say why.\n"
		"Codes above 4095 are ethermem's own (EAUTH, EVERSION, ENONODE, ECRYPT).",
		PyExc_OSError, NULL);
	if (!ErrorType || PyModule_AddObjectRef(m, "Error", ErrorType) ||
	    PyModule_AddObjectRef(m, "Completion", (PyObject *)&CompletionType) ||
	    PyModule_AddIntConstant(m, "EAUTH", EM_EAUTH) ||
	    PyModule_AddIntConstant(m, "EVERSION", EM_EVERSION) ||
	    PyModule_AddIntConstant(m, "ENONODE", EM_ENONODE) ||
	    PyModule_AddIntConstant(m, "ECRYPT", EM_ECRYPT) ||
	    PyModule_AddIntConstant(m, "NAME_MAX", EM_NAME_MAX) ||
	    PyModule_AddStringConstant(m, "LIB_VERSION", em_version(NULL, NULL, NULL)) ||
	    PyModule_AddStringConstant(m, "HEADER_VERSION", EM_VERSION_STRING)) {
		Py_DECREF(m);
		return NULL;
	}
	for (int i = 0; i < 5; i++)
		if (PyModule_AddObjectRef(m, names[i], (PyObject *)types[i])) {
			Py_DECREF(m);
			return NULL;
		}
	return m;
}
