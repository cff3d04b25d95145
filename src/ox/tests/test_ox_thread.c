/*
 * test_ox_thread.c - the endpoint's run loop in its own thread while the
 * main thread, as the daemon's control path would, adds and removes windows
 * and reads stats, and a requester works through the hub.  Its point is the
 * locking (run it in the TSan build); its check is that every op completes
 * and the counter is exact.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ox/ox.h"

static struct ox_endpoint *ep;
static volatile int stop;

static void *serve(void *arg)
{
	(void)arg;
	ox_endpoint_run(ep, &stop);
	return NULL;
}

int main(void)
{
	struct ox_hub *hub;
	struct ox_link *el, *rl;
	static uint64_t mem[4096];
	int bad = 0;
	ox_hub_create(&hub);
	ox_hub_port(hub, 1, 9000, &el);
	ox_hub_port(hub, 2, 9000, &rl);
	struct ox_opts o = { .rto_ns = 2000000 };
	if (ox_endpoint_create(&o, el, &ep))
		return 1;
	struct ox_window w = { .base = 0x10000, .len = sizeof(mem), .mem = mem };
	memcpy(w.mac, rl->mac, 6);
	ox_endpoint_add_window(ep, &w);
	struct ox_requester *r;
	if (ox_requester_create(&o, rl, el->mac, &r))
		return 1;
	pthread_t t;
	pthread_create(&t, NULL, serve, NULL);
	for (int i = 0; i < 2000; i++) {
		/* a second window for another peer comes and goes meanwhile */
		struct ox_window x = w;
		x.mac[5] = 9;
		int id = ox_endpoint_add_window(ep, &x);
		struct ox_op op = { .kind = OX_OP_ARITH,
				    .param = OX_ADD,
				    .addr = 0x10000 + 8 * (i % 16),
				    .len = 8,
				    .operand = 1 };
		if (ox_requester_submit(r, &op) || ox_requester_wait(r, &op, 2000000000ull)) {
			fprintf(stderr, "op %d: %d\n", i, op.status);
			bad++;
			break;
		}
		ox_endpoint_remove_window(ep, id);
		struct ox_stats s;
		ox_endpoint_stats(ep, &s);
	}
	__atomic_store_n(&stop, 1, __ATOMIC_RELAXED);
	pthread_join(t, NULL);
	uint64_t sum = 0;
	for (int i = 0; i < 16; i++)
		sum += mem[i];
	if (sum != 2000)
		bad++;
	ox_requester_destroy(r);
	ox_endpoint_destroy(ep);
	ox_hub_destroy(hub);
	printf("test_ox_thread: %s (sum %llu)\n", bad ? "FAIL" : "ok", (unsigned long long)sum);
	return bad ? 1 : 0;
}
