/* A fix to functions using thread-local variables the program already has:
 * one defined here, a static one, and one defined in another file. */
__thread long request_id;
static __thread long served;
extern __thread long shared_total;

__attribute__((noipa)) long next_request(void)
{
#ifdef FIX
	request_id += 10;
	served += 2;
	shared_total += 100;
#else
	request_id++;
	served++;
	shared_total++;
#endif
	return request_id * 1000000 + served * 1000 + shared_total;
}
