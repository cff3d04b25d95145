/*
 * huge.c - whether a mapping goes on explicit 2 MiB pages.
 *
 * Units of 2 MiB go on explicit huge pages when the system has enough free
 * (emm_huge_fits): one page-table entry per fault and one page freed per
 * eviction, where 512 small pages per UFFDIO_COPY held a scan near 3 GB/s.
 * The engine only uses pages the system already has; reserving them
 * (vm.nr_hugepages) is left to the administrator or a tool.
 */
#include "map/engine.h"

#include <fcntl.h>
#include <stdlib.h>

uint64_t emm_huge_free(void)
{
	char b[32] = { 0 };
	int fd = open("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
		      O_RDONLY | O_CLOEXEC);
	ssize_t n = fd >= 0 ? read(fd, b, sizeof(b) - 1) : -1;

	if (fd >= 0)
		close(fd);
	return n > 0 ? strtoull(b, NULL, 10) * EMM_HUGE : 0;
}

/* Whether a mapping with 2 MiB units goes on explicit huge pages: one page
 * per unit, so a fault maps 2 MiB with one page-table entry and eviction
 * frees one page. Only when the system has reserved enough of them that
 * every huge mapping can fill its share of the budget: a hugetlb fault that
 * finds none left can only fail. EM_MAP_NOHUGE (ETHERMEM_MAP_HUGE=0) turns it off. Under
 * emm_g.mu; on yes, *maplen is rounded up to whole huge pages. */
bool emm_huge_fits(const struct emm_map_params *p, size_t *maplen)
{
	size_t len = (*maplen + EMM_HUGE - 1) & ~(EMM_HUGE - 1);
	uint64_t held = 0, need = len;

	if (p->unit != EMM_HUGE || (p->flags & EM_MAP_NOHUGE) ||
	    (!(p->flags & EM_MAP_READONLY) && !emm_g.huge_wp))
		return false;
	/* pages held by our other huge mappings count as available, and all
	 * of them together never hold more than the budget */
	for (int i = 0; i < EMM_MAX_MAPS; i++) {
		struct emm_mapping *o = atomic_load(&emm_g.maps[i]);

		if (!o || !o->huge)
			continue;
		need += o->maplen;
		for (size_t k = 0; k < o->nunits; k++) {
			uint32_t s = atomic_load(&o->u[k].st);

			held += s != EMM_EMPTY && s != EMM_FAILED && s != EMM_GONE ? EMM_HUGE : 0;
		}
	}
	/* resident may overrun the budget by the fetches in flight when
	 * eviction found nothing to drop: a unit per slot covers it */
	if (need > emm_g.budget + EMM_SLOTS * EMM_HUGE)
		need = emm_g.budget + EMM_SLOTS * EMM_HUGE;
	if (emm_huge_free() + held < need)
		return false;
	*maplen = len;
	return true;
}
