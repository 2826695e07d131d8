#include "limits.h"

int lib_ok(int v)
{
	return within(v);
}
