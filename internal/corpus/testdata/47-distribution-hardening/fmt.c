/* Built with a distribution's hardening flags: the stack protector (a
 * canary read from %fs:0x28 and __stack_chk_fail), _FORTIFY_SOURCE
 * (__snprintf_chk, __memcpy_chk) and -fcf-protection (endbr64). */
#include <stdio.h>
#include <string.h>

__attribute__((noinline)) void format_user(const char *name, int uid)
{
	char buf[32];

	if (strlen(name) > 64)
		return;
	snprintf(buf, sizeof buf, "%s:%d", name, uid);
	puts(buf);
}

static const char *volatile name = "alice-with-a-very-long-name";
static volatile int uid = 1000;

void corpus_step(void)
{
	format_user(name, uid);
}
