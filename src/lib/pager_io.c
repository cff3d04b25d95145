/*
 * pager_io.c - the two facts of a pool and a region that the pager needs
 * and the public API does not give, and the hook by which the pager hears
 * that a pool closes (pager_io.h says why they are private).
 */
#include "lib/pager_io.h"
#include "lib/internal.h"

const char *em_region_label(const em_region *region)
{
	return region->named ? region->name : "(anonymous region)";
}

void (*em_pool_close_hook)(em_pool *pool);

int em_pool_timeout_ms(const em_pool *pool)
{
	return pool->timeout_ms;
}

int em_region_map_prepare(em_region *region, uint64_t max_op)
{
	return em_red_on(region) ? em_red_map_prepare(region, max_op) : 0;
}

void em_queue_no_redial(em_queue *q)
{
	q->redial = false;
	q->follow_here = false; /* no etcd from the fault handler either */
	em_health_adopt(q);     /* the pool's reconnect thread dials for it */
}
