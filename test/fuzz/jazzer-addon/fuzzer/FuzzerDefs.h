// Stand-in for libFuzzer's internal header <fuzzer/FuzzerDefs.h>, which the Jazzer.js addon includes
// but Debian's libclang-rt-*-dev does not ship. It declares only what the addon uses, and routes the
// addon's call of the driver through compat.cpp (see there for why).
#pragma once
#include <cstddef>
#include <cstdint>

namespace fuzzer {
typedef int (*UserCallback)(const uint8_t *Data, size_t Size);
int CompatFuzzerDriver(int *argc, char ***argv, UserCallback Callback);
} // namespace fuzzer

#define FuzzerDriver CompatFuzzerDriver
