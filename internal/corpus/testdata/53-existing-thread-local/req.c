/* The changed function uses a thread-local variable the program already
 * has (the request id of the current thread); no TLS is added. */
#include <stdio.h>

__thread int request_id;

__attribute__((noinline)) int next_request(void)
{
	request_id++;
	return request_id;
}

void corpus_step(void)
{
	printf("request=%d\n", next_request());
}
