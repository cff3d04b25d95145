/*
 * transport.c - the registry of data-path transports.
 *
 * src/lib/CMakeLists.txt lists the transports, one em_transport() line
 * each, and writes that list into transports.h in the build tree as
 * EM_TRANSPORT(name) lines. This file turns the list into a table, so a
 * transport registers itself by being listed, the core looks it up by the
 * name a user gave (or the public enum's value), and no core file names
 * one. A table built at compile time, rather than constructors, keeps
 * every transport in the static library too: the linker would drop an
 * object nothing refers to.
 */
#include <stddef.h>
#include <string.h>

#include "lib/internal.h"

#define EM_TRANSPORT(n) extern const struct em_transport_ops em_transport_##n;
#include "transports.h"
#undef EM_TRANSPORT

#define EM_TRANSPORT(n) &em_transport_##n,
static const struct em_transport_ops *const table[] = {
#include "transports.h"
};
#undef EM_TRANSPORT

const struct em_transport_ops *em_transport_find(const char *name)
{
	for (size_t i = 0; name && i < sizeof(table) / sizeof(table[0]); i++)
		if (!strcmp(table[i]->name, name))
			return table[i];
	return NULL;
}

const struct em_transport_ops *em_transport_by_id(int id)
{
	for (size_t i = 0; id && i < sizeof(table) / sizeof(table[0]); i++)
		if (table[i]->id == id)
			return table[i];
	return NULL;
}
