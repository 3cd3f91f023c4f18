// Lets the Jazzer.js 2.1.0 native addon link against stock libFuzzer (Debian's libclang-rt-*-dev)
// instead of the patched libFuzzer its own build downloads. Built by test/fuzz/addon.ts.
//
// The patched libFuzzer differs in three ways that matter here:
//  - a callback result of -2 makes it leave the fuzzing loop; stock libFuzzer ignores it;
//  - it reports its crash callback through __jazzer_set_death_callback, stock through
//    __sanitizer_set_death_callback;
//  - it has *_with_pc variants of two tracing hooks that take the call site as an argument.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

namespace fuzzer {
typedef int (*UserCallback)(const uint8_t *Data, size_t Size);
int FuzzerDriver(int *argc, char ***argv, UserCallback Callback);
} // namespace fuzzer

namespace {
// The addon's callback returns this once the JS side has printed a finding and written the crash-*
// file. Stock libFuzzer would carry on fuzzing with a JS runtime that has given up on the run.
constexpr int kReturnExit = -2;
// The Jazzer.js CLI's exit code for a finding.
constexpr int kExitFinding = 77;

fuzzer::UserCallback gCallback = nullptr;

int StopOnFinding(const uint8_t *data, size_t size) {
  int result = gCallback(data, size);
  if (result == kReturnExit) {
    fflush(stdout);
    fflush(stderr);
    _Exit(kExitFinding);
  }
  return result;
}
} // namespace

namespace fuzzer {
// Stock libFuzzer never returns from FuzzerDriver: it exits 0 when -max_total_time or -runs is
// reached, and non-zero (writing timeout-*, oom-* or crash-*) on its own findings.
int CompatFuzzerDriver(int *argc, char ***argv, UserCallback callback) {
  gCallback = callback;
  return FuzzerDriver(argc, argv, StopOnFinding);
}
} // namespace fuzzer

extern "C" {
void __sanitizer_cov_trace_const_cmp8(uint64_t arg1, uint64_t arg2);
void __sanitizer_cov_trace_pc_indir(uintptr_t callee);
void __jazzer_set_death_callback(void (*callback)());

// Stock libFuzzer takes the call site from its own return address. The call site only feeds
// -use_value_profile (off by default); the table of recent comparisons, which is what lets the
// mutator learn magic numbers and lengths from the JS code's comparisons, does not use it.
void __sanitizer_cov_trace_const_cmp8_with_pc(uintptr_t, uint64_t arg1, uint64_t arg2) {
  __sanitizer_cov_trace_const_cmp8(arg1, arg2);
}
void __sanitizer_cov_trace_pc_indir_with_pc(void *, uintptr_t callee) {
  __sanitizer_cov_trace_pc_indir(callee);
}

void __sanitizer_set_death_callback(void (*callback)()) { __jazzer_set_death_callback(callback); }
}
