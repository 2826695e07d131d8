#include <stdio.h>

int parse_size(const char *s);

static const char *volatile input = "70000k";

void corpus_step(void)
{
	int n = parse_size(input);

	printf("size=%d\n", n);
}
