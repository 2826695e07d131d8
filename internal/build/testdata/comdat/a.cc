#include "tmpl.h"
long a_weigh() { return weigh<long>(10) + 1; }
