#include <cstdio>
#include "account.h"

static Account acct(100);

extern "C" void corpus_step(void)
{
	bool ok = acct.withdraw(30);
	std::printf("ok=%d balance=%ld\n", ok, acct.balance());
}
