#include "check.h"

int server_port_ok(int p)
{
	return valid_port(p);
}
