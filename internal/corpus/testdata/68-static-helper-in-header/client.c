#include <stdio.h>
#include "check.h"

int server_port_ok(int p);

int client_port_ok(int p)
{
	return valid_port(p);
}

static volatile int p = 1000;

void corpus_step(void)
{
	printf("server=%d client=%d\n", server_port_ok(p), client_port_ok(p));
}
