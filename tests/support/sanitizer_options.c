// Default options of AddressSanitizer and UndefinedBehaviorSanitizer, linked into every program of
// a sanitizer tree (-DSTEERCHAT_SANITIZE=address,undefined; see the top CMakeLists.txt), so the
// server and the tests behave the same under ctest and by hand. ASAN_OPTIONS / UBSAN_OPTIONS in
// the environment override any of them.
//
// Any finding ends the process with a report on stderr: ASan halts on its first error, UBSan is
// compiled with -fno-sanitize-recover=all. The tests fail on such a report even when it comes
// from a forked worker the master respawns (tests/e2e/lib/server.mjs, tests/integration/harness).
// LeakSanitizer runs at exit() of the master and the test programs; workers and forked test
// children leave with _exit(), which skips it (a worker's memory is reclaimed with its process).

// The sanitizer runtimes look these weak hooks up at start-up.
const char* __asan_default_options(void);
const char* __ubsan_default_options(void);

const char* __asan_default_options(void) {
    return "halt_on_error=1:detect_leaks=1:check_initialization_order=1:strict_init_order=1:"
           "print_summary=1";
}

const char* __ubsan_default_options(void) {
    return "halt_on_error=1:print_stacktrace=1:print_summary=1";
}
