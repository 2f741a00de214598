# Writes OUT, a C++ file defining `std::string_view NAME()` that returns the bytes of IN:
#   cmake -DIN=docs/openapi.yaml -DOUT=openapi_yaml.cpp -DNAME=kiln::app::openapi_yaml -P embed.cmake
# (a build step, so that the binary serves the document the repository has).
file(READ "${IN}" content HEX)
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "'\\\\x\\1'," bytes "${content}")
string(REGEX REPLACE "::[^:]*$" "" ns "${NAME}")
string(REGEX REPLACE "^.*::" "" fn "${NAME}")
file(WRITE "${OUT}.tmp" "// Generated from ${IN} by cmake/embed.cmake; do not edit.\n#include <string_view>\nnamespace ${ns} {\nnamespace {\nconstexpr char kBytes[] = {${bytes}};\n}\nstd::string_view ${fn}() { return {kBytes, sizeof kBytes}; }\n}  // namespace ${ns}\n")
file(COPY_FILE "${OUT}.tmp" "${OUT}" ONLY_IF_DIFFERENT)
