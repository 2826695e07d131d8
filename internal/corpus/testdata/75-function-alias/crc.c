/* crc_update has a second global name, crc_update_v1, at the same address
 * (an alias kept for old callers): one function, one site, both names run
 * the fix. */
#include <stdio.h>

__attribute__((noinline)) unsigned crc_update(unsigned crc, unsigned char b)
{
	crc ^= b;
	for (int i = 0; i < 8; i++)
		crc = crc & 1 ? (crc >> 1) ^ 0xEDB88320u : crc >> 1;
	return crc;
}

unsigned crc_update_v1(unsigned crc, unsigned char b) __attribute__((alias("crc_update")));

static volatile unsigned char byte = 'a';

void corpus_step(void)
{
	printf("crc=%08x v1=%08x\n", crc_update(0, byte), crc_update_v1(0, byte));
}
