/*
 * The pool seam when libethermem support is not linked: no backend, so
 * `--weights pool` and `--stream-from pool` say so and exit 2.  A build with
 * pool support compiles llm_pool_em.c, defining llm_pool_backend as a real
 * table (see struct llm_pool_ops in llm.h), in place of this one; the
 * CMakeLists.txt here picks that file up when it exists.
 */
#include "llm/llm.h"

#include <stddef.h>

const struct llm_pool_ops *const llm_pool_backend = NULL;
