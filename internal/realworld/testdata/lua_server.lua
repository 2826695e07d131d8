-- lua_server.lua: a long-running Lua interpreter that compiles and runs the
-- chunks it is sent, the way an application embedding Lua for user scripts
-- does. One chunk per line on stdin; one answer per line on stdout:
--   "= ok V1 V2 ..."    the chunk compiled and returned V1, V2, ...
--   "= error MESSAGE"   it did not compile, or raised an error
io.stdout:setvbuf("line")
for line in io.stdin:lines() do
  local f, err = load(line, "=request")
  if not f then
    io.write("= error ", err, "\n")
  else
    local r = table.pack(pcall(f))
    if r[1] then
      local out = {}
      for i = 2, r.n do out[#out + 1] = tostring(r[i]) end
      io.write("= ok ", table.concat(out, " "), "\n")
    else
      io.write("= error ", tostring(r[2]), "\n")
    end
  end
end
