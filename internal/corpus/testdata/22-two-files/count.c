#include "proto.h"

int count_fields(const char *s)
{
	int n = 1;

	for (; *s; s++)
		if (*s == ',')
			n++;
	return n;
}
