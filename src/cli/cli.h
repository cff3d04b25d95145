/*
 * cli.h - pieces shared by the ethermem command's subcommands.
 */
#ifndef EM_CLI_H
#define EM_CLI_H

#include <stdbool.h>
#include <stdint.h>

#include "ethermem.h"

/* Pool options gathered from --nodes, --secret-file, --config,
 * --timeout-ms, --transport and --ox-iface anywhere on the command line
 * before a "--" (the flags are removed from argv); the rest falls back to
 * the environment. A flag matches by its whole name only, and a missing or
 * bad value is reported on stderr and returns -EINVAL. */
struct em_cli_pool {
	struct em_pool_opts opts;
};
int em_cli_pool_args(int *argc, char **argv, struct em_cli_pool *cp);
/* Connects or prints why not (and returns non-zero). */
int em_cli_connect(struct em_cli_pool *cp, em_pool **pool, const char *prog);

int em_cli_bench(int argc, char **argv, struct em_cli_pool *cp);
/* ethermem kv (kv.c). */
int em_cli_kv(int argc, char **argv, struct em_cli_pool *cp);
/* bench_loaded.c: probe latency under paced bulk load */
int em_cli_bench_loaded(int argc, char **argv, struct em_cli_pool *cp);
/* `ethermem bench failover` (bench_failover.c) */
int em_cli_bench_failover(int argc, char **argv, struct em_cli_pool *cp);
/* bench_many.c: n connections to one node, verified 4 KiB I/O on each;
 * node_pid (0: none) is read in /proc for the node's threads and RSS */
int em_cli_bench_many(em_pool *pool, unsigned n, uint64_t time_ns, int node_pid, bool json);
/* CPU time in ns that process pid (0: this one) has used, all its threads
 * together; -1 where it cannot be read. For the benchmarks' CPU per op. */
int64_t em_cli_cpu_ns(int pid);
/* `ethermem node ...` (node.c): membership as etcd has it. */
int em_cli_node(int argc, char **argv, struct em_cli_pool *cp);
/* Prints the drains recorded in etcd (nothing without etcd). */
void em_cli_drain_status(struct em_cli_pool *cp);

/* The paging layer's commands (run.c, import_export.c, bench_map.c). run
 * passes the pool to its program through the environment (main.c exports
 * the flags there first). */
int em_cli_run(int argc, char **argv);
int em_cli_import(int argc, char **argv, struct em_cli_pool *cp);
int em_cli_export(int argc, char **argv, struct em_cli_pool *cp);
int em_cli_bench_map(int argc, char **argv, struct em_cli_pool *cp);

#endif
