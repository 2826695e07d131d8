// Account::withdraw is an ordinary member function, _ZN7Account8withdrawEl
// in the symbol table; the fix forbids overdrafts.
#include "account.h"

bool Account::withdraw(long amount)
{
	balance_ -= amount;
	return true;
}
