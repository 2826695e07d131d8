/* Linked -static-pie: libc is inside the module, and its string functions
 * are IFUNCs the program calls through its own IRELATIVE GOT slots. */
#include <string.h>

static const char *volatile given = "ab/c";

__attribute__((noipa)) long valid_name(void)
{
#ifdef FIX
	if (strlen((const char *)given) > 3)
		return 0;
#endif
	return strchr((const char *)given, '\n') == NULL;
}

struct entry {
	const char *name;
	long (*fn)(void);
};
const struct entry entries[] = {{"valid_name", valid_name}, {0, 0}};
