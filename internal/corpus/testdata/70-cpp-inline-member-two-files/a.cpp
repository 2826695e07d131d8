#include "counter.h"

int use_a(Counter &c)
{
	return c.bump(1);
}
