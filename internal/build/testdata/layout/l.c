/* A struct the program keeps on the heap: the fix widens a field, as
 * sqlite's CVE-2025-6965 fix widens AggInfo's i16 counters to int. No
 * variable's size shows it; the DWARF of the objects does. */
#include <stdlib.h>

typedef struct Agg {
	int id;
#ifdef FIX
	int count;
#else
	short count;
#endif
	short limit;
	char *name;
} Agg;

static Agg *volatile current;

__attribute__((noipa)) long bump(void)
{
	if (!current)
		current = calloc(1, sizeof(Agg));
	current->count++;
	return current->count + current->limit;
}

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {{"bump", bump}, {0, 0}};
