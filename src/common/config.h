/*
 * config.h - every setting of ethermem in one table: each environment
 * variable, client.conf key, ethermemd flag / ethermemd.conf key and ethermem
 * CLI flag, with its type, default, allowed range and one line of help.
 *
 * Why one table: settings used to be read with getenv() wherever they were
 * needed, each with its own parser, and a value a parser did not like (a
 * typo, "abc" for a number) quietly became the default. Here a value is
 * checked once, by the table's rule, and a bad one is an error that names the
 * setting and the value. The listing (`ethermem config`, `ethermemd
 * --help-settings`) and README's table come from the same rows, and a test
 * keeps README in step. Internal; never installed.
 *
 * Precedence is the callers' business and the same everywhere: an explicit
 * option field or flag, then the environment, then the configuration file,
 * then the table's default.
 */
#ifndef EM_COMMON_CONFIG_H
#define EM_COMMON_CONFIG_H

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

enum em_cfg_type {
	EM_CFG_STR,      /* free text (a path, a list, a spec) */
	EM_CFG_INT,      /* decimal or 0x integer within [min, max] */
	EM_CFG_SIZE,     /* bytes, with K/M/G/T suffixes, within [min, max] */
	EM_CFG_DURATION, /* a count of the setting's unit (us or ms), within [min, max] */
	EM_CFG_BOOL,     /* 1/0, yes/no, true/false, on/off */
	EM_CFG_ENUM,     /* one of the '|'-separated choices; the value is its index */
};

/* Where a setting can be given; a row may carry several. */
#define EM_CFG_ENV 0x1u    /* the environment variable `env` */
#define EM_CFG_CLIENT 0x2u /* `key` in client.conf, and `--key` of the ethermem CLI */
#define EM_CFG_NODE 0x4u   /* `--key` of ethermemd, and `key` in ethermemd.conf */
#define EM_CFG_POW2 0x8u   /* INT/SIZE: the value must also be a power of two */

enum em_cfg_id {
	/* where the pool is and how to reach it */
	EM_CFG_CONFIG,
	EM_CFG_NODES,
	EM_CFG_SECRET_FILE,
	EM_CFG_TIMEOUT_MS,
	EM_CFG_TRANSPORT,
	EM_CFG_OX_IFACE,
	EM_CFG_POLL_US,
	EM_CFG_DEBUG,
	EM_CFG_FAULT,
	EM_CFG_REDUNDANCY,
	EM_CFG_ALLOW_DOWN,
	EM_CFG_ENCRYPT,
	EM_CFG_ETCD,
	EM_CFG_CLUSTER,
	EM_CFG_AUTO_REPAIR,
	EM_CFG_REPAIR_RATE,
	EM_CFG_REPAIR_SHARE,
	EM_CFG_BULK_WINDOW,
	/* the OmniXtend channel */
	EM_CFG_OX_WINDOW,
	EM_CFG_OX_RTO_US,
	EM_CFG_OX_ACK_US,
	EM_CFG_OX_SPIN_US,
	EM_CFG_OX_FAULTS,
	EM_CFG_OX_AUTH,
	/* transparent mapping and the preload library */
	EM_CFG_MAP_CACHE,
	EM_CFG_MAP_FAULTS,
	EM_CFG_MAP_HUGE,
	EM_CFG_THRESHOLD,
	EM_CFG_FETCH_UNIT,
	EM_CFG_PRELOAD_STATS,
	EM_CFG_MAP_TRACE,
	EM_CFG_SMALL_OBJECTS,
	/* the LLM runner */
	EM_CFG_LLM_REGION,
	EM_CFG_LLM_SPIN,
	EM_CFG_LLM_SPIN_US,
	EM_CFG_LLM_QUEUES,
	EM_CFG_LLM_MAP_UNIT,
	EM_CFG_LLM_KV_STORE,
	/* the memory node */
	EM_CFG_CAPACITY,
	EM_CFG_LISTEN,
	EM_CFG_MLOCK,
	EM_CFG_OVERCOMMIT,
	EM_CFG_MAX_CLIENTS,
	EM_CFG_MAX_PENDING,
	EM_CFG_MAX_PENDING_PER_SOURCE,
	EM_CFG_KEEPALIVE,
	EM_CFG_IDLE_TIMEOUT,
	EM_CFG_SESSION_LINGER,
	EM_CFG_IO_TIMEOUT,
	EM_CFG_NODE_POLL_US,
	EM_CFG_BULK_SLICE,
	EM_CFG_WORKERS,
	EM_CFG_WORKER_IO,
	EM_CFG_PORT_FILE,
	EM_CFG_METRICS_LISTEN,
	EM_CFG_NODE_CONFIG,
	EM_CFG_OX,
	EM_CFG_OX_ETHERTYPE,
	EM_CFG_OX_MODE,
	EM_CFG_OX_VERBATIM,
	EM_CFG_OX_REPLY_PER_FRAME,
	EM_CFG_OX_EXPORT,
	EM_CFG_OX_ALLOW,
	EM_CFG_OX_EXPORT_CREATE,
	EM_CFG_OX_AUTH_NODE,
	EM_CFG_VERBOSE,
	EM_CFG_COUNT
};

struct em_setting {
	const char *env; /* environment variable, or NULL */
	const char *key; /* file key and flag name (without "--"), or NULL */
	unsigned where;  /* EM_CFG_ENV | EM_CFG_CLIENT | EM_CFG_NODE | EM_CFG_POW2 */
	enum em_cfg_type type;
	const char *def;     /* the default as text, or NULL (none / required) */
	int64_t min, max;    /* INT, SIZE, DURATION */
	const char *choices; /* ENUM: "a|b|c"; DURATION: the unit, "us" or "ms" */
	const char *help;    /* one line */
};

extern const struct em_setting em_settings[EM_CFG_COUNT];

/* A checked value: num for INT/SIZE/DURATION/BOOL/ENUM, str for STR. */
struct em_cfg_val {
	int64_t num;
	const char *str;
};

/* Checks `text` against setting id's rule into *out (out->str points into
 * text). 0, or -EINVAL after a log line naming `who` (the variable, the
 * flag or "file:line") and the value. */
int em_cfg_parse(enum em_cfg_id id, const char *who, const char *text, struct em_cfg_val *out);

/* The setting from the environment if set (and not empty), else its
 * default. 0 (*out filled; the default's num/str when unset), or -EINVAL
 * with a log line when the variable holds a value the table refuses. */
int em_cfg_env(enum em_cfg_id id, struct em_cfg_val *out);

/* Conveniences over em_cfg_env for the common shapes. */
int em_cfg_env_num(enum em_cfg_id id, int64_t *out);
int em_cfg_env_str(enum em_cfg_id id, const char **out);
/* Whether the environment sets the variable (to something not empty). */
bool em_cfg_env_isset(enum em_cfg_id id);

/* Checks every variable of the table that the environment sets: 0, or
 * -EINVAL after one log line per bad one. For programs that hand their
 * environment on (the CLI, `ethermem run`), so a typo stops them at once. */
int em_cfg_check_env(void);

/* The row whose key (client or node, by `where`) is `key`, or -1. */
int em_cfg_by_key(const char *key, unsigned where);

/* The OmniXtend channel's tuning from the table, for the fields of o the
 * caller left 0, and the test-only fault spec (NULL when unset). 0 or
 * -EINVAL for a bad value. */
struct ox_opts;
int em_cfg_ox_opts(struct ox_opts *o, const char **faults);

/* Prints the rows that carry any bit of `where`: a text listing, or
 * (markdown) README's table. */
void em_cfg_list(FILE *f, unsigned where, bool markdown);

#endif
