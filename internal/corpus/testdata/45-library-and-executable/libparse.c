/* The fix touches the library (parse_size) and the executable that uses
 * it (corpus_step): one bundle carries a module for each, and both switch
 * together. */
int parse_size(const char *s)
{
	int n = 0;

	while (*s >= '0' && *s <= '9')
		n = n * 10 + (*s++ - '0');
	return n;
}
