/*
 * ox_serve.h - the memory node's OmniXtend side (ethermemd --ox): an
 * endpoint thread serving TileLink-over-Ethernet frames on one interface
 * against windows of the store, granted by the TCP control path or exported
 * at fixed addresses to listed MACs, plus the raw ping-pong responder the
 * benchmark's baseline uses.
 */
#ifndef EM_OX_SERVE_H
#define EM_OX_SERVE_H

#include <stdbool.h>
#include <stdint.h>

#include "common/wire.h"
#include "daemon/store.h"

#define EM_OXS_MAX_EXPORTS 16
#define EM_OXS_MAX_ALLOW 16

/* --ox-export REGION@ADDRESS with its --ox-allow MACs. */
struct em_oxs_export {
	char region[EM_NAME_MAX + 1];
	uint64_t addr;
	uint64_t create_size; /* --ox-export-create: made at start when missing */
	uint8_t allow[EM_OXS_MAX_ALLOW][6];
	unsigned nallow;
};

struct em_oxs_opts {
	const char *iface;
	uint16_t ethertype; /* 0 = 0xAAAA */
	int mode;           /* enum ox_mode: 0 = 1.1, 1 = 1.0.3 */
	bool verbatim;
	bool reply_per_frame; /* see struct ox_opts */
	bool tag_required;    /* --ox-auth: every session must tag its frames */
	struct em_oxs_export exp[EM_OXS_MAX_EXPORTS];
	unsigned nexp;
};

struct em_oxs;

/* Opens the interface and starts the endpoint and echo threads. */
int em_oxs_create(const struct em_oxs_opts *o, struct em_store *st, struct em_oxs **out);
/* Stops the threads, removes every window, drops the exported regions. */
void em_oxs_destroy(struct em_oxs *x);
/* Claims mac for owner (a session): -EADDRINUSE when another owner holds it.
 * The MAC is bound to the session and its connection state reset, as a new
 * session starts afresh; with EM_OX_ATTACH_TAG in flags, frames carry tags
 * keyed from secret (the session's token).  -EPERM for an untagged session
 * when tags are required. */
int em_oxs_attach(struct em_oxs *x, const void *owner, const uint8_t mac[6], unsigned flags,
		  const uint8_t *secret, size_t secret_len, struct em_ox_info *info);
/* Releases the owner's MAC (its windows must be unmapped first). */
void em_oxs_detach(struct em_oxs *x, const void *owner);
/* A window onto [mem, mem+len) for the owner's MAC, at a base drawn at
 * random.  Returns the window id (>= 0) or -errno. */
int em_oxs_map(struct em_oxs *x, const void *owner, void *mem, uint64_t len, uint64_t *base);
/* The base of a window em_oxs_map granted: 0 or -ENOENT. */
int em_oxs_base(struct em_oxs *x, int id, uint64_t *base);
/* After it returns no frame touches the window's memory any more. */
void em_oxs_unmap(struct em_oxs *x, int id);
/* Fills the EM_ST_OX_* entries of a status array. */
void em_oxs_status(struct em_oxs *x, uint64_t *v);

#endif
