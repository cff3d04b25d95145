/*
 * metrics.h - the node's Prometheus endpoint: GET /metrics over HTTP on its
 * own address (metrics.c explains the names and the histogram folding).
 */
#ifndef EM_METRICS_H
#define EM_METRICS_H

struct em_server;
struct em_metrics;
struct em_reg;

/* Serves srv's counters on listen ("HOST:PORT", "[V6]:PORT"; no host means
 * 127.0.0.1; port 0 lets the kernel pick and the log names it), and the
 * membership state of reg when the node registers in etcd (else NULL). */
int em_metrics_start(struct em_metrics **out, const char *listen, struct em_server *srv,
		     struct em_reg *reg);
void em_metrics_stop(struct em_metrics *m);

#endif
