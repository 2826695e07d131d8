/* lua_driver: a long-running program using the Lua library. It runs each
 * line of stdin as a Lua chunk in one state and answers with one line:
 * "= VALUE" (what the chunk returns) or "= error: MESSAGE". */
#include <stdio.h>
#include <string.h>
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

int main(void)
{
	lua_State *L = luaL_newstate();
	char line[4096];

	luaL_openlibs(L);
	while (fgets(line, sizeof line, stdin)) {
		line[strcspn(line, "\n")] = 0;
		if (luaL_dostring(L, line) != LUA_OK)
			printf("= error: %s\n", lua_tostring(L, -1));
		else
			printf("= %s\n", lua_isnoneornil(L, -1) ? "nil" : luaL_tolstring(L, -1, NULL));
		lua_settop(L, 0);
		fflush(stdout);
	}
	return 0;
}
