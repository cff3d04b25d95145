/*
 * ox_chan.h - what the OmniXtend transport offers besides its entry in the
 * transport registry, for tools and tests: a region's window, and a raw
 * Ethernet ping-pong with a node's echo
 * responder on the same interface, the benchmark's floor for the
 * OmniXtend data path. Not needed to use or add a transport.
 */
#ifndef EM_LIB_OX_CHAN_H
#define EM_LIB_OX_CHAN_H

#include <stddef.h>
#include <stdint.h>

#include "ethermem.h"

/* The OmniXtend address of byte 0 of segment `seg` of r, 0 if it has no
 * window (not on this transport); for tests that speak TileLink to a node
 * themselves. */
uint64_t em_ox_window(const em_region *r, unsigned seg);

struct em_ox_echo;
/* Needs a pool on the OmniXtend transport (-ENOTCONN otherwise); the node
 * answers attached MACs only. */
int em_ox_echo_open(em_pool *pool, unsigned node, struct em_ox_echo **out);
/* Largest reply payload one frame carries. */
int em_ox_echo_max(const struct em_ox_echo *e);
int em_ox_echo_ping(struct em_ox_echo *e, size_t size, int timeout_ms);
void em_ox_echo_close(struct em_ox_echo *e);

#endif
