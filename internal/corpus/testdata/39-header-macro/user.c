#include <string.h>
#include "limits.h"

int user_ok(const char *name)
{
	return strlen(name) < MAX_NAME;
}
