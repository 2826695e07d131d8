/* A library built with -fvisibility=hidden: only kv_get is exported; the
 * helper and the table are hidden, so they are reached PC-relative, with
 * no GOT or PLT. */
#define API __attribute__((visibility("default")))

int kv_hits;
static const char *const keys[] = {"alpha", "beta", "gamma"};

__attribute__((noinline)) int kv_index(const char *k)
{
	for (int i = 0; i < 3; i++) {
		const char *a = keys[i], *b = k;

		while (*a && *a == *b)
			a++, b++;
		if (*a == *b)
			return i;
	}
	return -1;
}

API int kv_get(const char *k)
{
	kv_hits++;
	return kv_index(k) * 10 + kv_hits;
}
