/*
 * version.c - em_version(), the library's half of the version check (the
 * header's EM_VERSION_* macros are the other half). CMake takes the
 * project's version from those macros, so the soname, ethermem.pc and this
 * call cannot disagree with the header they were built with. The struct
 * size tripwires of common/abi.h are compiled here too, so that every
 * build of the library trips them, whatever else includes the header.
 */
#include <stddef.h>

#include "common/abi.h"
#include "ethermem.h"

const char *em_version(unsigned *major, unsigned *minor, unsigned *patch)
{
	if (major)
		*major = EM_VERSION_MAJOR;
	if (minor)
		*minor = EM_VERSION_MINOR;
	if (patch)
		*patch = EM_VERSION_PATCH;
	return EM_VERSION_STRING;
}
